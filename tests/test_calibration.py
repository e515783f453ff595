"""Calibration on normal images (thresholds = stated quantiles, fixed display scale, modes per model kind) and
the one path from slices to verdicts, :func:`ae4ad_core.analysis.analyze`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import synthetic_slices

from ae4ad_core.analysis import analyze
from ae4ad_core.calibration import Calibration, calibrate, score_all
from ae4ad_core.preprocess import prepare_slices
from ae4ad_core.scoring import FOREGROUND_LEVEL

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def normals(vae) -> torch.Tensor:
    x, _ = prepare_slices(list(synthetic_slices(200, seed=21)), vae.card.preprocessing)
    return x


@pytest.fixture(scope="module")
def vae_calibration(vae, normals) -> Calibration:
    return calibrate(vae.inference, normals, fpr=0.1, pixel_fpr=0.02)


@pytest.mark.parametrize("mode", ["reconstruction", "kl", "combined"])
def test_thresholds_are_the_stated_quantiles_of_normal_scores(vae, normals, vae_calibration, mode):
    cal = vae_calibration
    mc = cal.modes[mode]
    res = score_all(vae.inference, normals, mode=mode, kl_gradient_scale=cal.kl_gradient_scale)
    n = len(normals)
    assert abs(float(np.mean(res["scores"] > mc.threshold)) - cal.fpr) <= 1.0 / n
    foreground = (normals[:, 0] > FOREGROUND_LEVEL).numpy()
    pixel_values = res["maps"][foreground]
    assert abs(float(np.mean(pixel_values > mc.pixel_threshold)) - cal.pixel_fpr) <= 1e-3
    assert mc.display_max >= mc.pixel_threshold > 0
    assert float(np.mean(pixel_values > mc.display_max)) <= 1e-3 + 1e-4
    np.testing.assert_allclose(mc.normal_scores, np.sort(res["scores"]), rtol=1e-6)
    assert mc.percentile(mc.threshold)[0] == pytest.approx(100 * (1 - cal.fpr), abs=100.0 / n)


def test_vae_gets_three_modes_and_a_kl_gradient_scale(vae_calibration, normals):
    cal = vae_calibration
    assert list(cal.modes) == ["reconstruction", "kl", "combined"]
    assert cal.kl_gradient_scale is not None and cal.kl_gradient_scale > 0
    assert cal.n_images == len(normals)
    assert cal.latent.mean_kl_nats is not None and cal.latent.mean_kl_nats >= 0
    assert cal.latent.dim == 4


def test_autoencoder_gets_only_the_reconstruction_mode(ae, normals):
    cal = calibrate(ae.inference, normals[:50])
    assert list(cal.modes) == ["reconstruction"]
    assert cal.kl_gradient_scale is None
    assert cal.latent.mean_kl_nats is None


def test_calibration_round_trips_through_the_card(vae, vae_calibration):
    cal_fields, latent_fields = vae_calibration.to_card_fields()
    card = vae.card.replace(
        calibration=json.loads(json.dumps(cal_fields)), latent=json.loads(json.dumps(latent_fields))
    )
    back = Calibration.from_card(card)
    assert back.fpr == vae_calibration.fpr and back.kl_gradient_scale == vae_calibration.kl_gradient_scale
    for mode, mc in vae_calibration.modes.items():
        assert back.modes[mode].threshold == mc.threshold
        np.testing.assert_array_equal(back.modes[mode].normal_scores, mc.normal_scores)


def test_calibration_refuses_bad_rates_and_too_few_images(vae, normals):
    with pytest.raises(ValueError, match="fpr and pixel_fpr must be in"):
        calibrate(vae.inference, normals, fpr=0.0)
    with pytest.raises(ValueError, match="at least 10 normal images"):
        calibrate(vae.inference, normals[:5])


@pytest.mark.parametrize("mode", ["reconstruction", "combined"])
def test_analyze_slices_of_different_sizes(vae, mode):
    rng = np.random.default_rng(0)
    base = synthetic_slices(3, size=48, seed=30)
    slices = [base[0][:40, :], base[1], np.pad(base[2], ((0, 20), (5, 0)))]
    slices[1] = slices[1] + rng.normal(0, 0.01, slices[1].shape).astype(np.float32)
    result = analyze(slices, vae, mode=mode)
    assert len(result) == 3 and result.inputs.shape == (3, 32, 32)
    for i, s in enumerate(slices):
        amap = result.map_in_input_space(i)
        assert amap.shape == s.shape and np.isfinite(amap).all() and amap.min() >= 0
        assert result.reconstruction_in_input_space(i).shape == s.shape
        sentence = result.verdict(i)
        assert sentence.startswith(("Above the normal range", "Within the normal range"))
        assert "percentile of normal validation images" in sentence
        assert (sentence.startswith("Above")) == bool(result.scores[i] > result.threshold)
    records = json.loads(json.dumps(result.records()))
    assert [r["slice"] for r in records] == [0, 1, 2]
    assert {"score", "threshold", "above_threshold", "latent_surprisal_nats", "kl_nats"} <= set(records[0])
    payload = json.loads(result.to_json())
    assert payload["mode"] == mode and len(payload["slices"]) == 3


def test_analyze_selected_slices_and_bad_index(vae):
    volume = synthetic_slices(4, seed=31)
    result = analyze(volume, vae, slice_indices=[3, 1])
    assert result.slice_indices == [3, 1]
    single = analyze(volume[3:4], vae)
    np.testing.assert_allclose(result.scores[0], single.scores[0], rtol=1e-5)
    with pytest.raises(IndexError, match="Slice 7 does not exist"):
        analyze(volume, vae, slice_indices=[7])
