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
    assert all(c.pixels.base is None for c in cases)  # own copies, not views of the whole split
    assert all(
        c.is_normal and c.pixels.shape == (1, 8, 8) and c.pixels.dtype == np.float32 for c in cases[:3]
    )
    lesions = cases[3:]
    assert [c.lesion_kind for c in lesions[:2]] == ["tumour", "noise"]
    assert lesions[0].key == "lesion-14" and lesions[0].mask.sum() == 10  # the largest tumour
    assert len(lesions) == 3 and not lesions[0].is_normal



# ------------------------------------------------------------------------------------------ real patients


def test_real_demo_cases_come_from_the_held_out_patient_with_outline_and_licence():
    import pytest

    from ae4ad_core.assets import assets_dir
    from ae4ad_core.demo_cases import DEMO_PATIENT, REAL_CASE_WINDOW, real_demo_cases

    if not (assets_dir() / "real" / "brats2013.npz").is_file():
        pytest.skip("assets/real/brats2013.npz is not there")
    cases = real_demo_cases()
    for seq, word in (("flair", "FLAIR"), ("t1c", "T1c")):
        mine = [c for c in cases if c.sequence == seq]
        tumours = [c for c in mine if not c.is_normal]
        normals = [c for c in mine if c.is_normal]
        assert len(tumours) == 3 and len(normals) == 2
        assert mine[:3] == tumours  # tumour slices first, the largest first
        areas = [int(c.mask.sum()) for c in tumours]
        assert areas[0] == max(areas) and min(areas) > 0
        slices = sorted(int(c.label.split("slice ")[1].split(":")[0]) for c in tumours)
        assert min(b - a for a, b in zip(slices, slices[1:], strict=False)) >= 3  # spread over the volume
        for c in mine:
            assert c.label.startswith(f"Real patient (BraTS), {word}, slice ")
            assert c.licence == "CC BY-NC-SA 3.0 CH — non-commercial" and c.is_real
            assert DEMO_PATIENT.replace("brats_2013_", "").replace("_1", "") in c.source
            assert c.pixels.shape == (1, 240, 240) and c.pixels.dtype == np.float32
            assert c.pixels.min() == pytest.approx(-3.5) and c.pixels.max() <= 5.5  # standardised z
            assert c.window == REAL_CASE_WINDOW and "expert outline" in c.truth_label
            assert c.pixels.base is None  # its own copy: a view would keep the patient's volume in memory
        assert all(c.label.endswith(": glioma") for c in tumours)
        assert all(c.label.endswith(": no tumour") for c in normals)
    # The same slices in both sequences (one patient, co-registered), FLAIR first.
    assert [c.key.split("-")[-1] for c in cases[:5]] == [c.key.split("-")[-1] for c in cases[5:10]]
    assert cases[0].sequence == "flair"


def test_all_demo_cases_put_real_patients_first_and_survive_a_missing_asset(monkeypatch):
    import ae4ad_core.demo_cases as dc
    from ae4ad_core.errors import DataError

    real = [dc.DemoCase("r", "Real", np.zeros((1, 4, 4), np.float32), None, None, sequence="flair")]
    template = [dc.DemoCase("t", "Normal 1", np.zeros((1, 4, 4), np.float32), None, None)]
    monkeypatch.setattr(dc, "real_demo_cases", lambda: real)
    monkeypatch.setattr(dc, "demo_cases", lambda: template)
    assert [c.key for c in dc.all_demo_cases()] == ["r", "t"]

    def missing():
        raise DataError("no asset")

    monkeypatch.setattr(dc, "real_demo_cases", missing)
    assert [c.key for c in dc.all_demo_cases()] == ["t"]
