"""The real-patient recipe: map scoring, the intensity baseline, the denoising U-Net, patient folds and cards."""

import numpy as np
import pytest
import torch

from ae4ad_core.analysis import analyze
from ae4ad_core.calibration import calibrate
from ae4ad_core.crossval import (
    REAL_PREPROCESSING,
    choose_scoring,
    label_free_latent_dim,
    leave_one_patient_out,
)
from ae4ad_core.denoising import coarse_noise
from ae4ad_core.errors import ModelCardError
from ae4ad_core.evaluation import level_matched_auroc
from ae4ad_core.models import build_model, fuse_for_inference
from ae4ad_core.postprocess import (
    PAPER_SCORING,
    MapScoring,
    aggregate_scores,
    brain_mask,
    finish_maps,
    residual_map,
)
from ae4ad_core.registry import LoadedModel, ModelCard, list_models
from ae4ad_core.training import TrainConfig, model_inputs, train


def _brains(n=12, seed=0, lesion=False):
    """z-scored-looking slices: a disc of brain (z ~ N(0, 1)) on a background at -3.5; optional bright blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 26**2
    out, masks = [], []
    for _ in range(n):
        img = np.where(disc, rng.normal(0, 0.5, (64, 64)), -3.5).astype(np.float32)
        m = np.zeros((64, 64), bool)
        if lesion:
            cy, cx = rng.integers(20, 44, 2)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
            img[m] += 3.0
        out.append(img)
        masks.append(m)
    return np.stack(out), np.stack(masks), np.repeat(disc[None], n, 0)


def test_map_scoring_residuals_and_brain_restriction():
    x = torch.full((1, 1, 8, 8), -1.0)
    x[..., 2:6, 2:6] = 0.5
    recon = torch.zeros_like(x)
    recon[..., 2:6, 2:6] = 0.7  # brighter reconstruction: negative residual inside
    assert residual_map(x, recon, "positive")[0, 2:6, 2:6].eq(0).all()
    assert residual_map(x, recon, "squared")[0, 3, 3] == pytest.approx(0.04)
    assert residual_map(x, recon, "absolute")[0, 3, 3] == pytest.approx(0.2)
    rule = MapScoring(residual="absolute", brain_only=True)
    maps = finish_maps(residual_map(x, recon, "absolute"), x, rule)
    assert maps[0, 0, 0] == 0 and maps[0, 3, 3] > 0  # background residual 1.0 is removed
    assert brain_mask(x, 1)[0].sum() == 4  # a 4 x 4 brain eroded by 1 px
    q = aggregate_scores(maps, x, MapScoring(brain_only=True, aggregate="quantile", quantile=1.0))
    assert float(q[0]) == pytest.approx(0.2)


def test_map_scoring_round_trips_and_rejects_nonsense():
    rule = MapScoring(residual="positive", smooth_sigma=1.0, brain_only=True, brain_erosion=2,
                      aggregate="quantile", quantile=0.99)
    assert MapScoring.from_dict(rule.to_dict()) == rule
    assert MapScoring.from_dict(None) == PAPER_SCORING and MapScoring.from_dict({}) == PAPER_SCORING
    assert "positive residual" in rule.describe() and "99.0% quantile" in rule.describe()
    with pytest.raises(ModelCardError, match="Did you mean"):
        MapScoring(residual="positiv")
    with pytest.raises(ModelCardError, match="Unknown scoring fields"):
        MapScoring.from_dict({"sign": "+"})


def test_intensity_baseline_trains_calibrates_and_scores():
    normals, _, _ = _brains(14, seed=1)
    config = TrainConfig(kind="intensity", image_size=64)
    result = train(config, normals, preprocessing=REAL_PREPROCESSING, device="cpu", progress=False)
    model = result.model
    assert model.level.item() == pytest.approx(float(np.median(model_inputs(normals, REAL_PREPROCESSING)[
        model_inputs(normals, REAL_PREPROCESSING) > -0.98])), abs=1e-5)
    rule = MapScoring(residual="positive", smooth_sigma=1.0, brain_only=True, aggregate="quantile", quantile=0.99)
    inference = fuse_for_inference(model)
    cal = calibrate(inference, model_inputs(normals, REAL_PREPROCESSING), scoring=rule)
    assert set(cal.modes) == {"reconstruction", "mse"}  # the paper's protocol kept beside the product's
    cal_fields, latent_fields = cal.to_card_fields()
    card = ModelCard(name="t-intensity", architecture=config.model_config(), preprocessing=REAL_PREPROCESSING,
                     calibration=cal_fields, latent=latent_fields, scoring={"rule": rule.to_dict()})
    loaded = LoadedModel(card=card, model=model, inference=inference, device=torch.device("cpu"))
    lesions, masks, _ = _brains(4, seed=2, lesion=True)
    res = analyze(np.concatenate([normals[:4], lesions]), loaded)
    assert res.scores[4:].min() > res.scores[:4].max()  # bright blobs stand out
    assert res.above_threshold[4:].all()
    hot = res.map_in_input_space(5) > res.pixel_threshold
    assert (hot & masks[1]).sum() > 0.5 * masks[1].sum() and not hot[0, 0]
    assert res.latent.shape == (8, 2)


def test_denoising_unet_shapes_and_coarse_noise():
    config = TrainConfig(kind="dae", channels=(4, 8, 16), image_size=32).model_config()
    model = build_model(config).eval()
    out = model(torch.zeros(2, 1, 32, 32))
    assert out.reconstruction.shape == (2, 1, 32, 32) and out.latent.shape == (2, 16)
    noise = coarse_noise((3, 1, 32, 32), std=0.2, resolution=4, generator=torch.Generator().manual_seed(0))
    assert noise.shape == (3, 1, 32, 32) and 0.05 < float(noise.std()) < 0.3
    assert float((noise[..., 1:, :] - noise[..., :-1, :]).abs().mean()) < 0.05  # smooth, not pixel noise
    fused = fuse_for_inference(model)
    torch.testing.assert_close(fused(torch.ones(1, 1, 32, 32)).reconstruction,
                               model(torch.ones(1, 1, 32, 32)).reconstruction)


def test_folds_split_by_patient():
    folds = leave_one_patient_out(["p3", "p4", "p5", "p6"])
    assert [f.test for f in folds] == ["p3", "p4", "p5", "p6"]
    for f in folds:
        assert f.test not in f.train and f.calibration not in f.train and f.calibration != f.test
        assert len(f.train) == 2
    with pytest.raises(ValueError, match=">= 3 patients"):
        leave_one_patient_out(["a", "b"])


def test_level_matched_auroc_ignores_a_score_that_only_follows_anatomy():
    rng = np.random.default_rng(0)
    level = rng.uniform(0, 1, 400)
    labels = (level > 0.5).astype(int)  # abnormal slices are the big ones, as in BraTS
    flip = rng.uniform(size=400) < 0.2
    labels[flip] = 1 - labels[flip]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, level) > 0.7  # plain AUROC is fooled by anatomy
    assert level_matched_auroc(labels, level, level, bins=10) < 0.62  # matched on level: near chance


def test_choose_scoring_prefers_the_sign_that_fits_bright_lesions():
    normals, _, _ = _brains(10, seed=3)
    lesions, masks, brain = _brains(6, seed=4, lesion=True)
    model = train(TrainConfig(kind="intensity", image_size=64), normals, preprocessing=REAL_PREPROCESSING,
                  device="cpu", progress=False).model
    from types import SimpleNamespace

    val = SimpleNamespace(images=np.concatenate([normals[:4], lesions]),
                          masks=np.concatenate([np.zeros_like(masks[:4]), masks]),
                          brain=np.concatenate([brain[:4], brain]), labels=np.array([0] * 4 + [1] * 6))
    rule, choice = choose_scoring(fuse_for_inference(model), val)
    assert rule.residual in ("positive", "absolute") and rule.brain_only
    assert choice["validation_pixel_ap"] > 0.8 and choice["validation_slice_auroc"] == 1.0


def test_label_free_latent_dim_uses_validation_loss_only():
    rows = [{"kind": "ae", "fold": f, "latent_dim": d, "final_val_loss": loss}
            for f in ("a", "b") for d, loss in ((2, 0.2), (8, 0.105), (32, 0.1))]
    out = label_free_latent_dim(rows)
    assert out["chosen"] == 8 and out["per_fold"] == {"a": 8, "b": 8}


def test_real_patient_cards_carry_data_sequence_and_licence():
    real = [c for c in list_models() if c.training_data.get("source", "").startswith("BraTS")]
    assert real, "the real-patient zoo (flair-*, t1c-*) ships in assets/models"
    for card in real:
        assert card.training_data["sequence"] in ("flair", "t1c")
        assert "CC BY-NC-SA 3.0" in card.training_data["licence"] and "CC BY-NC-SA 3.0" in card.description
        assert card.training_data["demo_patient"] not in card.training_data["train_subjects"]
        assert card.training_data["val_subjects"][0] not in card.training_data["train_subjects"]
        assert card.scoring.get("rule") and "validation" in card.scoring["chosen_by"]
    kinds = {c.kind for c in real}
    assert "intensity" in kinds  # the baseline is listed like every model


def test_intensity_prior_keeps_only_brighter_than_normal_pixels():
    from ae4ad_core.postprocess import fit_intensity_prior

    normals = torch.full((4, 1, 8, 8), -1.0)
    normals[..., 2:6, 2:6] = torch.linspace(-0.5, 0.5, 16).view(4, 4)
    level = fit_intensity_prior(normals, percentile=50.0)
    assert level == pytest.approx(float(torch.linspace(-0.5, 0.5, 16).median()), abs=0.07)
    x = normals[:1].clone()
    rule = MapScoring(residual="absolute", intensity_prior=level)
    maps = finish_maps(torch.ones(1, 8, 8), x, rule)
    assert torch.equal(maps[0] > 0, x[0, 0] > level)
    assert "brighter than normal brain" in rule.describe()
    assert MapScoring.from_dict(rule.to_dict()) == rule
