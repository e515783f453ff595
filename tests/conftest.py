"""Shared fixtures: tiny trained, calibrated and registered models (an AE and a VAE, d = 4, 32 px, bottleneck width 128) and an rng.

The models are trained for a few dozen Adam steps on smooth synthetic blobs: not for accuracy, only so that
their weights and BatchNorm statistics are non-trivial. Building both takes a few seconds on a CPU.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_SIZE = 32
TINY_LATENT = 4
TINY_HIDDEN = 128


def synthetic_slices(n: int, *, size: int = TINY_SIZE, seed: int = 0) -> np.ndarray:
    """``n`` smooth "anatomy" slices ``(n, size, size)`` float32 in [0, 1]: a soft ellipse of random size,
    position and brightness with a faint texture, on a black background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        a, b = rng.uniform(0.5, 0.8, 2)
        cy, cx = rng.uniform(-0.1, 0.1, 2)
        r = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2
        body = 1.0 / (1.0 + np.exp((r - 1.0) * 12.0))
        texture = 0.08 * np.sin(rng.uniform(3, 6) * xx + rng.uniform(0, 6)) * np.cos(rng.uniform(3, 6) * yy)
        out[i] = np.clip(body * (rng.uniform(0.55, 0.75) + texture), 0.0, 1.0)
    return out


def add_lesions(images: np.ndarray, *, seed: int = 0, radius: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs (intensity + 0.35) inside the body of each image; returns ``(images, masks uint8)``."""
    rng = np.random.default_rng(seed)
    n, h, w = images.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out, masks = images.copy(), np.zeros(images.shape, np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * (h, w)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        out[i] = np.clip(out[i] + 0.35 * disc, 0.0, 1.0)
        masks[i] = disc
    return out, masks


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: tiny models gain nothing from more, and on a busy machine OpenMP threads
    competing with other processes slow training down by an order of magnitude."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_tiny(kind: str, *, steps: int = 40, seed: int = 0):
    from ae4ad_core.models import ModelConfig, build_model, kl_divergence

    torch.manual_seed(seed)
    model = build_model(
        ModelConfig(kind=kind, latent_dim=TINY_LATENT, image_size=TINY_SIZE, hidden=TINY_HIDDEN)
    )
    x = torch.from_numpy(synthetic_slices(64, seed=seed + 1))[:, None] * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        batch = x[(step * 16) % 64 : (step * 16) % 64 + 16]
        out = model(batch)
        loss = (out.reconstruction - batch).pow(2).mean()
        if out.logvar is not None:
            loss = loss + 0.005 * kl_divergence(out.mu, out.logvar).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def make_tiny_model(root: Path, kind: str, *, name: str | None = None) -> Path:
    """Train, calibrate (on 40 synthetic normals) and save a tiny model under ``root``; returns its folder."""
    from ae4ad_core.calibration import calibrate
    from ae4ad_core.models import fuse_for_inference
    from ae4ad_core.preprocess import PreprocessConfig, prepare_slices
    from ae4ad_core.registry import ModelCard, save_model

    with one_thread():
        model = _train_tiny(kind)
        prep = PreprocessConfig(size=TINY_SIZE, intensity="window", center=0.5, width=1.0)
        x_val, _ = prepare_slices(list(synthetic_slices(40, seed=7)), prep)
        cal = calibrate(fuse_for_inference(model), x_val)
    cal_fields, latent_fields = cal.to_card_fields()
    card = ModelCard(
        name=name or f"tiny-{kind}-d{TINY_LATENT}",
        architecture=model.config,
        preprocessing=prep,
        description=f"tiny {kind.upper()} for tests",
        calibration=cal_fields,
        latent=latent_fields,
        provenance={"command": "tests/conftest.py"},
    )
    return save_model(model, card, root)


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory) -> Path:
    """A registry root holding ``tiny-ae-d4`` and ``tiny-vae-d4``."""
    root = tmp_path_factory.mktemp("models")
    make_tiny_model(root, "ae")
    make_tiny_model(root, "vae")
    return root


@pytest.fixture(scope="session")
def tiny_ae_dir(tiny_models_root) -> Path:
    return tiny_models_root / f"tiny-ae-d{TINY_LATENT}"


@pytest.fixture(scope="session")
def tiny_vae_dir(tiny_models_root) -> Path:
    return tiny_models_root / f"tiny-vae-d{TINY_LATENT}"


@pytest.fixture(scope="module")
def vae(tiny_vae_dir):
    """The tiny VAE, loaded on the CPU (read-only: shared by a test module)."""
    from ae4ad_core.registry import load_model

    return load_model(tiny_vae_dir, device="cpu")


@pytest.fixture(scope="module")
def ae(tiny_ae_dir):
    """The tiny AE, loaded on the CPU (read-only: shared by a test module)."""
    from ae4ad_core.registry import load_model

    return load_model(tiny_ae_dir, device="cpu")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def single_thread():
    """Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``: torch on one thread for a module
    of small-tensor tests (see :func:`one_thread`)."""
    with one_thread():
        yield


SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real patient MRI); skips without it, except under ``CI=true``, where it must exist."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{SHARED_DATA} is missing: tests on real patient data must run in CI.")
        pytest.skip(f"needs {SHARED_DATA} (real patient data, not shipped)")
    return SHARED_DATA
