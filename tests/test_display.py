"""Tests of ae4ad_core.display: windowing, view images, summaries and result builders (no Streamlit)."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest

from ae4ad_core import display
from ae4ad_core.io import Image
from ae4ad_core.plotting import THRESHOLD_COLOUR, TRUTH_COLOUR
from ae4ad_core.preprocess import PreprocessConfig, prepare_slices, restore_map

# --------------------------------------------------------------------------------------------- windowing


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("brain", (40.0, 80.0)), ("soft tissue", (40.0, 400.0)), ("bone", (400.0, 1800.0))],
)
def test_ct_presets_are_hounsfield_windows(preset, expected):
    pixels = np.linspace(-1000, 2000, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    assert display.window_for(pixels, preset, ct=True) == expected


def test_auto_uses_the_files_window_when_it_has_one():
    pixels = np.zeros((1, 8, 8), np.float32)
    assert display.window_for(pixels, "auto", default_window=(600, 1600)) == (600.0, 1600.0)


def test_relative_presets_follow_the_image_histogram():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(100, 200, (2, 32, 32)).astype(np.float32)
    c_bone, w_bone = display.window_for(pixels, "bone")
    assert c_bone - w_bone / 2 == pytest.approx(pixels.min())
    assert c_bone + w_bone / 2 == pytest.approx(pixels.max())
    _, w_auto = display.window_for(pixels, "auto")
    _, w_brain = display.window_for(pixels, "brain")
    assert w_brain < w_auto < w_bone


def test_window_of_a_constant_image_has_positive_width():
    c, w = display.window_for(np.full((1, 4, 4), 7.0, np.float32), "auto")
    assert w > 0 and c == pytest.approx(7.5)


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: auto, brain"):
        display.window_for(np.zeros((1, 4, 4), np.float32), "lung")


def test_apply_window_maps_linearly_and_inverts():
    x = np.array([[-10.0, 0.0, 50.0, 100.0, 200.0]], np.float32)
    out = display.apply_window(x, 50.0, 100.0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 128, 255, 255]])
    np.testing.assert_array_equal(display.apply_window(x, 50.0, 100.0, invert=True), [[255, 255, 128, 0, 0]])


def test_window_description_names_hounsfield_units_only_for_ct():
    assert "HU" in display.window_description("brain", True)
    assert "HU" not in display.window_description("brain", False)


@pytest.mark.parametrize("intensity", ["percentile", "window"])
def test_reconstruction_in_raw_units_inverts_the_intensity_scaling(intensity):
    rng = np.random.default_rng(1)
    raw = rng.uniform(-50, 300, (40, 40)).astype(np.float32)
    prep = PreprocessConfig(size=40, intensity=intensity, center=100.0, width=200.0)
    x, geoms = prepare_slices([raw], prep)
    back = display.reconstruction_in_raw_units(restore_map(x[0, 0].numpy(), geoms[0], fill=-1.0), raw, prep)
    lo, hi = np.percentile(raw, [0.5, 99.5]) if intensity == "percentile" else (0.0, 200.0)
    inside = (raw > lo + 1) & (raw < hi - 1)
    np.testing.assert_allclose(back[inside], raw[inside], atol=0.5)


# ------------------------------------------------------------------------------------------------ views


def _fake_analysis(size: int = 32, s: int = 16):
    """An Analysis-like object with a bright square in the map."""
    from ae4ad_core.preprocess import SliceGeometry

    maps = np.zeros((1, s, s), np.float32)
    maps[0, 4:8, 4:8] = 2.0
    geom = SliceGeometry(shape=(size, size), crop=(0, 0, size, size), side=size)
    return SimpleNamespace(
        maps=maps,
        display_max=1.0,
        pixel_threshold=0.5,
        geometries=[geom],
        mode="reconstruction",
        scores=np.array([0.3]),
        threshold=0.2,
        fpr=0.05,
        score_percentiles=np.array([99.0]),
        above_threshold=np.array([True]),
        slice_indices=[0],
        outline_mask=lambda i: maps[i] > 0.5,
        map_in_input_space=lambda i: restore_map(maps[i], geom),
        reconstruction_in_input_space=lambda i: np.zeros((size, size), np.float32),
        __len__=lambda: 1,
    )


def test_view_images_have_equal_shapes_and_draw_outlines_in_their_colours():
    a = _fake_analysis()
    raw = np.full((32, 32), 100.0, np.float32)
    truth = np.zeros((32, 32), bool)
    truth[20:28, 20:28] = True
    inp, rec, over = display.view_images(
        raw, a, 0, window=(100.0, 200.0), preprocessing=PreprocessConfig(size=16), opacity=0.5, truth=truth
    )
    assert inp.shape == rec.shape == over.shape == (32, 32, 3)
    assert all(v.dtype == np.uint8 for v in (inp, rec, over))
    colours = {tuple(c) for c in over.reshape(-1, 3)}
    assert THRESHOLD_COLOUR in colours
    assert TRUTH_COLOUR in colours
    # Without outlines, the hot square is coloured (inferno) and the rest stays gray.
    _, _, plain = display.view_images(
        raw, a, 0, window=(100.0, 200.0), preprocessing=PreprocessConfig(size=16), show_outlines=False
    )
    assert THRESHOLD_COLOUR not in {tuple(c) for c in plain.reshape(-1, 3)}
    assert len(set(plain[12, 12].tolist())) > 1 and len(set(plain[30, 30].tolist())) == 1


def test_opacity_zero_shows_only_the_input():
    a = _fake_analysis()
    raw = np.random.default_rng(0).uniform(0, 1, (32, 32)).astype(np.float32)
    inp, _, over = display.view_images(
        raw,
        a,
        0,
        window=(0.5, 1.0),
        preprocessing=PreprocessConfig(size=16),
        opacity=0.0,
        show_outlines=False,
    )
    np.testing.assert_array_equal(inp, over)


def test_outline_is_mapped_back_to_the_input_geometry():
    a = _fake_analysis(size=32, s=16)
    mask = display.outline_in_input_space(a, 0)
    assert mask.shape == (32, 32)
    assert mask[9:15, 9:15].all() and not mask[20:, 20:].any()


def test_colorbar_and_panels_are_png():
    assert display.colorbar_png(0.25)[:8] == b"\x89PNG\r\n\x1a\n"
    panel = np.zeros((10, 12, 3), np.uint8)
    png = display.panels_png([panel, panel, panel], ["a", "b", "c"])
    from PIL import Image as PILImage

    shown = PILImage.open(io.BytesIO(png))
    assert shown.size == (3 * 12 + 2 * 8, 10 + 18)


# ---------------------------------------------------------------------------------------- words, tables


def test_header_rows_never_show_identifiers():
    meta = {
        "format": "dicom",
        "modality": "CT",
        "PatientName": "Doe^Jane",
        "patient_id": "123",
        "pixel_spacing": [0.5, 0.5],
        "applied": ["x"],
    }
    image = Image(np.zeros((2, 4, 5), np.float32), name="scan.dcm", format="dicom", metadata=meta)
    rows = dict(display.header_rows(image))
    text = json.dumps(rows)
    assert "Doe" not in text and "123" not in text
    assert rows["Modality"] == "CT"
    assert rows["Pixel spacing (mm)"] == "0.5 x 0.5"
    assert rows["Size"] == "2 slice(s) of 4 x 5 pixels"


def test_preprocessing_steps_describe_scaling_crop_and_resize():
    from ae4ad_core.preprocess import SliceGeometry

    image = Image(
        np.zeros((1, 40, 60), np.float32), name="x.png", format="png", metadata={"applied": ["gray"]}
    )
    prep = PreprocessConfig(size=64, crop_foreground=True)
    steps = display.preprocessing_steps(image, prep, SliceGeometry((40, 60), (5, 10, 30, 40), 40))
    text = " ".join(steps)
    assert "percentiles" in text and "Cropped" in text and "Padded to a 40 x 40" in text and "64 x 64" in text
    assert "Reader: gray." in steps


def _card(name, kind="ae", d=16, auroc=None, entropy=None, data="demo brains"):
    arch = SimpleNamespace(image_size=64)
    metrics = {"reconstruction": {"image_auroc": auroc}} if auroc is not None else {}
    return SimpleNamespace(
        name=name,
        kind=kind,
        latent_dim=d,
        architecture=arch,
        metrics=metrics,
        latent={"entropy_gaussian_nats": entropy, "effective_dim": 3.0},
        training_data={"description": data},
        training={"config": {"epochs": 5}},
    )


def test_card_summary_names_type_d_size_data_entropy_and_auroc():
    text = display.card_summary(_card("vae-d16", "vae", 16, auroc=0.873, entropy=12.34))
    assert "VAE" in text and "d = 16" in text and "64 px" in text and "demo brains" in text
    assert "12.3 nats" in text and "AUROC 0.87" in text


def test_default_model_prefers_an_ae_with_d16():
    cards = [_card("ae-d2", d=2), _card("ae-d16", d=16), _card("vae-d16", "vae")]
    assert display.default_model_name(cards) == "ae-d16"
    assert display.default_model_name(cards[:1]) == "ae-d2"
    assert display.default_model_name([]) is None


def test_sweep_rows_need_two_latent_sizes_and_are_sorted_by_d():
    cards = [
        _card("ae-d16", d=16, auroc=0.8, entropy=20.0),
        _card("ae-d2", d=2, auroc=0.5, entropy=3.0),
        _card("vae-d16", "vae"),
    ]
    rows = display.ae_sweep_rows(cards)
    assert [r["d"] for r in rows] == [2, 16]
    assert rows[1]["image AUROC"] == 0.8
    assert display.ae_sweep_rows(cards[:1]) == []


def test_zoo_rows_have_the_metrics_columns():
    rows = display.zoo_rows([_card("ae-d16", auroc=0.9, entropy=1.0)])
    assert rows[0]["image AUROC"] == 0.9 and rows[0]["type"] == "AE"
    assert {"pixel AP", "Dice (calibrated)", "effective dim", "latent entropy (nats)"} <= set(rows[0])


def test_latent_rows_speak_plainly_first():
    summary = {
        "latent_dim": 16,
        "entropy_gaussian_nats": 10.0,
        "entropy_gaussian_bits": 14.4,
        "entropy_knn_nats": 9.0,
        "entropy_knn_bits": 13.0,
        "effective_dim": 4.2,
    }
    rows = display.latent_rows(summary, 30.0, 97.0)
    assert len(rows) == 4
    assert rows[3][2].startswith("How surprising this image")
    assert "(latent surprisal)" in rows[3][2] and "97%" in rows[3][2]


def test_volume_summary_only_for_volumes():
    class Volume(SimpleNamespace):
        def __len__(self):
            return len(self.scores)

    a = Volume(
        scores=np.array([0.1, 0.5, 0.2]),
        above_threshold=np.array([False, True, False]),
        slice_indices=[0, 1, 2],
    )
    assert display.volume_summary(Volume(scores=np.array([0.1]))) is None
    assert display.volume_summary(a) == (
        "1 of 3 slices above the threshold; the highest score is on slice 2 "
        "(volume score = the maximum over slices)."
    )


def test_records_csv_has_one_row_per_slice():
    records = [{"slice": 0, "score": 0.1, "warnings": ""}, {"slice": 1, "score": 0.2, "warnings": "a; b"}]
    a = SimpleNamespace(records=lambda: records)
    rows = list(csv.DictReader(io.StringIO(display.records_csv(a, extra={"file": "x.nii"}))))
    assert [r["slice"] for r in rows] == ["0", "1"] and rows[1]["warnings"] == "a; b"
    assert rows[0]["file"] == "x.nii"


def test_digest_is_stable_and_order_sensitive():
    assert display.digest(b"a", "b") == display.digest(b"a", "b")
    assert display.digest(b"a", "b") != display.digest("b", b"a")


# ------------------------------------------------------------------------------------------- demo cases


def test_demo_cases_pick_normals_and_one_lesion_per_kind_first():
    n = 20
    labels = np.array([0] * 10 + [1] * 10)
    masks = np.zeros((n, 8, 8), bool)
    kinds = ["none"] * 10 + ["tumour"] * 5 + ["noise"] * 5
    for k in range(10, n):
        masks[k, : (k % 5) + 1, :2] = True  # lesion area grows with k % 5
    test = SimpleNamespace(
        images=np.random.default_rng(0).uniform(0, 1, (n, 8, 8)),
        labels=labels,
        masks=masks,
        extra={"lesion_kind": kinds},
    )
    cases = display.demo_cases(SimpleNamespace(test=test), n_normal=3, n_lesion=3)
    assert [c.label for c in cases[:3]] == ["Normal 1", "Normal 2", "Normal 3"]
    assert all(
        c.is_normal and c.pixels.shape == (1, 8, 8) and c.pixels.dtype == np.float32 for c in cases[:3]
    )
    lesions = cases[3:]
    assert [c.lesion_kind for c in lesions[:2]] == ["tumour", "noise"]
    assert lesions[0].key == "lesion-14" and lesions[0].mask.sum() == 10  # the largest tumour
    assert len(lesions) == 3 and not lesions[0].is_normal


def test_evaluation_result_is_rebuilt_from_the_card():
    metrics = {
        "mode": "reconstruction",
        "n_normal": 2,
        "n_abnormal": 2,
        "image_auroc": 0.75,
        "image_ap": 0.8,
        "pixel_auroc": None,
        "pixel_ap": None,
        "best_dice": None,
        "best_dice_threshold": None,
        "calibrated_dice": None,
        "calibrated_image_fpr": 0.0,
        "calibrated_image_tpr": 0.5,
        "anatomy_correlation": None,
        "curves": {"image": {"fpr": [0, 1], "tpr": [0, 1]}},
    }
    card = SimpleNamespace(metrics={"reconstruction": metrics})
    result = display.evaluation_result(card, "reconstruction")
    assert result.image_auroc == 0.75 and result.curves["image"]["tpr"] == [0, 1]
    assert display.evaluation_result(card, "kl") is None


# ----------------------------------------------------------------------------- with a real Analysis


@pytest.fixture(scope="module")
def real_analysis(tiny_ae_dir):
    """A tiny calibrated AE (tests/conftest.py) scoring a 3-slice volume of 40 x 48 pixels."""
    from ae4ad_core.analysis import analyze
    from ae4ad_core.registry import load_model

    loaded = load_model(tiny_ae_dir, device="cpu")
    rng = np.random.default_rng(3)
    volume = rng.uniform(0, 1000, (3, 40, 48)).astype(np.float32)
    return volume, loaded, analyze(volume, loaded, mode="reconstruction")


def test_views_of_a_real_analysis_match_the_input_geometry(real_analysis):
    volume, loaded, analysis = real_analysis
    window = display.window_for(volume, "auto")
    views = display.view_images(
        volume[1], analysis, 1, window=window, preprocessing=loaded.card.preprocessing
    )
    assert [v.shape for v in views] == [(40, 48, 3)] * 3


def test_result_json_and_csv_of_a_real_analysis(real_analysis):
    volume, loaded, analysis = real_analysis
    image = Image(volume, name="vol.nii", format="nifti", metadata={})
    payload = json.loads(display.result_json(analysis, image=image, device="cpu"))
    assert payload["input"] == {"name": "vol.nii", "format": "nifti", "shape": [3, 40, 48]}
    assert payload["device"] == "cpu" and len(payload["slices"]) == 3
    rows = list(csv.DictReader(io.StringIO(display.records_csv(analysis))))
    assert [int(r["slice"]) for r in rows] == [0, 1, 2]
    assert float(rows[0]["score"]) == pytest.approx(analysis.scores[0], rel=1e-6)
    assert display.volume_summary(analysis).endswith("(volume score = the maximum over slices).")


def test_window_of_a_large_volume_is_estimated_from_a_subsample():
    big = np.linspace(0, 1, 3_000_000, dtype=np.float32).reshape(3, 1000, 1000)
    c, w = display.window_for(big, "auto")
    assert c == pytest.approx(0.5, abs=1e-3) and w == pytest.approx(0.99, abs=2e-3)


@pytest.mark.parametrize(
    ("image_name", "expected"),
    [
        ("scan.nii.gz", "scan_ae-d16_kl.json"),
        ("Lesion 1: tumour (easy)", "Lesion_1_tumour_easy_ae-d16_kl.json"),
        ("IM0001", "IM0001_ae-d16_kl.json"),
    ],
)
def test_download_names_are_safe(image_name, expected):
    assert display.download_name(image_name, "ae-d16", "kl", ".json") == expected
