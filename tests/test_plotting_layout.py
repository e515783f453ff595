"""The per-upload figures reuse the constrained layout of an identical-looking earlier figure: same PNG bytes."""

from __future__ import annotations

import numpy as np
import pytest

from ae4ad_core import plotting


@pytest.fixture(autouse=True)
def _no_remembered_layouts():
    plotting._LAYOUTS.clear()
    yield
    plotting._LAYOUTS.clear()


def _histogram(score: float):
    scores = np.sort(np.random.default_rng(0).normal(size=300))
    return plotting.score_histogram_figure(scores, score, 1.6)


def _scatter(point):
    points = np.random.default_rng(1).normal(size=(200, 2))
    return plotting.latent_scatter_figure(points, np.asarray(point))


@pytest.mark.parametrize(
    "make, first, second",
    [
        (_histogram, 0.4, 0.9),  # inside the normal range: same limits, the layout is reused
        (_histogram, 0.4, 7.5),  # far above: other limits, a layout of its own
        (_scatter, (0.1, 0.2), (-0.5, 0.3)),
        (_scatter, (0.1, 0.2), (9.0, -6.0)),
    ],
)
def test_a_reused_layout_draws_the_same_pixels(make, first, second):
    plotting.figure_to_png(make(first))  # lays out and remembers
    reused = make(second)
    reused_png = plotting.figure_to_png(reused)
    plotting._LAYOUTS.clear()
    fresh = make(second)
    assert fresh.get_layout_engine() is not None
    assert reused_png == plotting.figure_to_png(fresh)


def test_the_layout_is_reused_for_the_same_limits():
    plotting.figure_to_png(_histogram(0.4))
    assert _histogram(0.9).get_layout_engine() is None
    assert _histogram(7.5).get_layout_engine() is not None  # the score widened the axis
