"""Tests of :mod:`ae4ad_core.render`: windows, grey images, inferno maps, outlines, the Analyze views and the
PNG helpers (no Streamlit)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from ae4ad_core import render
from ae4ad_core.analysis import outline_in_input_space
from ae4ad_core.preprocess import PreprocessConfig, prepare_slices, restore_map
from ae4ad_core.render import THRESHOLD_COLOUR, TRUTH_COLOUR

# ------------------------------------------------------------------------------------------------ windowing


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("brain", (40.0, 80.0)), ("soft tissue", (40.0, 400.0)), ("bone", (400.0, 1800.0))],
)
def test_ct_presets_are_hounsfield_windows(preset, expected):
    pixels = np.linspace(-1000, 2000, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    assert render.window_for(pixels, preset, ct=True) == expected


def test_auto_uses_the_files_window_when_it_has_one():
    pixels = np.zeros((1, 8, 8), np.float32)
    assert render.window_for(pixels, "auto", default_window=(600, 1600)) == (600.0, 1600.0)


def test_relative_presets_follow_the_image_histogram():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(100, 200, (2, 32, 32)).astype(np.float32)
    c_bone, w_bone = render.window_for(pixels, "bone")
    assert c_bone - w_bone / 2 == pytest.approx(pixels.min())
    assert c_bone + w_bone / 2 == pytest.approx(pixels.max())
    _, w_auto = render.window_for(pixels, "auto")
    _, w_brain = render.window_for(pixels, "brain")
    assert w_brain < w_auto < w_bone


def test_window_of_a_constant_image_has_positive_width():
    c, w = render.window_for(np.full((1, 4, 4), 7.0, np.float32), "auto")
    assert w > 0 and c == pytest.approx(7.5)


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: auto, brain"):
        render.window_for(np.zeros((1, 4, 4), np.float32), "lung")


def test_window_of_a_large_volume_is_estimated_from_a_subsample():
    big = np.linspace(0, 1, 3_000_000, dtype=np.float32).reshape(3, 1000, 1000)
    c, w = render.window_for(big, "auto")
    assert c == pytest.approx(0.5, abs=1e-3) and w == pytest.approx(0.99, abs=2e-3)


def test_apply_window_maps_linearly_and_inverts():
    x = np.array([[-10.0, 0.0, 50.0, 100.0, 200.0]], np.float32)
    out = render.apply_window(x, 50.0, 100.0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 128, 255, 255]])
    np.testing.assert_array_equal(render.apply_window(x, 50.0, 100.0, invert=True), [[255, 255, 128, 0, 0]])


def test_window_description_names_hounsfield_units_only_for_ct():
    assert "HU" in render.window_description("brain", True)
    assert "HU" not in render.window_description("brain", False)


# ---------------------------------------------------------------------------------------------------- views


@pytest.mark.parametrize("intensity", ["percentile", "window"])
def test_reconstruction_in_raw_units_inverts_the_intensity_scaling(intensity):
    rng = np.random.default_rng(1)
    raw = rng.uniform(-50, 300, (40, 40)).astype(np.float32)
    prep = PreprocessConfig(size=40, intensity=intensity, center=100.0, width=200.0)
    x, geoms = prepare_slices([raw], prep)
    back = render.reconstruction_in_raw_units(restore_map(x[0, 0].numpy(), geoms[0], fill=-1.0), raw, prep)
    lo, hi = np.percentile(raw, [0.5, 99.5]) if intensity == "percentile" else (0.0, 200.0)
    inside = (raw > lo + 1) & (raw < hi - 1)
    np.testing.assert_allclose(back[inside], raw[inside], atol=0.5)


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
    inp, rec, over = render.view_images(
        raw, a, 0, window=(100.0, 200.0), preprocessing=PreprocessConfig(size=16), opacity=0.5, truth=truth
    )
    assert inp.shape == rec.shape == over.shape == (32, 32, 3)
    assert all(v.dtype == np.uint8 for v in (inp, rec, over))
    colours = {tuple(c) for c in over.reshape(-1, 3)}
    assert THRESHOLD_COLOUR in colours
    assert TRUTH_COLOUR in colours
    # Without outlines, the hot square is coloured (inferno) and the rest stays gray.
    _, _, plain = render.view_images(
        raw, a, 0, window=(100.0, 200.0), preprocessing=PreprocessConfig(size=16), show_outlines=False
    )
    assert THRESHOLD_COLOUR not in {tuple(c) for c in plain.reshape(-1, 3)}
    assert len(set(plain[12, 12].tolist())) > 1 and len(set(plain[30, 30].tolist())) == 1


def test_opacity_zero_shows_only_the_input():
    a = _fake_analysis()
    raw = np.random.default_rng(0).uniform(0, 1, (32, 32)).astype(np.float32)
    inp, _, over = render.view_images(
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
    mask = outline_in_input_space(a, 0)
    assert mask.shape == (32, 32)
    assert mask[9:15, 9:15].all() and not mask[20:, 20:].any()


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
    window = render.window_for(volume, "auto")
    views = render.view_images(
        volume[1], analysis, 1, window=window, preprocessing=loaded.card.preprocessing
    )
    assert [v.shape for v in views] == [(40, 48, 3)] * 3


# ------------------------------------------------------------------------------------------------- pictures


def test_colorbar_and_panels_are_png():
    assert render.colorbar_png(0.25)[:8] == b"\x89PNG\r\n\x1a\n"
    panel = np.zeros((10, 12, 3), np.uint8)
    png = render.panels_png([panel, panel, panel], ["a", "b", "c"])
    shown = PILImage.open(io.BytesIO(png))
    assert shown.size == (3 * 12 + 2 * 8, 10 + 18)



def _disc(cy: int, cx: int, r: int, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_grey_rgb_draws_the_truth_boundary_in_green():
    img, m = np.full((32, 32), 0.5, np.float32), _disc(16, 16, 5)
    rgb = render.grey_rgb(img, truth=m)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[16, 11]) == TRUTH_COLOUR  # on the boundary
    assert tuple(rgb[16, 16]) == (128, 128, 128)  # inside: untouched grey (0.5 in the [0, 1] window)
    assert tuple(render.grey_rgb(np.full((4, 4), 2.0))[0, 0]) == (255, 255, 255)  # clipped to the window
    assert tuple(render.grey_rgb(img[None], outline=m)[16, 11]) == THRESHOLD_COLOUR  # (1, H, W) works too
    with pytest.raises(ValueError, match="truth has shape"):
        render.grey_rgb(img, truth=m[:-1])


def test_grey_rgb_of_the_views_is_apply_window():
    x = np.random.default_rng(2).uniform(-100, 300, (8, 9)).astype(np.float32)
    rgb = render.grey_rgb(x, window=(40.0, 200.0), invert=True)
    np.testing.assert_array_equal(rgb[..., 1], render.apply_window(x, 40.0, 200.0, invert=True))


def test_heat_rgb_uses_a_fixed_scale():
    amap = np.linspace(0.0, 2.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    a = render.heat_rgb(amap, vmax=1.0)
    b = render.heat_rgb(amap * 0.5, vmax=1.0)
    assert not np.array_equal(a, b)  # never stretched per image
    assert np.array_equal(a[-1, -1], render.heat_rgb(np.array([[1.0]]), vmax=1.0)[0, 0])  # clipped at vmax
    assert np.array_equal(render.heat_rgb(np.zeros((2, 2)), vmax=1.0)[0, 0], [0, 0, 4])  # inferno(0)
    assert tuple(render.heat_rgb(amap, vmax=1.0, truth=_disc(16, 16, 5))[16, 11]) == TRUTH_COLOUR


def test_overlay_at_full_opacity_is_the_heat_map_where_the_map_reaches_vmax():
    image = np.random.default_rng(1).uniform(0, 1, (16, 16)).astype(np.float32)
    amap = np.full((16, 16), 3.0, np.float32)
    over = render.overlay_rgb(image, amap, vmax=1.0, alpha=1.0)
    np.testing.assert_array_equal(over, render.heat_rgb(amap, vmax=1.0))
    with pytest.raises(ValueError, match="same shape"):
        render.overlay_rgb(image, amap[:8], vmax=1.0)


def test_vertical_colorbar_is_square():
    png = render.colorbar_png(1.9, label="squared error", orientation="vertical")
    im = PILImage.open(io.BytesIO(png))
    assert im.format == "PNG" and im.size[0] == im.size[1] == 260
    with pytest.raises(ValueError, match="valid: horizontal, vertical"):
        render.colorbar_png(1.0, orientation="diagonal")


def test_draw_brain_outline_paints_only_the_brain_edge_on_a_copy():
    from ae4ad_core.render import BRAIN_COLOUR, draw_brain_outline, mask_boundary

    rgb = np.zeros((10, 10, 3), np.uint8)
    brain = np.zeros((10, 10), bool)
    brain[2:8, 2:8] = True
    out = draw_brain_outline(rgb, brain)
    assert not rgb.any()  # the input is not modified
    painted = (out == BRAIN_COLOUR).all(axis=-1)
    assert np.array_equal(painted, mask_boundary(brain)) and not painted[4, 4]
    assert draw_brain_outline(rgb, brain[:5]) is rgb  # another geometry: unchanged
