"""BraTS patient folders of three namings -> standardised slices, the MedIAnomaly layout, the compact asset."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ae4ad_core.brats import (
    BACKGROUND_Z,
    build_brats_layout,
    build_real_asset,
    dequantise_z,
    find_patients,
    load_real_slices,
    patient_slices,
    quantise_z,
    split_patients,
    standardise_in_brain,
)
from ae4ad_core.data import load_brats_layout
from ae4ad_core.errors import DataError

SHAPE = (24, 24, 14)  # x, y, z


def _volumes(seed: int):
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    brain = ((x - 12) ** 2 + (y - 12) ** 2 < 81) & (z >= 2) & (z <= 11)
    image = np.where(brain, 100 + rng.normal(0, 10, SHAPE), 0).astype(np.float32)
    seg = np.zeros(SHAPE, np.uint8)
    seg[10:14, 10:14, 6:9] = 2  # tumour in slices 6-8
    image[seg > 0] += 80
    return image, seg, brain


def _save(array, path: Path):
    nib.save(nib.Nifti1Image(array, np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))


def make_patients(root: Path, naming: str, n: int = 3) -> list[str]:
    names = []
    for i in range(n):
        image, seg, brain = _volumes(i)
        if naming == "brats2021":
            name = f"BraTS2021_{i:05d}"
            folder = root / name
            folder.mkdir(parents=True)
            _save(image, folder / f"{name}_flair.nii.gz")
            _save(image * 0.5, folder / f"{name}_t1ce.nii.gz")
            _save(seg, folder / f"{name}_seg.nii.gz")
        elif naming == "brats2023":
            name = f"BraTS-GLI-{i:05d}-000"
            folder = root / name
            folder.mkdir(parents=True)
            _save(image, folder / f"{name}-t2f.nii.gz")
            _save(image * 0.5, folder / f"{name}-t1c.nii.gz")
            _save(seg, folder / f"{name}-seg.nii.gz")
        else:
            name = f"brats_2013_pat{i:04d}_1"
            folder = root / name
            folder.mkdir(parents=True)
            z = standardise_in_brain(image, brain)
            _save(z, folder / "Flair_subtrMeanDivStd.nii.gz")
            _save(z, folder / "T1c_subtrMeanDivStd.nii.gz")
            _save(seg.astype(np.float32), folder / "OTMultiClass.nii.gz")
            _save(brain.astype(np.float64), folder / "brainmask.nii.gz")
        names.append(name)
    return names


@pytest.mark.parametrize("naming", ["brats2013", "brats2021", "brats2023"])
def test_patients_of_each_naming_are_found_and_sliced(tmp_path, naming):
    names = make_patients(tmp_path, naming)
    patients = find_patients(tmp_path)
    assert [p.name for p in patients] == sorted(names)
    assert {p.release for p in patients} == {naming}
    assert set(patients[0].sequences) >= {"flair", "t1c"}
    s = patient_slices(patients[0], "flair")
    assert s.images.shape[1:] == (SHAPE[1], SHAPE[0])  # axial (rows = y, cols = x)
    assert list(s.slice_index) == list(range(2, 12))  # brain slices only
    assert s.labels.tolist() == [int(6 <= i <= 8) for i in range(2, 12)]
    inside = s.images[s.brain]
    assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std()) - 1) < 1e-3
    assert np.all(s.images[~s.brain] == BACKGROUND_Z)


@pytest.mark.parametrize("naming", ["brats2013", "brats2021", "brats2023"])
def test_build_brats_layout_splits_by_patient_and_the_loader_reads_it(tmp_path, naming):
    names = make_patients(tmp_path / "src", naming, n=4)
    summary = build_brats_layout(tmp_path / "src", tmp_path / "out", sequence="flair", test_patients=[names[-1]])
    assert summary["test_patients"] == [names[-1]] and names[-1] not in summary["train_patients"]
    out = tmp_path / "out"
    train_files = sorted(p.name for p in (out / "train").iterdir())
    test_files = sorted(p.name for p in (out / "test" / "tumor").iterdir())
    assert all(not f.startswith(names[-1]) for f in train_files)  # never a test patient in training
    assert all(f.startswith(names[-1]) for f in test_files)
    assert len(test_files) == 3 and len(train_files) == 3 * 7
    assert json.loads((out / "split.json").read_text())["test_tumor"] == 3
    ds = load_brats_layout(out, size=32)
    assert len(ds.test) == 10 and int(ds.test.labels.sum()) == 3
    assert ds.test.masks is not None and ds.test.masks[ds.test.labels == 1].any()
    leak = set(ds.train.subjects) & set(ds.test.subjects)
    assert not leak


def test_default_split_is_seeded_and_disjoint(tmp_path):
    make_patients(tmp_path / "src", "brats2021", n=5)
    a = build_brats_layout(tmp_path / "src", tmp_path / "a", seed=1)
    b = build_brats_layout(tmp_path / "src", tmp_path / "b", seed=1)
    assert a["test_patients"] == b["test_patients"]
    assert not set(a["test_patients"]) & set(a["train_patients"])


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="no BraTS patient"):
        find_patients(tmp_path)
    with pytest.raises(ValueError, match="Did you mean"):
        split_patients(["pat1", "pat2"], ["pat3x"])
    make_patients(tmp_path / "src", "brats2021", n=2)
    patient = find_patients(tmp_path / "src")[0]
    with pytest.raises(DataError, match="no t2 volume"):
        patient_slices(patient, "t2")


def test_standardisation_is_idempotent_and_quantisation_round_trips():
    image, _, brain = _volumes(0)
    z = standardise_in_brain(image, brain)
    np.testing.assert_allclose(standardise_in_brain(z, brain), z, atol=1e-5)
    q = quantise_z(z)
    back = dequantise_z(q)
    assert q.dtype == np.uint8
    assert np.max(np.abs(back[brain] - np.clip(z[brain], -3.5, 5.5))) <= 9.0 / 255 / 2 + 1e-6


def test_dequantising_codes_by_table_gives_the_arithmetic_bit_for_bit():
    """The uint8 table lookup is the same float32 arithmetic as before, on every code; other integer arrays go
    through the arithmetic itself."""
    from ae4ad_core.brats import Z_WINDOW

    lo, hi = Z_WINDOW
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = (codes.astype(np.float32) / 255.0 * (hi - lo) + lo).astype(np.float32)
    got = dequantise_z(codes)
    assert got.dtype == np.float32 and got.shape == codes.shape
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert np.array_equal(dequantise_z(codes.astype(np.int64)).view(np.uint32), expected.view(np.uint32))
    got[0, 0] = 99.0  # a new array, not a view of the table
    assert dequantise_z(codes)[0, 0] == expected[0, 0]


def test_real_asset_round_trip(tmp_path):
    make_patients(tmp_path / "src", "brats2013", n=3)
    path = build_real_asset(tmp_path / "src", tmp_path / "real.npz")
    patients = load_real_slices(path, "t1c")
    assert len(patients) == 3
    direct = patient_slices(find_patients(tmp_path / "src")[1], "t1c")
    loaded = patients[1]
    assert np.array_equal(loaded.tumour, direct.tumour) and np.array_equal(loaded.brain, direct.brain)
    assert np.max(np.abs(loaded.images - np.clip(direct.images, -3.5, 5.5))) < 0.02
    with pytest.raises(ValueError, match="sequence"):
        load_real_slices(path, "t2")
    one = load_real_slices(path, "t1c", patients=[loaded.patient, "nobody"])
    assert [p.patient for p in one] == [loaded.patient]
    assert np.array_equal(one[0].images, loaded.images) and np.array_equal(one[0].tumour, loaded.tumour)


def test_the_four_brats_patients_and_the_shipped_asset_rebuild(shared_data, tmp_path):
    from ae4ad_core.assets import assets_dir

    patients = find_patients(shared_data / "brats2013")
    assert [p.name for p in patients] == [f"brats_2013_pat000{i}_1" for i in (3, 4, 5, 6)]
    assert all(set(p.sequences) == {"flair", "t1c"} and p.release == "brats2013" for p in patients)
    rebuilt = build_real_asset(shared_data / "brats2013", tmp_path / "real.npz")
    for seq in ("flair", "t1c"):
        for a, b in zip(load_real_slices(rebuilt, seq), load_real_slices(assets_dir() / "real" / "brats2013.npz", seq),
                        strict=True):
            assert a.patient == b.patient and np.array_equal(a.images, b.images)
            assert np.array_equal(a.tumour, b.tumour) and np.array_equal(a.brain, b.brain)


def test_real_spec_loads_the_shipped_patients_as_a_test_set():
    from ae4ad_core.data import load_dataset

    ds = load_dataset("real:t1c:brats_2013_pat0006_1")
    assert set(ds.test.subjects) == {"brats_2013_pat0006_1"} and len(ds.train) == 0
    assert ds.test.labels.any() and not ds.test.labels.all()
    assert ds.test.brain is not None and ds.test.masks[ds.test.labels == 1].any()
    assert "CC BY-NC-SA" in ds.description
    with pytest.raises(ValueError, match="patient"):
        load_dataset("real:flair:pat9")
