"""Tests of :mod:`ae4ad_core.teaching`, the computation behind the Learn page.

Pure functions are checked on synthetic inputs with values worked out by hand; the model-driven functions run on
the tiny calibrated models of ``conftest.py``; the teaching claim itself (a small code singles the lesion out
more than a large one) is checked on the shipped sweep models when they are present.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from ae4ad_core import teaching
from ae4ad_core.data import DEMO_PATH
from ae4ad_core.errors import UnsupportedModeError
from ae4ad_core.models import ModelConfig
from ae4ad_core.preprocess import PreprocessConfig
from ae4ad_core.registry import ModelCard, list_models, load_model, shipped_models_dir

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 32


def disc(cy: int, cx: int, r: int, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def tissue(size: int = SIZE, level: float = 0.5) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    img[2:-2, 2:-2] = level
    return img


def lesion_dataset():
    """Normals plus lesions of known conspicuity: |contrast| * sqrt(area) with tissue at 0.5."""
    specs = [  # (kind, lesion intensity, radius)
        ("hypointense", 0.1, 5),  # contrast 0.4
        ("hyperintense", 0.9, 3),  # contrast 0.4, smaller
        ("hypointense", 0.3, 5),  # contrast 0.2, same kind as the first
        ("noise", 0.6, 4),  # contrast 0.1
        ("hyperintense", 1.0, 5),  # contrast 0.5: the most conspicuous of all
    ]
    images, labels, masks, kinds, difficulty = [], [], [], [], []
    for _ in range(2):
        images.append(tissue()), labels.append(0), masks.append(np.zeros((SIZE, SIZE), np.uint8))
        kinds.append(""), difficulty.append("")
    for kind, value, r in specs:
        img, m = tissue(), disc(16, 16, r)
        img[m] = value
        images.append(img), labels.append(1), masks.append(m.astype(np.uint8))
        kinds.append(kind), difficulty.append("easy")
    test = SimpleNamespace(
        images=np.stack(images),
        labels=np.array(labels),
        masks=np.stack(masks),
        extra={"lesion_kind": np.array(kinds), "difficulty": np.array(difficulty)},
    )
    return SimpleNamespace(test=test)


# ------------------------------------------------------------------------------------------------ cases


def test_lesion_conspicuity_is_contrast_times_linear_size():
    img, m = tissue(), disc(16, 16, 4)
    img[m] = 0.9
    assert teaching.lesion_conspicuity(img, m) == pytest.approx(0.4 * math.sqrt(m.sum()), rel=1e-6)
    assert teaching.lesion_conspicuity(img[None], m) == pytest.approx(0.4 * math.sqrt(m.sum()), rel=1e-6)
    assert teaching.lesion_conspicuity(img, np.zeros_like(m)) == 0.0


def test_lesion_conspicuity_ignores_background_and_checks_shapes():
    img = np.zeros((SIZE, SIZE), np.float32)  # no tissue around the lesion at all
    m = disc(16, 16, 3)
    img[m] = 1.0
    assert teaching.lesion_conspicuity(img, m) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        teaching.lesion_conspicuity(img, m[:-1])
    with pytest.raises(ValueError, match="one 2D slice"):
        teaching.lesion_conspicuity(np.zeros((2, SIZE, SIZE)), m)


def test_teaching_cases_take_the_clearest_lesion_of_each_kind_first():
    cases = teaching.teaching_cases(lesion_dataset(), n=4)
    # indices 2..6 hold the lesions; by kind: hyperintense 6 (0.5), hypointense 2 (0.4), noise 5; then 3 (0.4 r3)
    assert [c.key for c in cases] == ["lesion-6", "lesion-2", "lesion-5", "lesion-3"]
    assert [c.lesion_kind for c in cases] == ["hyperintense", "hypointense", "noise", "hyperintense"]
    assert cases[0].label == "Bright spot (hyperintense), easy - test slice 6"
    for c in cases:
        assert c.pixels.shape == (1, SIZE, SIZE) and c.mask.dtype == bool and c.mask.any()
        assert not c.is_normal
    assert [c.key for c in teaching.teaching_cases(lesion_dataset(), n=4)] == [c.key for c in cases]
    assert len(teaching.teaching_cases(lesion_dataset(), n=10)) == 5  # only lesions, never normals
    assert teaching.teaching_cases(lesion_dataset(), n=0) == []


def test_teaching_cases_without_a_labelled_test_split():
    assert teaching.teaching_cases(SimpleNamespace(test=None)) == []


@pytest.mark.skipif(not DEMO_PATH.is_file(), reason="assets/demo/demo.npz is not built")
def test_teaching_cases_on_the_demo_are_deterministic_and_varied():
    cases = teaching.teaching_cases()
    assert len(cases) == 4
    assert len({c.lesion_kind for c in cases}) == 4
    assert [c.key for c in teaching.teaching_cases()] == [c.key for c in cases]
    for c in cases:
        assert c.pixels.shape == (1, 128, 128) and 0.0 <= c.pixels.min() and c.pixels.max() <= 1.0
        assert c.mask.shape == (128, 128) and c.mask.sum() > 100


# ------------------------------------------------------------------------------------------------ models


def card(name: str, kind: str = "ae", d: int = 4, **fields) -> ModelCard:
    return ModelCard(
        name=name,
        architecture=ModelConfig(kind=kind, latent_dim=d, image_size=SIZE, hidden=128),
        preprocessing=PreprocessConfig(size=SIZE),
        **fields,
    )


def test_latent_size_models_and_pick_vae():
    cards = [
        card("ae-d16", d=16),
        card("ae-d2", d=2),
        card("my-ae", d=8),
        card("vae-d8", "vae", 8),
        card("rdae-d64", "rdae", 64),
        card("ae-d4-custom", d=4),
    ]
    assert teaching.latent_size_models(cards) == ["ae-d2", "ae-d16"]
    assert teaching.pick_vae(cards) == "vae-d8"
    assert teaching.pick_vae([*cards, card("vae-d16", "vae", 16)]) == "vae-d16"
    assert teaching.pick_vae(cards[:3]) is None
    assert [c.name for c in teaching.rate_distortion_models(cards)] == ["rdae-d64"]


def test_load_models_keeps_the_order(tiny_ae_dir, tiny_vae_dir):
    models = teaching.load_models([tiny_vae_dir, tiny_ae_dir])
    assert [m.card.kind for m in models] == ["vae", "ae"]
    assert [m.card.kind for m in teaching.load_models([tiny_ae_dir], max_workers=1)] == ["ae"]


def test_reconstruct_across_latent_sizes_on_tiny_models(tiny_ae_dir, tiny_vae_dir):
    models = [load_model(tiny_vae_dir), load_model(tiny_ae_dir)]
    img, m = tissue(48, 0.6), disc(24, 24, 5, size=48)
    img[m] = 1.0
    results = teaching.reconstruct_across_latent_sizes(img, models, mask=m)
    assert [r.model_name for r in results] == ["tiny-ae-d4", "tiny-vae-d4"]  # same d: by name
    for r in results:
        assert r.d == 4
        assert r.reconstruction.shape == r.map.shape == (48, 48)
        assert np.all(r.map >= 0) and r.score > 0
        assert 0.0 <= r.percentile <= 100.0
        assert r.above_threshold == (r.score > r.threshold)
        assert r.display_max > 0 and r.lesion_contrast is not None and r.lesion_contrast > 0
        inside, rest = r.map[m].mean(), r.map[(img > teaching.TISSUE_LEVEL) & ~m].mean()
        assert r.lesion_contrast == pytest.approx(inside / rest, rel=1e-5)
    without = teaching.reconstruct_across_latent_sizes(img[None], models[1:])
    assert without[0].lesion_contrast is None
    assert without[0].score == pytest.approx(results[0].score)


def result(d: int, display_max: float, contrast: float | None) -> teaching.LatentSizeResult:
    z = np.zeros((2, 2))
    return teaching.LatentSizeResult(d, f"ae-d{d}", z, z, 0.1, 50.0, False, 1.0, display_max, contrast)


def test_shared_display_max_and_contrast_extremes():
    rows = [result(1, 3.0, 2.0), result(8, 2.0, 5.0), result(64, 1.0, 1.5), result(128, 1.2, 1.2)]
    assert teaching.shared_display_max(rows) == pytest.approx(1.6)
    assert teaching.lesion_contrast_extremes(rows) == (8, 5.0, 128, 1.2)
    assert teaching.lesion_contrast_extremes([result(4, 1.0, None)]) is None
    with pytest.raises(ValueError, match="No results"):
        teaching.shared_display_max([])


def test_compare_modes_needs_a_vae(tiny_ae_dir, tiny_vae_dir):
    img, m = tissue(), disc(16, 16, 4)
    img[m] = 1.0
    maps = teaching.compare_modes(img, load_model(tiny_vae_dir), mask=m)
    assert list(maps) == ["reconstruction", "kl", "combined"]
    for mode, r in maps.items():
        assert r.mode == mode and r.map.shape == (SIZE, SIZE) and r.display_max > 0
        assert r.reconstruction.shape == (SIZE, SIZE) and r.lesion_contrast is not None
    assert maps["kl"].display_max != maps["reconstruction"].display_max  # each mode has its own scale
    with pytest.raises(UnsupportedModeError, match="needs a VAE"):
        teaching.compare_modes(img, load_model(tiny_ae_dir))


SWEEP_MODELS = [f"ae-d{d}" for d in (1, 2, 4, 8, 16, 32, 64, 128)]


@pytest.mark.skipif(
    not DEMO_PATH.is_file() or not all((shipped_models_dir() / n).is_dir() for n in SWEEP_MODELS),
    reason="the shipped sweep models or the demo set are missing",
)
def test_shipped_models_single_out_the_lesion_more_with_a_small_code():
    """The page's claim, on its first case: the map picks the lesion out more at a small d than at d = 128,
    and the error inside the lesion falls as d grows (the large code redraws the lesion)."""
    case = teaching.teaching_cases()[0]
    results = teaching.reconstruct_across_latent_sizes(
        case.pixels, teaching.load_models(SWEEP_MODELS), mask=case.mask
    )
    assert [r.d for r in results] == [1, 2, 4, 8, 16, 32, 64, 128]
    small = max(r.lesion_contrast for r in results if r.d <= 8)
    assert small > 1.5 * results[-1].lesion_contrast
    inside = [float(r.map[case.mask].mean()) for r in results]
    assert np.mean(inside[:4]) > 1.5 * np.mean(inside[-3:])


# ------------------------------------------------------------------------------------------------- sweep


def summary_dict(**overrides) -> dict:
    per_d = {
        "1": {
            "n_runs": 3,
            "image_auroc": {"mean": 0.50, "std": 0.01},
            "entropy_gaussian_nats": {"mean": 3.0},
            "val_error": {"mean": 0.12},
            "effective_dim": {"mean": 1.0},
        },
        "8": {
            "n_runs": 3,
            "image_auroc": {"mean": 0.60, "std": 0.01},
            "entropy_gaussian_nats": {"mean": 20.0},
            "val_error": {"mean": 0.07},
            "effective_dim": {"mean": 2.0},
        },
        "32": {
            "n_runs": 3,
            "image_auroc": {"mean": 0.55, "std": 0.01},
            "entropy_gaussian_nats": {"mean": 55.0},
            "val_error": {"mean": 0.04},
            "effective_dim": {"mean": 4.0},
        },
    }
    out = {
        "per_d": per_d,
        "rows": [],
        "tolerance": 0.1,
        "chosen_d": 32,
        "oracle_d": 8,
        "chosen_auroc": 0.55,
        "oracle_auroc": 0.60,
        "auroc_gap_points": 5.0,
    }
    out.update(overrides)
    return out


def test_load_sweep_summary(tmp_path):
    path = tmp_path / "sweep.json"
    assert teaching.load_sweep_summary(path) is None  # missing
    path.write_text("{not json")
    assert teaching.load_sweep_summary(path) is None
    path.write_text(json.dumps({"rows": []}))
    assert teaching.load_sweep_summary(path) is None  # no per_d
    path.write_text(json.dumps(summary_dict()))
    assert teaching.load_sweep_summary(str(path))["chosen_d"] == 32


@pytest.mark.skipif(not teaching.SWEEP_PATH.is_file(), reason="assets/sweep/sweep.json is missing")
def test_shipped_sweep_summary_reads():
    lesson = teaching.sweep_lesson(teaching.load_sweep_summary())
    assert lesson.dims == tuple(sorted(lesson.dims)) and len(lesson.dims) >= 2
    assert lesson.chosen_d in lesson.dims and lesson.oracle_d in lesson.dims
    assert lesson.gap_points == pytest.approx(100 * (lesson.oracle_auroc - lesson.chosen_auroc))
    assert lesson.entropy_grows


def test_sweep_lesson_numbers():
    lesson = teaching.sweep_lesson(summary_dict())
    assert lesson.dims == (1, 8, 32)
    assert lesson.auroc == (0.50, 0.60, 0.55)
    assert lesson.n_runs == (3, 3, 3)
    assert (lesson.chosen_d, lesson.oracle_d, lesson.gap_points, lesson.tolerance) == (32, 8, 5.0, 0.1)
    assert lesson.at(8, "entropy_nats") == 20.0 and lesson.at(8, "val_error") == 0.07
    assert lesson.at(64, "auroc") is None and lesson.at(None, "auroc") is None
    assert lesson.entropy_grows
    flat = summary_dict()
    flat["per_d"]["32"]["entropy_gaussian_nats"] = {"mean": 10.0}
    assert not teaching.sweep_lesson(flat).entropy_grows
    bare = teaching.sweep_lesson({"per_d": {"4": {}}})
    assert (
        bare.chosen_d is None and bare.gap_points is None and bare.auroc == (None,) and not bare.entropy_grows
    )


def test_sweep_teaching_figure_marks_chosen_and_oracle():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = teaching.sweep_teaching_figure(summary_dict())
    assert isinstance(fig, Figure) and plt.get_fignums() == before  # no pyplot state
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "chosen d=32" in labels and "oracle d=8 (test labels)" in labels
    xs = sorted(
        line.get_xdata()[0] for line in fig.axes[1].get_lines() if line.get_linestyle() in ("--", ":")
    )
    assert xs == [8, 32]


# ------------------------------------------------------------------------------------- rate distortion


def test_rate_distortion_lesson_from_the_sweep_summary():
    rd = card(
        "rdae-d128",
        "rdae",
        128,
        latent={"mean_rate_bits": 29.0, "effective_dim": 3.0},
        metrics={"reconstruction": {"image_auroc": 0.597}},
        training={"config": {"rate_weight": 3e-4}},
    )
    lesson = teaching.rate_distortion_lesson(rd, summary=summary_dict())
    assert (lesson.name, lesson.max_d, lesson.rate_weight) == ("rdae-d128", 128, 3e-4)
    assert (lesson.mean_rate_bits, lesson.effective_dim, lesson.image_auroc) == (29.0, 3.0, 0.597)
    assert (lesson.best_ae_d, lesson.best_ae_auroc) == (8, 0.60)
    assert (lesson.chosen_ae_d, lesson.chosen_ae_auroc) == (32, 0.55)
    assert lesson.gain_over_chosen_points == pytest.approx(4.7)
    assert [r["d"] for r in lesson.ae_rows] == [1, 8, 32]
    assert lesson.ae_rows[1]["entropy_bits"] == pytest.approx(20.0 / math.log(2))


def test_rate_distortion_lesson_from_cards_and_missing_numbers():
    rd = card("rdae-d64", "rdae", 64)
    aes = [
        card(
            "ae-d16", d=16, metrics={"reconstruction": {"image_auroc": 0.58}}, latent={"effective_dim": 3.3}
        ),
        card("ae-d4", d=4, metrics={"reconstruction": {"image_auroc": 0.61}}),
    ]
    lesson = teaching.rate_distortion_lesson(rd, ae_cards=aes)
    assert [r["d"] for r in lesson.ae_rows] == [4, 16]
    assert (lesson.best_ae_d, lesson.best_ae_auroc) == (4, 0.61)
    assert lesson.chosen_ae_d is None and lesson.mean_rate_bits is None and lesson.rate_weight is None
    assert (
        lesson.image_auroc is None and lesson.effective_dim is None and lesson.gain_over_chosen_points is None
    )
    empty = teaching.rate_distortion_lesson(rd)
    assert empty.ae_rows == () and empty.best_ae_d is None


@pytest.mark.skipif(
    not any(c.kind == "rdae" for c in list_models([shipped_models_dir()])),
    reason="no rate-distortion AE is shipped",
)
def test_shipped_rate_distortion_card_has_the_numbers_the_page_states():
    rd = teaching.rate_distortion_models(list_models([shipped_models_dir()]))[0]
    lesson = teaching.rate_distortion_lesson(rd, summary=teaching.load_sweep_summary())
    assert lesson.mean_rate_bits is not None and lesson.effective_dim is not None
    assert lesson.image_auroc is not None and 0.0 <= lesson.image_auroc <= 1.0
