"""The bundled demo set and the folder loaders (plain folder, MedIAnomaly, BraTS layouts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _fixtures_io import nifti_bytes, png_bytes

from ae4ad_core.data import (
    DEMO_PATH,
    Dataset,
    SliceSet,
    fit_to_square,
    load_brats_layout,
    load_dataset,
    load_demo,
    load_folder,
    load_medianomaly,
)
from ae4ad_core.errors import DataError
from ae4ad_core.lesions import DIFFICULTIES, LESION_KINDS

SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------------ demo file


@pytest.fixture(scope="module")
def demo_arrays():
    with np.load(DEMO_PATH, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_demo_assets_fit_the_size_budget():
    total = sum(path.stat().st_size for path in DEMO_PATH.parent.rglob("*") if path.is_file())
    assert total <= 20 * 1024 * 1024


def test_demo_file_has_the_documented_keys_shapes_and_dtypes(demo_arrays):
    a = demo_arrays
    for split in SPLITS:
        images = a[f"{split}_images"]
        n = len(images)
        assert images.dtype == np.float16 and images.shape == (n, 128, 128)
        assert a[f"{split}_brain"].dtype == np.uint8 and a[f"{split}_brain"].shape == (n, 128, 128)
        assert a[f"{split}_subjects"].shape == (n,) and a[f"{split}_subjects"].dtype.kind == "U"
        assert a[f"{split}_slice_index"].dtype == np.int16 and a[f"{split}_slice_index"].shape == (n,)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert set(np.unique(a[f"{split}_brain"])) <= {0, 1}
        # Background is exactly 0 (lesions stay inside the brain too).
        assert not np.any(images[a[f"{split}_brain"] == 0])
    n = len(a["test_images"])
    assert a["test_masks"].dtype == np.uint8 and a["test_masks"].shape == (n, 128, 128)
    assert a["test_labels"].dtype == np.uint8 and a["test_labels"].shape == (n,)
    assert a["test_lesion_kind"].shape == (n,) and a["test_difficulty"].shape == (n,)
    assert a["info_json"].shape == ()
    info = json.loads(str(a["info_json"]))
    assert info["seed"] == 0 and info["counts"] == {split: len(a[f"{split}_images"]) for split in SPLITS}
    for source in info["sources"]:
        assert source["licence"] and source["split"] in SPLITS and source["files_sha256"]
    assert set(info["versions"]) >= {"numpy", "scipy", "nibabel"}


def test_demo_sizes_are_useful(demo_arrays):
    assert len(demo_arrays["train_images"]) >= 300
    assert len(demo_arrays["val_images"]) >= 100
    assert len(demo_arrays["test_images"]) >= 200


def test_no_subject_appears_in_two_splits(demo_arrays):
    subjects = {split: set(demo_arrays[f"{split}_subjects"].tolist()) for split in SPLITS}
    assert len(subjects["train"]) >= 2 and subjects["val"] and subjects["test"]
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]


def test_test_split_is_half_lesioned_with_balanced_kinds(demo_arrays):
    labels = demo_arrays["test_labels"]
    kinds = demo_arrays["test_lesion_kind"]
    difficulties = demo_arrays["test_difficulty"]
    assert abs(int(labels.sum()) - len(labels) / 2) <= 1
    assert set(kinds[labels == 1]) == set(LESION_KINDS) and set(kinds[labels == 0]) == {""}
    assert set(difficulties[labels == 1]) == set(DIFFICULTIES) and set(difficulties[labels == 0]) == {""}
    counts = [np.sum((kinds == k) & (difficulties == d)) for k in LESION_KINDS for d in DIFFICULTIES]
    assert max(counts) - min(counts) <= 1


def test_lesion_masks_are_non_empty_inside_the_brain_and_only_on_lesioned_slices(demo_arrays):
    masks, labels, brain = demo_arrays["test_masks"], demo_arrays["test_labels"], demo_arrays["test_brain"]
    assert set(np.unique(masks)) <= {0, 1}
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    assert np.all(areas[labels == 1] > 0) and np.all(areas[labels == 0] == 0)
    assert not np.any((masks == 1) & (brain == 0))


def test_slice_level_does_not_predict_the_label(demo_arrays):
    levels = demo_arrays["test_slice_index"].astype(float)
    labels = demo_arrays["test_labels"]
    assert abs(levels[labels == 1].mean() - levels[labels == 0].mean()) < 3.0


# ------------------------------------------------------------------------------------------------ load_demo


def test_load_demo_builds_read_only_cached_slice_sets():
    dataset = load_demo()
    assert isinstance(dataset, Dataset) and load_demo() is dataset
    for split in SPLITS:
        slices = getattr(dataset, split)
        assert isinstance(slices, SliceSet)
        assert slices.images.dtype == np.float32 and slices.images.shape[1:] == (128, 128)
        assert len(slices) == len(slices.labels) == len(slices.subjects) == len(slices.names)
        assert slices.brain is not None and slices.masks is not None
        assert len(slices.extra["slice_index"]) == len(slices)
        with pytest.raises(ValueError):
            slices.images[0, 0, 0] = 1.0
    assert dataset.train.labels.sum() == 0 and dataset.val.labels.sum() == 0
    assert set(dataset.test.extra) >= {"slice_index", "lesion_kind", "difficulty"}
    assert dataset.info["layout"] == "demo" and "sources" in dataset.info
    assert "train" in dataset.description


def test_subset_keeps_everything_aligned():
    test = load_demo().test
    part = test.subset(test.labels == 1)
    assert len(part) == int(test.labels.sum())
    assert np.all(part.labels == 1) and np.all(part.extra["lesion_kind"] != "")
    assert part.masks.shape == part.images.shape
    assert len(test.subset(slice(0, 5))) == 5
    assert test.subset([3]).names[0] == test.names[3]


def test_load_demo_reports_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_demo(tmp_path / "missing.npz")


def test_load_demo_honours_the_environment(tmp_path, monkeypatch):
    copy = tmp_path / "demo_copy.npz"
    copy.write_bytes(DEMO_PATH.read_bytes())
    monkeypatch.setenv("AE4AD_DEMO", str(copy))
    assert load_demo().info["source"] == str(copy.resolve())
    assert load_dataset("demo").info["source"] == str(copy.resolve())


def test_slice_set_rejects_misaligned_arrays():
    with pytest.raises(DataError, match="labels"):
        SliceSet(images=np.zeros((3, 4, 4), np.float32), labels=np.zeros(2, np.uint8), masks=None, brain=None,
                 subjects=np.array(["a"] * 3), names=np.array(["a"] * 3))  # fmt: skip


# ----------------------------------------------------------------------------------------------- fixtures


def _real_slices(count: int) -> list[np.ndarray]:
    """8-bit versions of real validation slices (normal anatomy) for the folder fixtures."""
    val = load_demo().val
    index = np.linspace(0, len(val) - 1, count).astype(int)
    return [np.round(val.images[i] * 255).astype(np.uint8) for i in index]


def _write_pngs(folder: Path, names: list[str], slices: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(names, slices, strict=True):
        (folder / name).write_bytes(png_bytes(array))


def test_fit_to_square_keeps_aspect_and_pads_with_the_minimum():
    image = np.full((40, 80), 5.0, np.float32)
    image[:, :10] = 2.0
    out = fit_to_square(image, 32)
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert np.all(out[:8] == 2.0) and np.all(out[-8:] == 2.0)  # padding rows
    assert np.isclose(out[16, 20], 5.0)


# ---------------------------------------------------------------------------------------------- load_folder


def test_load_folder_splits_by_file_and_reports_errors_and_mixed_sizes(tmp_path):
    slices = _real_slices(12)
    _write_pngs(tmp_path / "a", [f"s{i:02d}.png" for i in range(6)], slices[:6])
    small = [s[::2, ::2] for s in slices[6:10]]  # 64 x 64
    _write_pngs(tmp_path / "b", [f"t{i:02d}.png" for i in range(4)], small)
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    (tmp_path / "notes.txt").write_text("ignored")
    volume = np.stack([s.astype(np.int16) for s in slices[:5]], axis=-1)  # (128, 128, 5): one subject
    (tmp_path / "volume.nii.gz").write_bytes(nifti_bytes(volume, compress=True))

    dataset = load_folder(tmp_path, size=48, val_fraction=0.25, seed=1)
    assert dataset.test is None
    assert dataset.train.images.shape[1:] == (48, 48) and dataset.train.images.dtype == np.float32
    assert len(dataset.train) + len(dataset.val) == 6 + 4 + 5
    assert not set(dataset.train.subjects) & set(dataset.val.subjects)
    assert len(set(dataset.train.subjects) | set(dataset.val.subjects)) == 11  # 10 PNGs + 1 volume
    assert np.all(dataset.train.labels == 0) and dataset.train.masks is None
    volume_split = {s for s in ("train", "val") if "volume.nii.gz" in set(getattr(dataset, s).subjects)}
    assert len(volume_split) == 1, "the slices of one file must stay in one split"
    assert [name for name, _ in dataset.info["errors"]] == ["b/broken.png"]
    assert any("mixed sizes" in w for w in dataset.info["warnings"])
    assert any("mixed formats" in w for w in dataset.info["warnings"])
    assert dataset.info["layout"] == "folder"
    again = load_folder(tmp_path, size=48, val_fraction=0.25, seed=1)
    assert np.array_equal(again.val.subjects, dataset.val.subjects)


def test_load_folder_keeps_raw_intensities_and_pads_with_the_minimum(tmp_path):
    slices = _real_slices(8)
    _write_pngs(tmp_path, [f"x{i}.png" for i in range(8)], [s[:, 16:112] for s in slices])  # 128 x 96
    dataset = load_folder(tmp_path, size=64)
    images = np.concatenate([dataset.train.images, dataset.val.images])
    assert images.max() > 1.5  # 8-bit values, not rescaled
    assert np.all(images[:, :, :4] == images.min(axis=(1, 2))[:, None, None])  # side padding


def test_load_folder_refuses_too_few_images(tmp_path):
    _write_pngs(tmp_path, ["a.png", "b.png", "c.png"], _real_slices(3))
    with pytest.raises(DataError, match="at least 8"):
        load_folder(tmp_path)


def test_load_folder_refuses_a_single_subject(tmp_path):
    volume = np.stack([s.astype(np.int16) for s in _real_slices(10)], axis=-1)
    (tmp_path / "one.nii").write_bytes(nifti_bytes(volume))
    with pytest.raises(DataError, match="at least 2 are needed"):
        load_folder(tmp_path)


def test_load_folder_refuses_a_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_folder(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ MedIAnomaly


def test_load_medianomaly_layout(tmp_path):
    slices = _real_slices(24)
    names = [f"img_{i:03d}.png" for i in range(24)]
    _write_pngs(tmp_path / "images", names, slices)
    (tmp_path / "images" / "img_999.png").write_bytes(b"garbage")
    spec = {"train": {"0": names[:16] + ["img_999.png"]}, "test": {"0": names[16:20], "1": names[20:24]}}
    (tmp_path / "data.json").write_text(json.dumps(spec))

    dataset = load_dataset(tmp_path, size=64)
    assert dataset.info["layout"] == "medianomaly"
    assert len(dataset.train) + len(dataset.val) == 16 and len(dataset.val) == 2  # seeded 10 %, rounded
    assert not set(dataset.train.names) & set(dataset.val.names)
    assert len(dataset.test) == 8 and dataset.test.labels.tolist() == [0] * 4 + [1] * 4
    assert dataset.test.masks is None
    assert dataset.test.images.shape == (8, 64, 64)
    assert [name for name, _ in dataset.info["errors"]] == ["img_999.png"]
    direct = load_medianomaly(tmp_path, size=64)
    assert np.array_equal(direct.val.names, dataset.val.names)


def test_load_medianomaly_rejects_a_bad_json(tmp_path):
    (tmp_path / "data.json").write_text('{"train": []}')
    with pytest.raises(DataError, match="MedIAnomaly"):
        load_medianomaly(tmp_path)


# ------------------------------------------------------------------------------------------------- BraTS


def _brats_fixture(root: Path, *, drop_mask: bool = False) -> None:
    slices = _real_slices(20)
    train_names = [f"BraTS2021_{p:05d}_flair_{z}.png" for p in range(6) for z in (60, 70)]
    _write_pngs(root / "train", train_names, slices[:12])
    _write_pngs(root / "test" / "normal", ["BraTS2021_00100_flair_40.png", "BraTS2021_00101_flair_40.png"],
                slices[12:14])  # fmt: skip
    tumour_names = [f"BraTS2021_{p:05d}_flair_80.png" for p in (200, 201, 202)]
    _write_pngs(root / "test" / "tumor", tumour_names, slices[14:17])
    masks = []
    for k in range(3):
        mask = np.zeros((128, 128), np.uint8)
        mask[40 + 5 * k : 60 + 5 * k, 50:70] = 255
        masks.append(mask)
    mask_names = [name.replace("flair", "seg") for name in tumour_names]
    if drop_mask:
        mask_names, masks = mask_names[:2], masks[:2]
    _write_pngs(root / "test" / "annotation", mask_names, masks)


def test_load_brats_layout(tmp_path):
    _brats_fixture(tmp_path)
    dataset = load_dataset(tmp_path, size=64)
    assert dataset.info["layout"] == "brats"
    # Split by patient: both slices of a patient are on the same side.
    assert not set(dataset.train.subjects) & set(dataset.val.subjects)
    assert len(dataset.val) == 2 and len(set(dataset.val.subjects)) == 1
    assert dataset.test.labels.tolist() == [0, 0, 1, 1, 1]
    masks = dataset.test.masks
    assert masks is not None and masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}
    assert masks[:2].sum() == 0 and np.all(masks[2:].reshape(3, -1).sum(axis=1) > 0)
    assert abs(int(masks[2].sum()) - 20 * 20 // 4) <= 20  # 20 x 20 square at half resolution
    assert dataset.info["warnings"] == []
    direct = load_brats_layout(tmp_path, size=64)
    assert np.array_equal(direct.test.masks, masks)


def test_load_brats_layout_without_all_masks_warns(tmp_path):
    _brats_fixture(tmp_path, drop_mask=True)
    dataset = load_brats_layout(tmp_path, size=64)
    assert dataset.test.masks is None
    assert any("no mask" in w for w in dataset.info["warnings"])


def test_load_dataset_rejects_unknown_specs(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "absent")


# ------------------------------------------------------------------------------------------------ demo build


def test_lesion_plan_pairs_neighbouring_levels_and_balances_kinds():
    from ae4ad_core.demo_build import _lesion_plan

    levels = np.repeat(np.arange(50), 3)
    lesioned, plan = _lesion_plan(levels, rng=np.random.default_rng(0))
    order = np.argsort(levels, kind="stable")
    pairs = lesioned[order][: len(order) // 2 * 2].reshape(-1, 2)
    assert np.all(pairs.sum(axis=1) == 1)  # exactly one of every two level-neighbours
    assert len(plan) == int(lesioned.sum())
    kinds = [kind for kind, _ in plan]
    assert max(kinds.count(k) for k in LESION_KINDS) - min(kinds.count(k) for k in LESION_KINDS) <= 1


@pytest.mark.skipif(
    not Path("/usr/share/mricron/templates/ch2.nii.gz").is_file(), reason="needs mricron-data"
)
def test_colin27_source_volume_and_mask_are_plausible():
    from ae4ad_core.demo_build import DEMO_SOURCES, load_source_volume

    source = next(s for s in DEMO_SOURCES if s.subject == "colin27")
    volume = load_source_volume(source)
    assert volume.data.shape == volume.brain.shape == (181, 217, 181)
    brain_ml = volume.brain.sum() / 1000.0  # 1 mm voxels
    assert 1000 < brain_ml < 1900  # an adult brain, without skull
    assert volume.data[volume.brain].mean() > volume.data[~volume.brain].mean()
