"""The test builder that writes a NIfTI volume as a scanner's MR DICOM series (``_fixtures_io``
``dicom_series_from_nifti``): the series must read back as the very slices, in the same orientation and order,
that the app shows for the NIfTI, with the geometry of the NIfTI affine and the header of its sequence."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from _fixtures_io import SERIES_HEADERS, dicom_series_from_nifti, nifti_bytes

from ae4ad_core.io import read_image, read_images
from ae4ad_core.sequence import detect_sequence


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _affine(axes: np.ndarray, zooms, origin=(-90.0, -100.0, -60.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(axes, dtype=float) * np.asarray(zooms, dtype=float)
    affine[:3, 3] = origin
    return affine


AFFINES = {
    "RAS": _affine(np.eye(3), (1.0, 1.0, 3.0)),
    "LAS (as the TCGA files)": _affine(np.diag([-1.0, 1.0, 1.0]), (0.9, 0.9, 5.5), (90.0, -70.0, -98.0)),
    "LPS": _affine(np.diag([-1.0, -1.0, 1.0]), (0.8, 0.7, 4.0)),
    "slices first (S, R, A voxel axes)": _affine(np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]]), (5, 1, 1.2)),
    "oblique, tilted 12 degrees": _affine(_rotation_x(12.0) @ np.diag([-1.0, 1.0, 1.0]), (0.9, 0.9, 5.5)),
}


def _volume(shape=(20, 24, 7), seed=0) -> np.ndarray:
    """Random non-negative int16 voxels: every pixel tells where it came from."""
    return np.random.default_rng(seed).integers(0, 3000, size=shape).astype(np.int16)


def _series_and_nifti(volume: np.ndarray, affine: np.ndarray, sequence: str = "flair"):
    data = nifti_bytes(volume, affine=affine, compress=True)
    files = dicom_series_from_nifti(data, sequence=sequence)
    images, errors = read_images(files)
    assert not errors and len(images) == 1
    return files, images[0], read_images([("scan.nii.gz", data)])[0][0]


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_the_series_reads_as_the_slices_the_app_shows_for_the_nifti(orientation):
    volume = _volume()
    files, series, nifti = _series_and_nifti(volume, AFFINES[orientation])
    assert series.format == "dicom-series" and series.metadata["sorted_by"] == "ImagePositionPatient"
    assert series.pixels.shape == nifti.pixels.shape
    np.testing.assert_array_equal(series.pixels, nifti.pixels)  # same slices, same order, same orientation
    np.testing.assert_allclose(series.spacing, nifti.spacing, rtol=1e-6)
    through = nifti.metadata["voxel_size"][2]  # the canonical S axis: the axial slices' spacing
    assert series.metadata["slice_spacing"] == pytest.approx(through, rel=1e-5)


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_every_pixel_sits_where_the_nifti_affine_puts_its_voxel(orientation):
    """Independently of the readers: a pixel's patient position from the DICOM geometry (LPS), taken back to
    voxel indices through the NIfTI affine (RAS), lands on a voxel holding that pixel's value."""
    volume, affine = _volume(seed=1), AFFINES[orientation]
    to_voxel = np.linalg.inv(affine)
    rng = np.random.default_rng(2)
    for _, data in dicom_series_from_nifti(nifti_bytes(volume, affine=affine), sequence="flair"):
        ds = pydicom.dcmread(io.BytesIO(data))
        orientation = np.asarray(ds.ImageOrientationPatient, float)
        row_cosine, column_cosine = orientation[:3], orientation[3:]  # along a row (columns), down a column
        row_spacing, column_spacing = map(float, ds.PixelSpacing)
        origin, pixels = np.asarray(ds.ImagePositionPatient, float), ds.pixel_array
        for r, c in zip(rng.integers(0, ds.Rows, 12), rng.integers(0, ds.Columns, 12), strict=True):
            lps = origin + c * column_spacing * row_cosine + r * row_spacing * column_cosine
            ijk = (to_voxel @ np.r_[lps * [-1, -1, 1], 1.0])[:3]
            np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-3)
            assert volume[tuple(np.round(ijk).astype(int))] == pixels[r, c]


def test_one_study_one_series_one_frame_of_reference_and_a_scanners_header():
    volume = _volume(shape=(16, 16, 5))
    data = nifti_bytes(volume, affine=AFFINES["LAS (as the TCGA files)"])
    files = dicom_series_from_nifti(data, sequence="flair")
    datasets = [pydicom.dcmread(io.BytesIO(data)) for _, data in files]
    assert [name for name, _ in files] == [f"scan-{k:04d}.dcm" for k in range(1, 6)]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(ds[key].value) for ds in datasets}) == 1, key
    assert len({ds.SOPInstanceUID for ds in datasets}) == 5
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in datasets)
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3, 4, 5]
    assert datasets[0].ImagePositionPatient[2] > datasets[-1].ImagePositionPatient[2]  # 1 = the most superior
    for ds in datasets:
        assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
        assert ds.SeriesDescription == "AX FLAIR" and ds.InversionTime == 2500 and "IR" in ds.ScanningSequence
        assert float(ds.SliceThickness) == pytest.approx(5.5, rel=1e-6)
        assert "PatientBirthDate" not in ds


@pytest.mark.parametrize("sequence", sorted(SERIES_HEADERS))
def test_the_header_says_its_sequence_to_the_apps_detection(sequence):
    _, series, _ = _series_and_nifti(_volume(shape=(16, 16, 4)), AFFINES["RAS"], sequence)
    guess = detect_sequence(series)
    assert (guess.sequence, guess.modality, guess.body_part) == (sequence, "MR", "brain")
    assert guess.confidence >= 0.9  # the words and the timing agree


def test_the_sequence_comes_from_the_file_name_and_a_nameless_volume_needs_one(tmp_path):
    path = tmp_path / "patient_t1c.nii.gz"
    path.write_bytes(nifti_bytes(_volume(shape=(16, 16, 3)), compress=True))
    datasets = [pydicom.dcmread(io.BytesIO(data)) for _, data in dicom_series_from_nifti(path)]
    assert datasets[0].ContrastBolusAgent and datasets[0].SeriesDescription == "AX T1 POST GD"
    with pytest.raises(ValueError, match="sequence"):
        dicom_series_from_nifti(nifti_bytes(_volume(shape=(16, 16, 3))))


@pytest.mark.parametrize("sequence", ["flair", "t1c"])
def test_the_whole_head_tcga_series_is_the_tcga_nifti(shared_data, sequence):
    path = shared_data / "tcga-head" / f"TCGA-FG-6692_{sequence}.nii.gz"
    images, errors = read_images(dicom_series_from_nifti(path))
    assert not errors and len(images) == 1
    series, nifti = images[0], read_image(path)
    np.testing.assert_array_equal(series.pixels, nifti.pixels)
    np.testing.assert_allclose(series.spacing, nifti.spacing, rtol=1e-6)
    assert detect_sequence(series).sequence == sequence
