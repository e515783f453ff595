"""Tests of :mod:`ae4ad_core.demo_cases`: the deterministic choice of demo slices."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ae4ad_core.demo_cases import demo_cases


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
    cases = demo_cases(SimpleNamespace(test=test), n_normal=3, n_lesion=3)
    assert [c.label for c in cases[:3]] == ["Normal 1", "Normal 2", "Normal 3"]
    assert all(
        c.is_normal and c.pixels.shape == (1, 8, 8) and c.pixels.dtype == np.float32 for c in cases[:3]
    )
    lesions = cases[3:]
    assert [c.lesion_kind for c in lesions[:2]] == ["tumour", "noise"]
    assert lesions[0].key == "lesion-14" and lesions[0].mask.sum() == 10  # the largest tumour
    assert len(lesions) == 3 and not lesions[0].is_normal

