"""The shipped brain extraction U-Net: its weights load, it runs, its input normalisation is the training one,
and its Dice on the two heads it never trained on (Colin27 vs ch2bet, the TCGA T1c vs its mask) is at least
the measured figure in :data:`ae4ad_core.brain_extraction.MEASURED` minus a margin of 0.01.

Real data are skipped when missing, except under CI (``CI=true``), where missing data fail the test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _heads import CH2, CH2_BET, MARGIN, TCGA_MASK, TCGA_T1C, require

from ae4ad_core import brain_net, brain_net_training
from ae4ad_core.brain_extraction import (
    MEASURED,
    dice_coefficient,
    extract_brain_from_image,
    measure_extraction,
)
from ae4ad_core.brain_net import (
    CARD_FILE,
    NET_METHOD,
    WEIGHTS_FILE,
    BrainNetConfig,
    brain_net_dir,
    extract_brain_net,
    load_brain_net,
    normalise_slices,
)
from ae4ad_core.errors import DataError
from ae4ad_core.io import Image, read_image


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _phantom(n: int = 3, size: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices of an ellipsoidal head: grey brain with darker ventricles, dark skull, bright scalp, air."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - size / 2
    pixels = np.zeros((n, size, size), np.float32)
    brain = np.zeros((n, size, size), bool)
    for k in range(n):
        shrink = 0.8 + 0.2 * np.sin(np.pi * (k + 0.5) / n)
        r = np.hypot(yy / (0.34 * size * shrink), xx / (0.28 * size * shrink))
        image = np.where(r < 1.3, 200.0, 0.0)
        image = np.where(r < 1.12, 20.0, image)
        image = np.where(r < 1.0, 100.0, image)
        image = np.where((np.hypot(yy / 12, xx / 7) < 1) & (r < 1), 40.0, image)
        pixels[k] = np.clip(image + rng.normal(0, 5, image.shape) * (r < 1.3), 0, None)
        brain[k] = r < 1.0
    return pixels, brain


def test_weights_load_from_the_card_with_safetensors():
    folder = brain_net_dir()
    card = json.loads((folder / CARD_FILE).read_text())
    model, config = load_brain_net()
    assert config == BrainNetConfig.from_dict(card["config"])
    assert (folder / WEIGHTS_FILE).stat().st_size < 5_000_000
    assert not model.training
    n_params = sum(p.numel() for p in model.parameters())
    assert str(n_params) in card["architecture"]


def test_net_outlines_a_synthetic_head():
    pixels, truth = _phantom()
    result = extract_brain_net(pixels, spacing=(1.2, 1.2), slice_thickness=5.0)
    assert result.mask.shape == truth.shape and result.method == NET_METHOD
    assert dice_coefficient(result.mask, truth) > 0.85
    one = extract_brain_net(pixels[1])
    assert one.mask.shape == (1, *truth.shape[1:])


def test_image_route_and_bad_inputs():
    pixels, truth = _phantom(2)
    image = Image(pixels=pixels, name="phantom.nii.gz", format="nifti", metadata={}, spacing=(1.2, 1.2))
    assert extract_brain_from_image(image, method="net").method == NET_METHOD
    with pytest.raises(DataError, match="constant"):
        extract_brain_net(np.zeros((2, 16, 16), np.float32))
    with pytest.raises(DataError, match="needs an"):
        extract_brain_net(np.zeros((2, 2, 2, 2), np.float32))


def test_normalise_slices_maps_each_slice_to_unit_range():
    rng = np.random.default_rng(1)
    x = np.stack([rng.uniform(0, 10, (32, 32)), rng.uniform(500, 3000, (32, 32)), np.full((32, 32), 7.0)])
    y = normalise_slices(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    for k in range(2):
        assert y[k].min() == 0.0 and y[k].max() == 1.0
        np.testing.assert_allclose(normalise_slices(x[k] * 3 + 11), y[k], atol=1e-5)
    assert not y[2].any()


def test_training_uses_the_inference_normalisation(monkeypatch):
    """The training batches go through brain_net.prepare_slices, hence the same normalise_slices."""
    calls = []

    def spy(slices):
        calls.append(np.shape(slices))
        return normalise_slices(slices)

    monkeypatch.setattr(brain_net, "normalise_slices", spy)
    assert brain_net_training.prepare_slices is brain_net.prepare_slices
    labels = np.zeros((48, 48, 48), np.uint8)
    zz, yy, xx = np.mgrid[:48, :48, :48] - 24
    r = np.sqrt(zz**2 + yy**2 + xx**2)
    labels[r < 22] = brain_net_training._SKIN
    labels[r < 18] = brain_net_training._DIPLOE
    labels[r < 15] = 1
    labels[r < 6] = 2
    head = brain_net_training.Head(
        "sphere",
        labels,
        np.full(3, 24.0),
        np.array([[2.0] * 3, [46.0] * 3]),
        np.array([[9.0] * 3, [39.0] * 3]),
    )
    x, y = brain_net_training._batch([head], np.random.default_rng(0), 32, 3)
    assert len(calls) == 3 and tuple(x.shape) == (3, 1, 32, 32) == tuple(y.shape)
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(y.max()) <= 1


def test_colin27_against_ch2bet():
    require(CH2, CH2_BET, hint="apt-get install -y mricron-data")
    result = measure_extraction(CH2, CH2_BET, method="net")
    assert result["dice"] >= MEASURED["net_colin27_ch2_dice"] - MARGIN, result


def test_tcga_t1c_against_its_brain_mask():
    require(TCGA_T1C, TCGA_MASK, hint="the shared data folder ../shared/data/tcga-head")
    result = measure_extraction(TCGA_T1C, TCGA_MASK, method="net")
    assert result["dice"] >= MEASURED["net_tcga_fg_6692_t1c_dice"] - MARGIN, result
    image = read_image(TCGA_T1C, frames=[13])
    truth = read_image(TCGA_MASK, frames=[13]).pixels > 0
    mask = extract_brain_net(image.pixels[0], spacing=image.spacing).mask
    assert dice_coefficient(mask, truth) >= MEASURED["net_tcga_fg_6692_t1c_slice13_2d_dice"] - MARGIN


def test_the_loaded_net_is_kept_by_content(tmp_path):
    """Same files: the same loaded net. Changed files in the same folder (a retrained net): loaded anew."""
    import shutil

    folder = tmp_path / "extractor"
    shutil.copytree(brain_net_dir(), folder)
    first = load_brain_net(str(folder))
    assert load_brain_net(str(folder))[0] is first[0]
    card = json.loads((folder / CARD_FILE).read_text())
    card["config"]["threshold"] = 0.25
    (folder / CARD_FILE).write_text(json.dumps(card))
    again = load_brain_net(str(folder))
    assert again[0] is not first[0] and again[1].threshold == 0.25
