"""Helpers for app tests: tiny fixture models, a Streamlit server on a free port, and Debian's chromium.

Reusable by every page's tests::

    models = make_fixture_models(tmp_path / "home")          # AE4AD_HOME with an AE and a VAE
    with streamlit_server(env={"AE4AD_HOME": str(tmp_path / "home")}) as server:
        with chromium_page() as page:
            page.goto(server.url)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("AE4AD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
FIXTURE_AE = "fixture-ae-d8"
FIXTURE_VAE = "fixture-vae-d8"


# ------------------------------------------------------------------------------------------- fixture models


def synthetic_brains(n: int, *, size: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` smooth brain-like slices ``(n, size, size)`` in [0, 1]: an ellipse with a darker core and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        a, b = rng.uniform(0.6, 0.85), rng.uniform(0.7, 0.9)
        cx, cy = rng.uniform(-0.05, 0.05, 2)
        r = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2
        img = np.where(r < 1, 0.7 + 0.1 * np.cos(6 * r), 0.0)
        img = np.where(r < 0.15, 0.35, img)
        img = img + (r < 1) * rng.normal(0, 0.02, (size, size))
        out[i] = np.clip(img, 0, 1)
    return out


def synthetic_test_split(n: int = 16, *, size: int = 64) -> SimpleNamespace:
    """Half normal slices, half with a bright disc (mask and ``extra["lesion_kind"]`` = "hyperintense")."""
    images = synthetic_brains(n, size=size, seed=3)
    labels = np.array([0, 1] * (n // 2))
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in np.flatnonzero(labels):
        cy, cx, r = size // 2 + (i % 3) * 4, size // 2 - 8, 4 + i % 4
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images[i][masks[i]] = 1.0
    kinds = ["hyperintense" if label else "none" for label in labels]
    return SimpleNamespace(images=images, labels=labels, masks=masks, extra={"lesion_kind": kinds})


def synthetic_dataset(*, n_train: int = 48, n_val: int = 24, size: int = 64) -> SimpleNamespace:
    """A dataset with the fields :func:`ae4ad_core.training.train_and_register` reads."""
    train = SimpleNamespace(
        images=synthetic_brains(n_train, size=size, seed=1),
        labels=np.zeros(n_train, int),
        subjects=np.array(["s1"] * n_train),
    )
    val = SimpleNamespace(
        images=synthetic_brains(n_val, size=size, seed=2),
        labels=np.zeros(n_val, int),
        subjects=np.array(["s2"] * n_val),
    )
    return SimpleNamespace(
        train=train, val=val, test=synthetic_test_split(size=size), description="synthetic test ellipses"
    )


def make_fixture_models(home: Path, *, epochs: int = 1) -> dict[str, str]:
    """Train, calibrate and register a tiny AE and VAE (d = 8, 64 px) under ``home/models``.

    Returns ``{"ae": name, "vae": name}``. Takes a few seconds on a CPU.
    """
    from ae4ad_core.training import TrainConfig, train_and_register

    root = Path(home) / "models"
    data = synthetic_dataset()
    names = {"ae": FIXTURE_AE, "vae": FIXTURE_VAE}
    for kind, name in names.items():
        if (root / name / "card.json").is_file():
            continue
        cfg = TrainConfig(
            kind=kind,
            latent_dim=8,
            image_size=64,
            epochs=epochs,
            batch_size=16,
            val_every=1,
            augment=False,
            amp=False,
        )
        train_and_register(
            cfg,
            data,
            name=name,
            root=root,
            device="cpu",
            progress=False,
            description=f"fixture {kind.upper()} for tests",
        )
    return names


# -------------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``streamlit run`` process."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        return self.process.pid


def start_server(
    app: str | Path = "app.py", *, env: dict | None = None, timeout: float = 60.0, log: Path | None = None
) -> Server:
    """Start ``python -m streamlit run app`` on a free port and wait for ``/_stcore/health``.

    Health 200 does not mean the script ran: give the first page expectation a generous timeout.
    """
    port = free_port()
    log = log or (ARTIFACTS / f"streamlit-{port}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    raise TimeoutError(f"streamlit did not answer on port {port} within {timeout:.0f} s")


def stop_server(server: Server, timeout: float = 10.0) -> None:
    """Stop the server's process group (started with ``start_new_session``), by its PID."""
    if server.process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.process.wait(timeout)


@contextlib.contextmanager
def streamlit_server(app: str | Path = "app.py", **kwargs):
    server = start_server(app, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


def peak_rss_bytes(pid: int) -> int | None:
    """Peak resident memory (VmHWM) of a process from /proc, or None where /proc is not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# -------------------------------------------------------------------------------------------- the browser


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


@contextlib.contextmanager
def chromium_page(*, width: int = 1500, height: int = 1100):
    """A Playwright page in Debian's chromium (never ``playwright install``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            yield context.new_page()
        finally:
            browser.close()


def wait_for_app(page, timeout_ms: int = 60_000, *, start_ms: int = 0) -> None:
    """Wait until the Streamlit script has finished a run (no 'Running...' status widget).

    With ``start_ms`` > 0, first wait up to that long for a run to start (right after an interaction, the
    status widget may not be there yet).
    """
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    if start_ms:
        with contextlib.suppress(Exception):
            page.wait_for_selector('[data-testid="stStatusWidget"]', state="attached", timeout=start_ms)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')""", timeout=timeout_ms
    )


def fake_crossval_report(path: Path, *, patients=("p3", "p4", "p5", "p6"), dims=(1, 2, 4, 8, 16)) -> Path:
    """Write a cross-validation report (:func:`ae4ad_core.crossval.crossval_report` of made-up rows) to
    ``path``: FLAIR, the intensity baseline and an AE sweep over ``dims``, leave-one-patient-out folds."""
    import json

    from ae4ad_core.crossval import crossval_report

    rng = np.random.default_rng(0)
    rows = []
    for k, fold in enumerate(patients):
        for name, kind, d in [("intensity", "intensity", 16)] + [(f"ae-d{d}", "ae", d) for d in dims]:
            good = 0.85 if kind == "intensity" else 0.5 + 0.04 * np.log2(d) - 0.01 * k
            metrics = {mode: {key: float(np.clip(good * scale + rng.normal(0, 0.02), 0, 1)) for key in (
                "pixel_ap", "best_dice", "calibrated_dice", "image_auroc", "image_ap", "level_matched_auroc")}
                for mode, scale in (("reconstruction", 1.0), ("mse", 0.8))}
            rows.append({"model": name, "sequence": "flair", "fold": fold, "kind": kind, "latent_dim": d,
                         "final_val_loss": None if kind == "intensity" else 0.05 + 0.2 / d**2,
                         "entropy_gaussian_nats": 2.0 * d, "entropy_knn_nats": 1.5 * d, "effective_dim": d / 2,
                         "metrics": metrics})
    path.write_text(json.dumps(crossval_report(rows)))
    return path
