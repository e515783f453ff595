"""ae4ad score writes the anomaly map as NIfTI in the input's voxel grid and affine."""

import json

import nibabel as nib
import numpy as np
import pytest
from _fixtures_io import dicom_bytes
from pydicom.uid import generate_uid

from ae4ad_core.analysis import analyze
from ae4ad_core.cli import main
from ae4ad_core.io import read_image
from ae4ad_core.nifti_maps import map_stack, nifti_map_like_nifti


def _volume(shape=(20, 16, 6), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 100, shape).astype(np.float32)


@pytest.mark.parametrize("affine", [np.diag([-1.5, -1.0, 3.0, 1.0]), np.diag([2.0, 1.0, 1.0, 1.0])],
                         ids=["LPS", "RAS"])
def test_map_goes_back_to_the_voxel_it_came_from(tmp_path, affine):
    vol = _volume()
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    img = read_image(path)
    # a "map" equal to the pixels the reader produced must land on the source voxels exactly
    out = nifti_map_like_nifti(path, img.pixels)
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, affine)
    np.testing.assert_array_equal(np.asarray(out.dataobj), vol)


def test_cli_score_writes_a_nifti_map_with_the_input_grid(tmp_path, tiny_ae_dir):
    vol = _volume((24, 20, 5))
    affine = np.array([[-0.9, 0, 0, 10], [0, -0.9, 0, 20], [0, 0, 5.5, -30], [0, 0, 0, 1]])
    src = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(src))
    out = tmp_path / "out"
    assert main(["score", str(src), "--model", str(tiny_ae_dir), "--out", str(out), "--slices", "1-3"]) == 0
    nii = nib.load(str(out / "scan_reconstruction_map.nii.gz"))
    assert nii.shape == vol.shape
    np.testing.assert_allclose(nii.affine, affine)
    data = np.asarray(nii.dataobj)
    assert not data[:, :, 0].any() and not data[:, :, 4].any()  # slices not scored stay 0
    assert data[:, :, 1:4].any()
    payload = json.loads((out / "scan_reconstruction.json").read_text())
    assert payload["nifti_map"] == "scan_reconstruction_map.nii.gz"


def test_cli_score_writes_a_nifti_map_for_a_dicom_series(tmp_path, tiny_ae_dir):
    series = generate_uid()
    folder = tmp_path / "series"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for k in range(4):
        (folder / f"s{k}.dcm").write_bytes(dicom_bytes(
            rng.integers(0, 1000, (16, 12), dtype=np.uint16), modality="MR", series_uid=series,
            pixel_spacing=(0.8, 0.7), position=(-5.0, -6.0, 2.5 * k), instance_number=k + 1,
            SeriesDescription="AX T2 FLAIR"))
    out = tmp_path / "out"
    assert main(["score", str(folder), "--model", str(tiny_ae_dir), "--out", str(out)]) == 0
    maps = sorted(out.glob("*_map.nii.gz"))
    assert len(maps) == 1
    nii = nib.load(str(maps[0]))
    assert nii.shape == (12, 16, 4)
    np.testing.assert_allclose(np.diag(nii.affine)[:3], [-0.7, -0.8, 2.5])
    np.testing.assert_allclose(nii.affine[:3, 3], [5.0, 6.0, 0.0])
    assert "Doe^Jane" not in maps[0].read_bytes().decode("latin-1")


def test_map_stack_fills_only_scored_slices(ae):
    pixels = _volume((5, 32, 32))
    res = analyze(pixels, ae, slice_indices=[2])
    stack = map_stack([res], 5, (32, 32))
    assert stack[2].any() and not stack[[0, 1, 3, 4]].any()
