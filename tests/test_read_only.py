"""Results shared between sessions without copies have read-only arrays (:mod:`ae4ad_core.read_only`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ae4ad_core.read_only import freeze_arrays


@dataclass(frozen=True)
class _Inner:
    maps: np.ndarray
    extra: dict


@dataclass(frozen=True)
class _Outer:
    inner: _Inner
    slices: list
    brain: np.ndarray | None
    name: str


def test_every_reachable_array_becomes_read_only_and_the_object_is_returned():
    inner = _Inner(np.zeros((2, 3)), {"scores": np.arange(3.0), "nested": [np.ones(2)]})
    outer = _Outer(inner, [np.zeros(4), (np.ones(1),)], np.ones((1, 2), bool), "scan")
    assert freeze_arrays(outer) is outer
    arrays = [inner.maps, inner.extra["scores"], inner.extra["nested"][0], outer.slices[0], outer.slices[1][0],
              outer.brain]
    assert not any(a.flags.writeable for a in arrays)
    with pytest.raises(ValueError, match="read-only"):
        inner.maps[0, 0] = 1.0
    assert outer.brain.sum() == 2  # reading works as before


def test_an_analysis_and_an_image_can_be_frozen_and_still_rendered():
    """The Analyze page shares one frozen analysis and one frozen upload between sessions: scoring, rendering
    and exports only read them."""
    from ae4ad_core import exports, render
    from ae4ad_core.analysis import analyze
    from ae4ad_core.io import Image
    from ae4ad_core.registry import list_models, load_shared_model

    names = [c.name for c in list_models()]
    if "ae-d16" not in names:
        pytest.skip("the shipped ae-d16 model is not registered")
    rng = np.random.default_rng(0)
    image = freeze_arrays(Image(rng.uniform(0, 1, (2, 80, 80)).astype(np.float32), name="x.png", format="png"))
    analysis = freeze_arrays(analyze(image.pixels, load_shared_model("ae-d16")))
    window = render.window_for(image.pixels, "auto")
    card = load_shared_model("ae-d16").card
    views = render.view_images(image.pixels[1], analysis, 1, window=window, preprocessing=card.preprocessing)
    assert all(v.shape[:2] == (80, 80) for v in views)
    assert '"volume_score"' in exports.result_json(analysis, image=image)
    assert render.panels_png(views, ("Input", "Reconstruction", "Anomaly map"))[:4] == b"\x89PNG"
