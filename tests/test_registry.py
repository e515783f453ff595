"""Model registry: safetensors + JSON card round trips, refusal of unsafe or inconsistent models (a pickle is
never unpickled), name look-up with suggestions, and atomic saves."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from ae4ad_core.errors import Ae4adError, ModelCardError, UnknownModelError
from ae4ad_core.registry import (
    CARD_FILE,
    WEIGHTS_FILE,
    find_model_dir,
    list_models,
    load_card,
    load_model,
    save_model,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def root(tmp_path, tiny_ae_dir, tiny_vae_dir) -> Path:
    """A private copy of the tiny models' registry root (tests may break it)."""
    out = tmp_path / "models"
    out.mkdir()
    for src in (tiny_ae_dir, tiny_vae_dir):
        shutil.copytree(src, out / src.name)
    return out


def _x(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _edit_card(folder: Path, **changes) -> None:
    data = json.loads((folder / CARD_FILE).read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    (folder / CARD_FILE).write_text(json.dumps(data))


def test_save_and_load_round_trip_gives_the_same_outputs(root, tmp_path):
    first = load_model("tiny-vae-d4", roots=[root], device="cpu")
    card = first.card.replace(name="copy-vae")
    folder = save_model(first.model, card, tmp_path / "other")
    again = load_model(folder, device="cpu")
    assert again.card.to_dict() == card.to_dict()
    assert again.path == folder and again.device == torch.device("cpu")
    with torch.no_grad():
        for attr in ("model", "inference"):
            a, b = getattr(first, attr)(_x()), getattr(again, attr)(_x())
            assert torch.equal(a.reconstruction, b.reconstruction) and torch.equal(a.mu, b.mu)
    assert not again.model.training and not any(p.requires_grad for p in again.model.parameters())


@pytest.mark.parametrize("keep_trainable", [True, False])
def test_a_loaded_model_owns_its_weights_when_the_file_is_written_over(root, keep_trainable):
    """The weights are served from a mapping of the file; a loaded model keeps copies, so writing over the file
    (a model retrained under the same name) cannot change or truncate the model already in memory."""
    loaded = load_model("tiny-vae-d4", roots=[root], device="cpu", keep_trainable=keep_trainable)
    with torch.no_grad():
        before = loaded.inference(_x()).reconstruction.clone()
    path = root / "tiny-vae-d4" / WEIGHTS_FILE
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # the same file (inode), overwritten in place, then cut short
        fh.write(bytes(size))
        fh.truncate(size // 2)
    with torch.no_grad():
        assert torch.equal(loaded.inference(_x()).reconstruction, before)
        if keep_trainable:
            assert torch.isfinite(sum(p.sum() for p in loaded.model.parameters()))


def test_float16_storage_halves_the_file_and_keeps_outputs_close(root, tmp_path):
    from safetensors import safe_open

    first = load_model("tiny-ae-d4", roots=[root], device="cpu")
    folder = save_model(first.model, first.card.replace(name="half", weights_dtype="float16"), tmp_path)
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} >= {torch.float16}
        assert torch.float32 not in {f.get_tensor(k).dtype for k in f.keys()}
    size32 = (root / "tiny-ae-d4" / WEIGHTS_FILE).stat().st_size
    assert (folder / WEIGHTS_FILE).stat().st_size < 0.6 * size32
    half = load_model(folder, device="cpu")
    assert next(half.model.parameters()).dtype == torch.float32  # computed in float32
    with torch.no_grad():
        torch.testing.assert_close(
            half.model(_x()).reconstruction, first.model(_x()).reconstruction, atol=2e-2, rtol=2e-2
        )


class _Marker:
    """Unpickling this object creates ``path`` (what an attacker's payload would do, harmlessly)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("payload", ["raw-pickle", "torch-save"])
def test_a_pickled_weights_file_is_refused_and_never_unpickled(root, tmp_path, payload):
    marker = tmp_path / "pwned"
    weights = root / "tiny-ae-d4" / WEIGHTS_FILE
    if payload == "raw-pickle":
        weights.write_bytes(pickle.dumps({"encoder.0.weight": _Marker(marker)}))
    else:
        torch.save({"state": _Marker(marker)}, weights)
    # torch.save does not unpickle, but make sure the check below means something
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelCardError, match="not a valid safetensors file.*never loaded"):
        load_model("tiny-ae-d4", roots=[root], device="cpu")
    assert not marker.exists()
    with open(weights, "rb") as fh:  # the payload itself is live: unpickling it WOULD create the marker
        pickle.load(fh) if payload == "raw-pickle" else torch.load(fh, weights_only=False)
    assert marker.exists()


def test_missing_weights_are_refused(root):
    (root / "tiny-ae-d4" / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelCardError, match="no model.safetensors"):
        load_model("tiny-ae-d4", roots=[root])


def test_weights_of_the_wrong_shape_are_refused(root):
    _edit_card(root / "tiny-ae-d4", architecture={"latent_dim": 8})
    with pytest.raises(
        ModelCardError,
        match=r"tensor '\w+_latent\.\d\.weight' has shape \(\d+, \d+\), the card's architecture needs",
    ):
        load_model("tiny-ae-d4", roots=[root])


def test_weights_of_another_architecture_are_refused(root):
    _edit_card(root / "tiny-ae-d4", architecture={"kind": "vae"})  # same keys, but to_latent outputs 2d
    with pytest.raises(ModelCardError, match="has shape"):
        load_model("tiny-ae-d4", roots=[root])
    _edit_card(root / "tiny-vae-d4", architecture={"kind": "rdae"})  # rdae has extra density tensors
    with pytest.raises(ModelCardError, match="do not match the card's architecture.*missing.*density"):
        load_model("tiny-vae-d4", roots=[root])


def test_nan_weights_are_refused(root):
    from safetensors.torch import load_file, save_file

    path = root / "tiny-ae-d4" / WEIGHTS_FILE
    state = load_file(str(path))
    state["decoder.0.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(path))
    with pytest.raises(ModelCardError, match="'decoder.0.weight' contains NaN"):
        load_model("tiny-ae-d4", roots=[root])


def test_unknown_architecture_kind_is_refused_naming_the_valid_ones(root):
    _edit_card(root / "tiny-ae-d4", architecture={"kind": "transformer"})
    with pytest.raises(ModelCardError, match="tiny-ae-d4/card.json.*'transformer'.*ae, vae"):
        load_model("tiny-ae-d4", roots=[root])


def test_unsupported_card_version_is_refused(root):
    _edit_card(root / "tiny-ae-d4", version=99)
    with pytest.raises(ModelCardError, match="card version 99 is not supported.*version 1"):
        load_model("tiny-ae-d4", roots=[root])


def test_card_that_is_not_json_is_refused(root):
    (root / "tiny-ae-d4" / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        load_card(root / "tiny-ae-d4")


def test_missing_card_is_refused(root):
    folder = root / "tiny-ae-d4"
    (folder / CARD_FILE).unlink()
    with pytest.raises(ModelCardError, match="no card.json"):
        load_card(folder)
    with pytest.raises(ModelCardError, match="weights but no card.json"):
        load_model(folder, roots=[root])


def test_unknown_name_lists_available_models_and_suggests_the_closest(root):
    with pytest.raises(
        UnknownModelError, match="available: tiny-ae-d4, tiny-vae-d4. Did you mean 'tiny-vae-d4'"
    ):
        load_model("tiny-vea-d4", roots=[root])
    with pytest.raises(Ae4adError, match="available: none"):
        find_model_dir("anything", roots=[root / "empty"])


def test_list_models_skips_broken_folders(root):
    broken = root / "broken"
    broken.mkdir()
    (broken / CARD_FILE).write_text('{"version": 1}')
    (root / "no-card").mkdir()
    (root / "zz-old").mkdir()
    (root / "zz-old" / CARD_FILE).write_text(json.dumps({"version": 0, "name": "zz-old"}))
    assert [c.name for c in list_models([root, root / "missing-root"])] == ["tiny-ae-d4", "tiny-vae-d4"]


def test_save_refuses_a_card_that_does_not_describe_the_model(root, tmp_path):
    loaded = load_model("tiny-ae-d4", roots=[root])
    from ae4ad_core.models import ModelConfig

    card = loaded.card.replace(architecture=ModelConfig(kind="ae", latent_dim=5, image_size=32, hidden=128))
    with pytest.raises(ModelCardError, match="does not match the model"):
        save_model(loaded.model, card, tmp_path)


def test_interrupted_save_leaves_no_model_and_no_temporary_folder(root, tmp_path, monkeypatch):
    import safetensors.torch

    loaded = load_model("tiny-ae-d4", roots=[root])

    def failing_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file)
    target = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        save_model(loaded.model, loaded.card.replace(name="new"), target)
    assert list(target.iterdir()) == []
    # overwriting an existing model: a failed save keeps the old one intact
    with pytest.raises(OSError, match="disk full"):
        save_model(loaded.model, loaded.card, root)
    assert sorted(p.name for p in root.iterdir()) == ["tiny-ae-d4", "tiny-vae-d4"]
    monkeypatch.undo()
    again = load_model("tiny-ae-d4", roots=[root])
    assert again.card.to_dict() == loaded.card.to_dict()


def test_shared_models_are_loaded_once_and_reloaded_when_replaced(root):
    import os

    from ae4ad_core.registry import load_shared_model

    folder = root / "tiny-ae-d4"
    first = load_shared_model(folder, device="cpu")
    assert load_shared_model(folder, device="cpu") is first  # every page and session gets the same copy
    stat = (folder / CARD_FILE).stat()
    os.utime(folder / CARD_FILE, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the model was replaced
    again = load_shared_model(folder, device="cpu")
    assert again is not first and again.card.name == first.card.name
    assert first.model is None and first.inference is not None  # scoring needs the inference copy only
