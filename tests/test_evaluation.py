"""Evaluation metrics (hand-computed cases), evaluate() on a tiny model, saving results, and the figures."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import add_lesions, synthetic_slices

import ae4ad_core.calibration
from ae4ad_core.errors import DataError, UnsupportedModeError
from ae4ad_core.evaluation import (
    MAX_CURVE_POINTS,
    EvaluationResult,
    _pooled_pixel_metrics,
    dice_curve,
    evaluate,
    evaluate_all_modes,
    mask_to_model_space,
    save_evaluation,
)
from ae4ad_core.plotting import (
    figure_to_png,
    latent_scatter_figure,
    overlay_figure,
    pixel_pr_figure,
    roc_pr_figures,
    score_histogram_figure,
    spectrum_figure,
)
from ae4ad_core.preprocess import SliceGeometry
from ae4ad_core.registry import LoadedModel
from ae4ad_core.render import THRESHOLD_COLOUR, TRUTH_COLOUR, overlay_rgb

pytestmark = pytest.mark.usefixtures("single_thread")

PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------- hand-computed metrics


def test_dice_curve_on_a_hand_computed_case():
    labels = np.array([1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    dice, thresholds = dice_curve(scores, labels)
    # t=0.9: TP1 FP0 FN2 -> 2/4; t=0.8: 4/5; t=0.7: 4/6; t=0.2: TP3 FP1 -> 6/7; t=0.1: 6/8
    expected = {0.9: 0.5, 0.8: 0.8, 0.7: 4 / 6, 0.2: 6 / 7, 0.1: 0.75}
    assert {float(t): float(d) for t, d in zip(thresholds, dice, strict=True)} == pytest.approx(expected)
    assert float(thresholds[np.argmax(dice)]) == 0.2 and float(dice.max()) == pytest.approx(6 / 7)


def test_dice_curve_equals_brute_force_and_pooled_metrics_equal_sklearn(rng):
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = rng.random(3000) < 0.1
    scores = np.round(rng.random(3000) + 0.5 * labels, 2)  # ties on purpose
    dice, thresholds = dice_curve(scores, labels)
    for t in thresholds[::7]:
        pred = scores >= t
        brute = 2 * np.sum(pred & labels) / (pred.sum() + labels.sum())
        assert dice[thresholds == t][0] == pytest.approx(brute)
    auroc, ap, dice2, thr2, curves = _pooled_pixel_metrics(scores, labels)
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    np.testing.assert_array_equal(dice2, dice)
    assert all(len(v) <= MAX_CURVE_POINTS for v in curves.values())
    with pytest.raises(ValueError, match="at least one positive"):
        dice_curve(scores, np.zeros_like(labels))


def _hand_card(loaded, *, threshold: float, pixel_threshold: float):
    cal = json.loads(json.dumps(loaded.card.calibration))
    cal["modes"]["reconstruction"].update(threshold=threshold, pixel_threshold=pixel_threshold)
    return LoadedModel(
        card=loaded.card.replace(calibration=cal),
        model=loaded.model,
        inference=loaded.inference,
        device=loaded.device,
    )


def test_evaluate_on_a_hand_computed_case(vae, monkeypatch):
    """4 images with known scores and maps (scoring replaced by a stub), 32 x 32 = model size.

    Image scores: normals 0.1, 0.4; abnormals 0.35, 0.8 -> AUROC = 3/4 pairs ordered = 0.75;
    ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-) -> AP = 0.5 * 1 + 0.5 * 2/3.
    Pixels: 8 lesion pixels (2 x 2 in each abnormal image); map 0.9 on 6 of them, 0 on 2, and 0.5 on 4 pixels
    of normal image 0 (false positives). Best Dice at t = 0.9: 2 * 6 / (6 + 8) = 6/7.
    """
    n, s = 4, 32
    masks = np.zeros((n, s, s), np.uint8)
    masks[2, 10:12, 10:12] = 255
    masks[3, 20:22, 5:7] = 1
    maps = np.zeros((n, s, s), np.float32)
    maps[2, 10:12, 10:12] = 0.9
    maps[3, 20, 5:7] = 0.9
    maps[0, 0:2, 0:2] = 0.5
    scores = np.array([0.1, 0.4, 0.35, 0.8], np.float32)

    def stub_score_all(model, x, *, mode, kl_gradient_scale=None, scoring=None, batch_size=256):
        assert x.shape == (n, 1, s, s)
        return {"maps": maps, "scores": scores, "mu": np.zeros((n, 4), np.float32), "kl": None, "rec": None}

    monkeypatch.setattr(ae4ad_core.calibration, "score_all", stub_score_all)
    test = SimpleNamespace(images=synthetic_slices(n, seed=40), labels=np.array([0, 0, 1, 1]), masks=masks)
    loaded = _hand_card(vae, threshold=0.5, pixel_threshold=0.7)
    res = evaluate(loaded, test, resolution="model")
    assert (res.n_normal, res.n_abnormal) == (2, 2)
    assert res.image_auroc == pytest.approx(0.75)
    assert res.image_ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    n_neg = n * s * s - 8
    assert res.pixel_auroc == pytest.approx(6 / 8 + 2 / 8 * 0.5 * (n_neg - 4) / n_neg)
    assert res.pixel_ap == pytest.approx(6 / 8 * 1.0 + 2 / 8 * 8 / (n * s * s))
    assert res.best_dice == pytest.approx(6 / 7) and res.best_dice_threshold == pytest.approx(0.9)
    assert res.calibrated_dice == pytest.approx(6 / 7)  # 0.7 separates the 0.9 pixels from the 0.5 ones
    assert (res.calibrated_image_fpr, res.calibrated_image_tpr) == (0.0, 0.5)  # only 0.8 is above 0.5
    assert res.anatomy_correlation is None  # two normal images: no correlation
    lower = evaluate(_hand_card(vae, threshold=0.05, pixel_threshold=0.3), test, resolution="model")
    assert lower.calibrated_dice == pytest.approx(12 / 18)  # 0.5 pixels now count: 6 TP, 4 FP
    assert (lower.calibrated_image_fpr, lower.calibrated_image_tpr) == (1.0, 1.0)


def test_mask_to_model_space_uses_area_fractions_and_the_crop_geometry():
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 1
    geom = SliceGeometry(shape=(64, 64), crop=(0, 0, 64, 64), side=64)
    out = mask_to_model_space(mask, geom, 32)
    assert out.dtype == bool and out.shape == (32, 32)
    assert out[:16].all() and not out[16:].any()
    single = np.zeros((64, 64), np.uint8)
    single[10, 10] = 1  # covers a quarter of one model pixel
    assert not mask_to_model_space(single, geom, 32).any()
    single[10:12, 10] = 1  # half of it
    assert mask_to_model_space(single, geom, 32)[5, 5] and mask_to_model_space(single, geom, 32).sum() == 1
    # a 20 x 40 slice is padded to 40 x 40 (centred, 10 rows above) before the resize to 20
    wide = np.zeros((20, 40), np.uint8)
    wide[0:2, 0:2] = 1
    geom = SliceGeometry(shape=(20, 40), crop=(0, 0, 20, 40), side=40)
    out = mask_to_model_space(wide, geom, 20)
    assert np.argwhere(out).tolist() == [[5, 0]]
    with pytest.raises(DataError, match="does not match its image"):
        mask_to_model_space(np.zeros((10, 10)), geom, 20)


# ----------------------------------------------------------------------------------- evaluate on a tiny model


@pytest.fixture(scope="module")
def test_set() -> SimpleNamespace:
    """20 normal + 20 abnormal 40 x 48 slices (not the model's size) with masks and foreground masks."""
    normals = synthetic_slices(20, size=48, seed=50)[:, 4:44, :]
    lesioned, masks = add_lesions(synthetic_slices(20, size=48, seed=51)[:, 4:44, :], seed=52, radius=5)
    images = np.concatenate([normals, lesioned])
    return SimpleNamespace(
        images=images,
        labels=np.r_[np.zeros(20), np.ones(20)].astype(np.uint8),
        masks=np.concatenate([np.zeros_like(masks), masks]),
        brain=(images > 0.1).astype(np.uint8),
        subjects=[f"s{i}" for i in range(40)],
        names=[f"img{i}" for i in range(40)],
        extra={},
    )


def _check_sane(res: EvaluationResult, mode: str) -> None:
    assert res.mode == mode and (res.n_normal, res.n_abnormal) == (20, 20)
    for v in (
        res.image_auroc,
        res.image_ap,
        res.pixel_auroc,
        res.pixel_ap,
        res.best_dice,
        res.calibrated_dice,
        res.calibrated_image_fpr,
        res.calibrated_image_tpr,
    ):
        assert 0.0 <= v <= 1.0
    assert res.best_dice >= res.calibrated_dice  # the test-chosen threshold is an upper bound
    assert res.anatomy_correlation is None or -1.0 <= res.anatomy_correlation <= 1.0
    for group in ("image", "pixel"):
        curves = res.curves[group]
        assert 2 <= len(curves["fpr"]) <= MAX_CURVE_POINTS and len(curves["fpr"]) == len(curves["tpr"])
        assert curves["fpr"][0] == 0.0 and curves["fpr"][-1] == 1.0 and curves["recall"][-1] == 0.0
    json.dumps(res.to_dict(), allow_nan=False)


@pytest.fixture(scope="module")
def vae_results(vae, test_set) -> dict[str, EvaluationResult]:
    return evaluate_all_modes(vae, test_set)


def test_evaluate_all_modes_on_the_tiny_vae(vae, test_set, vae_results):
    results = vae_results
    assert list(results) == ["reconstruction", "kl", "combined"]
    for mode, res in results.items():
        _check_sane(res, mode)
    # bright lesions: the reconstruction error sees them even in a barely trained model
    assert results["reconstruction"].image_auroc > 0.7
    single = evaluate(vae, test_set, mode="combined", batch_size=7)
    assert single.image_auroc == pytest.approx(results["combined"].image_auroc, abs=1e-6)


def test_evaluate_without_masks_has_no_pixel_metrics(ae, test_set):
    no_masks = SimpleNamespace(images=test_set.images, labels=test_set.labels, masks=None, brain=None)
    results = evaluate_all_modes(ae, no_masks)
    assert list(results) == ["reconstruction"]
    res = results["reconstruction"]
    assert res.pixel_auroc is res.pixel_ap is res.best_dice is res.best_dice_threshold is res.calibrated_dice
    assert res.pixel_auroc is None and "pixel" not in res.curves
    assert res.to_dict()["pixel_ap"] is None


def test_evaluate_refuses_bad_test_sets_and_modes(ae, test_set):
    normals_only = SimpleNamespace(images=test_set.images[:20], labels=test_set.labels[:20], masks=None)
    with pytest.raises(DataError, match="All 20 test images are normal"):
        evaluate(ae, normals_only)
    with pytest.raises(DataError, match="40 images but 3 labels"):
        evaluate(ae, SimpleNamespace(images=test_set.images, labels=[0, 1, 0], masks=None))
    with pytest.raises(DataError, match="40 images but 2 masks"):
        evaluate(
            ae, SimpleNamespace(images=test_set.images, labels=test_set.labels, masks=test_set.masks[:2])
        )
    with pytest.raises(UnsupportedModeError, match="'kl' is not available"):
        evaluate(ae, test_set, mode="kl")


def test_save_evaluation_writes_json_and_pngs(vae_results, tmp_path):
    results = vae_results
    paths = save_evaluation(results, tmp_path / "eval")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "results.json",
            "roc.png",
            "pr.png",
            "pixel_pr_reconstruction.png",
            "pixel_pr_kl.png",
            "pixel_pr_combined.png",
        ]
    )
    data = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(data) == set(results)
    assert data["kl"]["image_auroc"] == pytest.approx(results["kl"].image_auroc)
    assert len(data["reconstruction"]["curves"]["image"]["fpr"]) <= MAX_CURVE_POINTS
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes().startswith(PNG)


# --------------------------------------------------------------------------------------------------- figures


def test_overlay_rgb_fixed_scale_outlines_and_opacity():
    image = np.tile(np.linspace(0, 100, 40, dtype=np.float32), (30, 1))
    amap = np.zeros((30, 40), np.float32)
    amap[5:15, 5:15] = 2.0  # beyond vmax: clipped to the top colour
    outline = amap > 1.0
    truth = np.zeros_like(outline)
    truth[20:25, 20:30] = True
    rgb = overlay_rgb(image, amap, vmax=1.0, alpha=1.0, outline=outline, truth=truth)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[5, 5]) == THRESHOLD_COLOUR and tuple(rgb[20, 25]) == TRUTH_COLOUR
    from matplotlib import colormaps

    top = np.round(np.array(colormaps["inferno"](1.0)[:3]) * 255)
    np.testing.assert_array_equal(rgb[10, 10], top)  # interior: opaque inferno top
    plain = overlay_rgb(image, amap, vmax=1.0, alpha=0.0)
    assert np.all(plain[..., 0] == plain[..., 1]) and np.all(plain[..., 1] == plain[..., 2])  # gray only
    doubled = overlay_rgb(image, amap, vmax=4.0, alpha=1.0)
    assert not np.array_equal(doubled[10, 10], rgb[10, 10])  # the scale is fixed, not per image
    windowed = overlay_rgb(image, amap, vmax=1.0, alpha=0.0, window=(50.0, 20.0))
    assert windowed[0, 0, 0] == 0 and windowed[0, -1, 0] == 255
    with pytest.raises(ValueError, match="same shape"):
        overlay_rgb(image, amap[:10], vmax=1.0)


def test_overlay_figure_has_a_fixed_colour_bar_and_contours():
    image = np.random.default_rng(0).random((32, 32))
    amap = np.zeros((32, 32))
    amap[8:16, 8:16] = 0.4
    truth = np.zeros((32, 32), bool)
    truth[10:20, 10:20] = True
    fig = overlay_figure(image, amap, vmax=3.0, outline=amap > 0.2, truth=truth)
    bar_axes = [ax for ax in fig.axes if ax is not fig.axes[0]]
    assert len(bar_axes) == 1
    assert bar_axes[0].get_ylim() == pytest.approx((0.0, 3.0))
    colours = {tuple(np.round(line.get_color(), 3)) for line in fig.axes[0].get_lines()}
    assert tuple(np.round(np.array(THRESHOLD_COLOUR) / 255, 3)) in colours
    assert tuple(np.round(np.array(TRUTH_COLOUR) / 255, 3)) in colours
    assert figure_to_png(fig).startswith(PNG)


def test_small_figures_render(vae_results):
    figures = [
        score_histogram_figure(np.random.default_rng(1).normal(size=300), 2.5, 1.6),
        latent_scatter_figure(np.random.default_rng(2).normal(size=(100, 2)), np.array([3.0, -1.0])),
        spectrum_figure(np.array([2.0, 1.0, 0.1, 0.01])),
        spectrum_figure(np.array([1.0, 0.0])),
    ]
    results = vae_results
    roc, pr = roc_pr_figures(results)
    assert [t.get_text().split(" (")[0] for t in roc.axes[0].get_legend().get_texts()] == list(results)
    figures += [roc, pr, pixel_pr_figure(results["reconstruction"])]
    for fig in figures:
        assert tuple(fig.get_size_inches()) <= (4.0, 3.4) and fig.dpi == 100
        assert figure_to_png(fig).startswith(PNG)
