"""ae4ad_core.io: format detection, DICOM/NIfTI/Pillow decoding, series, de-identification, caps, bad input."""

from __future__ import annotations

import functools
import gzip
import io
import json
import random
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from _fixtures_io import (
    PYDICOM_TEST_FILES,
    dicom_bytes,
    nifti_bytes,
    png_bytes,
    png_header_only,
    pydicom_test_file,
    tiff_pages_bytes,
)

import ae4ad_core.io.dicom as dicom_reader
from ae4ad_core.errors import (
    Ae4adError,
    ImageTooLargeError,
    MissingDecoderError,
    UnreadableImageError,
    UnsupportedImageError,
)
from ae4ad_core.io import (
    DEFAULT_MAX_PIXELS,
    READERS,
    SUPPORTED_EXTENSIONS,
    Image,
    ImageReader,
    ReadOptions,
    deidentify,
    is_dicom,
    read_dicom_series,
    read_image,
    read_images,
)

IDENTIFYING_STRINGS = (
    "Doe^Jane",
    "Doe",
    "ID-12345",
    "St Example Hospital",
    "ACC-777",
    "19700101",
    "House^Gregory",
    "20240229",
    "SCANNER-7",
    "SN-424242",
    "private secret",
    "1.2.826.0.1.3680043.8.498.99999",
)


def _assert_one_line_error(error: BaseException, name: str) -> None:
    message = str(error)
    assert message.startswith(f"{name}: "), message
    assert "\n" not in message and "\r" not in message, message


def _assert_valid_image(image: Image) -> None:
    assert isinstance(image, Image)
    assert image.pixels.ndim == 3 and image.pixels.dtype == np.float32
    assert image.pixels.shape[0] == image.n_slices >= 1
    assert np.isfinite(image.pixels).all()
    assert np.abs(image.pixels).max(initial=0) < 1e10
    json.dumps(image.metadata, allow_nan=False)
    if image.default_window is not None:
        assert image.default_window[1] > 0
    if image.spacing is not None:
        assert all(value > 0 for value in image.spacing)


# ------------------------------------------------------------------------------------------------ the readers


def test_one_reader_per_format_knows_what_it_can_read_and_reads_it() -> None:
    samples = {
        "dicom": dicom_bytes(np.full((4, 3), 7, np.uint16)),
        "nifti": nifti_bytes(np.full((3, 4, 2), 7, np.int16)),
        "pillow": png_bytes(np.full((4, 3), 7, np.uint8)),
    }
    assert [reader.name for reader in READERS] == ["dicom", "nifti", "pillow"]
    for reader in READERS:
        assert isinstance(reader, ImageReader)
        for kind, data in samples.items():
            assert reader.can_read(data) == (kind == reader.name), (reader, kind)
        image = reader.read(samples[reader.name], "x", ReadOptions())
        assert image.pixels.max() == 7 and image.name == "x"
        assert image.metadata == read_image(samples[reader.name], name="x").metadata
        other = samples["pillow" if reader.name != "pillow" else "dicom"]
        with pytest.raises(UnreadableImageError, match=rf"^y: not a {reader.title} file \(first bytes "):
            reader.read(other, "y", ReadOptions())
    assert not any(reader.can_read(gzip.compress(samples["pillow"])) for reader in READERS)  # read_image unwraps


# ------------------------------------------------------------------------------------------- pydicom test files


@functools.cache
def _outcome(path: Path) -> Image | Ae4adError:
    try:
        return read_image(path)
    except Ae4adError as error:
        return error


def _relative(path: Path) -> str:
    return path.as_posix().split("/test_files/", 1)[1]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", PYDICOM_TEST_FILES, ids=_relative)
def test_every_pydicom_test_file_decodes_or_raises_a_library_error(path: Path) -> None:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    outcome = _outcome(path)
    if isinstance(outcome, Ae4adError):
        _assert_one_line_error(outcome, path.name)
        return
    _assert_valid_image(outcome)
    assert outcome.name == path.name
    if outcome.format != "dicom" or path.suffix == ".gz":
        return
    dataset = pydicom.dcmread(path, force=True)
    assert outcome.pixels.shape[1:] == (dataset.Rows, dataset.Columns)
    photometric = dataset.PhotometricInterpretation
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or "VOILUTSequence" in dataset:
        return
    raw = np.asarray(apply_modality_lut(dataset.pixel_array, dataset), dtype=np.float64)
    raw = raw.reshape(outcome.pixels.shape)
    if photometric == "MONOCHROME2":
        np.testing.assert_allclose(outcome.pixels, raw, rtol=1e-6, atol=1e-3)
    elif raw.std() > 0:  # MONOCHROME1: inverted, so perfectly anti-correlated with the stored values
        correlation = np.corrcoef(raw.ravel(), outcome.pixels.astype(np.float64).ravel())[0, 1]
        assert correlation < -0.999
        assert any("MONOCHROME1" in step for step in outcome.metadata["applied"])


@pytest.mark.filterwarnings("ignore")
def test_a_decent_share_of_pydicom_test_files_decode_including_every_codec() -> None:
    decoded = {
        _relative(path): outcome
        for path in PYDICOM_TEST_FILES
        if isinstance(outcome := _outcome(path), Image)
    }
    assert len(decoded) >= 30
    for name in (
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
        "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
        "JPEG2000.dcm",  # JPEG 2000
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR
        "JPGExtended.dcm",  # JPEG extended 12-bit
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
        "MR_small_RLE.dcm",  # RLE lossless
        "image_dfl.dcm",  # deflated explicit VR
        "MR_small_bigendian.dcm",  # big endian
        "zipMR.gz",  # gzip-wrapped DICOM
        "examples_palette.dcm",  # PALETTE COLOR
        "dicomdirtests/77654033/CR1/6154",  # MONOCHROME1, no extension
    ):
        assert name in decoded, f"{name} did not decode"
    reference = decoded["MR_small.dcm"].pixels
    for lossless in (
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "zipMR.gz",
    ):
        np.testing.assert_array_equal(decoded[lossless].pixels, reference)


@pytest.mark.parametrize(
    ("name", "error", "reason"),
    [
        (
            "rtplan.dcm",
            UnreadableImageError,
            "DICOM file has no pixel data (e.g. a structured report or RT plan)",
        ),
        ("test-SR.dcm", UnreadableImageError, "has no pixel data"),
        ("dicomdirtests/DICOMDIR", UnreadableImageError, "a DICOMDIR"),
        (
            "MR_truncated.dcm",
            UnreadableImageError,
            "truncated DICOM (pixel data ends after 8130 of 8192 bytes)",
        ),
        ("README.txt", UnreadableImageError, "not a DICOM, NIfTI or PNG/JPEG/TIFF/BMP file (first bytes"),
        ("badVR.dcm", UnreadableImageError, "NumberOfFrames is not a number"),
    ],
)
def test_pydicom_files_without_usable_pixels_are_refused_with_the_reason(
    name: str, error: type[Exception], reason: str
) -> None:
    path = pydicom_test_file(name)
    with pytest.raises(error) as caught:
        read_image(path)
    assert str(caught.value).startswith(f"{path.name}: ")
    assert reason in str(caught.value)


# ------------------------------------------------------------------------------------------------ DICOM details


def test_multi_frame_selection_returns_the_chosen_frames_in_order() -> None:
    path = pydicom_test_file("rtdose.dcm")
    every = read_image(path)
    assert every.n_slices == 15
    some = read_image(path, frames=[3, 0, -1])
    np.testing.assert_array_equal(some.pixels, every.pixels[[3, 0, 14]])
    assert some.metadata["frames"] == [3, 0, 14] and some.metadata["n_frames"] == 15
    with pytest.raises(
        IndexError, match=r"rtdose.dcm: frame index 15 is out of range; the file has 15 frame"
    ):
        read_image(path, frames=[15])


def test_synthetic_multi_frame_and_rescale_and_window() -> None:
    frames = np.stack([np.full((8, 6), value, dtype=np.uint16) for value in (10, 20, 30)])
    data = dicom_bytes(frames, rescale=(2.0, -1024.0), window=(40.0, 400.0))
    image = read_image(data, name="ct.dcm", frames=[2, 1])
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [30 * 2 - 1024, 20 * 2 - 1024])
    assert image.default_window == (40.0, 400.0)
    assert image.spacing == (0.5, 0.5)
    assert image.metadata["rescale_slope"] == 2.0 and image.metadata["rescale_intercept"] == -1024.0
    assert any("rescale slope 2 intercept -1024" in step for step in image.metadata["applied"])


def test_monochrome1_is_inverted_and_its_window_mirrored() -> None:
    pixels = np.array([[0, 1000], [4000, 65535]], dtype=np.uint16)
    image = read_image(dicom_bytes(pixels, photometric="MONOCHROME1", window=(1000.0, 500.0)), name="cr")
    np.testing.assert_array_equal(image.pixels[0], 65535 - pixels.astype(np.float32))
    assert image.default_window == (64535.0, 500.0)
    assert any("MONOCHROME1" in step for step in image.metadata["applied"])


def test_voi_lut_sequence_is_applied_when_there_is_no_window() -> None:
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.array([[0, 1], [2, 255]], dtype=np.uint8))))
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 8])  # LUT Descriptor: 256 entries, first value 0, 8 bits
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUT Data: a reversing LUT
    dataset.VOILUTSequence = Sequence([item])
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    image = read_image(buffer.getvalue(), name="voi.dcm")
    np.testing.assert_array_equal(image.pixels[0], [[255, 254], [253, 0]])
    assert image.default_window is None
    assert any("VOI LUT" in step for step in image.metadata["applied"])


def test_colour_dicom_becomes_grayscale_and_says_so() -> None:
    image = read_image(pydicom_test_file("SC_rgb_rle_2frame.dcm"))
    assert image.pixels.shape == (2, 100, 100)
    assert image.metadata["converted_to_grayscale"] is True
    assert any("grayscale" in step for step in image.metadata["applied"])


def test_extensionless_and_preamble_less_dicom_are_detected_by_content(tmp_path: Path) -> None:
    data = dicom_bytes()
    path = tmp_path / "IM00001"
    path.write_bytes(data)
    from_path = read_image(path)
    assert from_path.name == "IM00001" and from_path.format == "dicom"
    without_preamble = data[132:]
    assert is_dicom(data) and is_dicom(without_preamble)
    assert not is_dicom(b"\x89PNG\r\n\x1a\n" + bytes(200)) and not is_dicom(b"")
    np.testing.assert_array_equal(read_image(without_preamble, name="raw").pixels, from_path.pixels)
    renamed = tmp_path / "looks_like.png"
    renamed.write_bytes(data)
    assert read_image(renamed).format == "dicom"


def test_missing_decoder_names_the_transfer_syntax_and_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    class _UnavailableDecoder:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg-libjpeg"]

    monkeypatch.setattr(dicom_reader, "_decoder_for", lambda transfer_syntax: _UnavailableDecoder())
    path = pydicom_test_file("SC_rgb_jpeg_dcmtk.dcm")
    with pytest.raises(MissingDecoderError) as caught:
        read_image(path)
    _assert_one_line_error(caught.value, path.name)
    assert "JPEG Baseline (Process 1)" in str(caught.value)
    assert "pylibjpeg-libjpeg" in str(caught.value)

    monkeypatch.setattr(dicom_reader, "_decoder_for", lambda transfer_syntax: None)
    with pytest.raises(UnsupportedImageError, match="has no pixel decoder"):
        read_image(path)


# ----------------------------------------------------------------------------------------------- DICOM series


def _series_files(positions: list[float], *, with_geometry: bool = True) -> list[tuple[str, bytes]]:
    files = []
    for number, z in enumerate(positions, start=1):
        pixels = np.full((6, 5), int(z), dtype=np.int16)
        data = dicom_bytes(
            pixels,
            position=(0.0, 0.0, z) if with_geometry else None,
            instance_number=int(z) if not with_geometry else number,
            series_uid="1.2.826.0.1.3680043.8.498.4242",
        )
        files.append((f"series/slice{number:02d}.dcm", data))
    return files


def test_dicom_series_is_sorted_along_the_slice_normal() -> None:
    positions = [10.0, 0.0, 40.0, 20.0, 30.0]
    image = read_dicom_series(_series_files(positions))
    assert image.format == "dicom-series" and image.name == "series"
    assert image.pixels.shape == (5, 6, 5)
    np.testing.assert_array_equal(image.pixels[:, 0, 0], sorted(positions))
    assert image.metadata["sorted_by"] == "ImagePositionPatient"
    assert image.metadata["slice_spacing"] == pytest.approx(10.0)
    assert image.metadata["files"][0] == "series/slice02.dcm"


def test_dicom_series_falls_back_to_instance_number_and_reads_paths(tmp_path: Path) -> None:
    files = _series_files([3.0, 1.0, 2.0], with_geometry=False)
    paths = []
    for name, data in files:
        path = tmp_path / Path(name).name
        path.write_bytes(data)
        paths.append(path)
    image = read_dicom_series(paths)
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [1, 2, 3])
    assert image.metadata["sorted_by"] == "InstanceNumber"


def test_dicom_series_refuses_mixed_sizes_multi_frame_and_non_dicom() -> None:
    files = _series_files([0.0, 1.0])
    files.append(("series/odd.dcm", dicom_bytes(np.zeros((7, 5), np.int16), position=(0, 0, 2))))
    with pytest.raises(UnreadableImageError) as caught:
        read_dicom_series(files)
    _assert_one_line_error(caught.value, "series/odd.dcm")
    assert "7x5 pixels, unlike series/slice01.dcm (6x5)" in str(caught.value)

    multi = ("multi.dcm", dicom_bytes(np.zeros((2, 6, 5), np.int16)))
    with pytest.raises(UnsupportedImageError, match=r"^multi.dcm: multi-frame DICOM \(2 frames\)"):
        read_dicom_series([*_series_files([0.0]), multi])
    with pytest.raises(UnreadableImageError, match=r"^notes.txt: not a DICOM file"):
        read_dicom_series([*_series_files([0.0]), ("notes.txt", b"hello")])
    with pytest.raises(UnreadableImageError, match="no files"):
        read_dicom_series([])
    with pytest.raises(ImageTooLargeError, match="^series: 3 slices of 6x5 = 90 pixels, over the cap of 60"):
        read_dicom_series(_series_files([0.0, 1.0, 2.0]), max_pixels=60)


def test_read_images_groups_series_and_reports_bad_files_without_raising() -> None:
    series = _series_files([5.0, 0.0, 10.0, 15.0])
    truncated = ("series/slice99.dcm", series.pop()[1][:-40])
    duplicate = ("copy/slice01.dcm", series[0][1])
    other = ("other.dcm", dicom_bytes(np.zeros((4, 4), np.uint16)))
    sources = [
        series[0],
        ("picture.png", png_bytes(np.zeros((3, 4), np.uint8))),
        ("broken.bin", b"\x00\x01garbage"),
        series[1],
        truncated,
        other,
        ("empty.png", b""),
        series[2],
        duplicate,
    ]
    images, errors = read_images(sources)
    assert [image.name for image in images] == ["series", "picture.png", "other.dcm"]
    assert images[0].format == "dicom-series"
    np.testing.assert_array_equal(images[0].pixels[:, 0, 0], [0, 5, 10])
    assert images[0].metadata["files"] == ["series/slice02.dcm", "series/slice01.dcm", "series/slice03.dcm"]
    reported = dict(errors)
    assert set(reported) == {"broken.bin", "series/slice99.dcm", "empty.png", "copy/slice01.dcm"}
    assert reported["empty.png"] == "empty.png: the file is empty"
    assert reported["copy/slice01.dcm"] == (
        "copy/slice01.dcm: the same image as series/slice01.dcm (same SOP Instance UID); left out"
    )
    assert "truncated DICOM" in reported["series/slice99.dcm"]
    for name, reason in errors:
        assert reason.startswith(f"{name}: ") and "\n" not in reason
    for image in images:
        text = json.dumps(image.metadata)
        assert "1.2.826.0.1.3680043.8.498.4242" not in text  # the grouping UID stays internal


def test_read_images_reports_a_series_that_cannot_be_stacked_under_the_series_name() -> None:
    odd = dicom_bytes(
        np.zeros((6, 5), np.int16),
        photometric="HSV",
        position=(0.0, 0.0, 3.0),
        series_uid="1.2.826.0.1.3680043.8.498.4242",
    )
    images, errors = read_images([*_series_files([0.0, 1.0, 2.0]), ("series/slice04.dcm", odd)])
    assert images == []
    assert errors == [
        ("series", "series: series/slice04.dcm: DICOM photometric interpretation 'HSV' is not supported")
    ]


def test_read_images_parses_a_dicom_outside_a_series_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    calls = []
    real_dcmread = pydicom.dcmread

    def counting_dcmread(*args, **kwargs):
        calls.append(kwargs.get("stop_before_pixels", False))
        return real_dcmread(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting_dcmread)
    multi_frame = dicom_bytes(np.arange(2 * 6 * 5, dtype=np.int16).reshape(2, 6, 5))  # never in a series
    images, errors = read_images([("multi.dcm", multi_frame), *_series_files([0.0, 1.0])])
    assert not errors and [image.format for image in images] == ["dicom", "dicom-series"]
    assert images[0].n_slices == 2
    assert len(calls) == 3  # one parse per file: the grouping parse is the one the image is decoded from

    calls.clear()
    broken = multi_frame[:200]  # "DICM" at 128, then a header cut short
    images, errors = read_images([("broken.dcm", broken)])
    with pytest.raises(UnreadableImageError) as caught:
        read_image(broken, name="broken.dcm")
    assert images == [] and errors == [("broken.dcm", str(caught.value))]
    assert len(calls) == 2  # once in read_images, once in read_image


def test_read_images_reads_paths(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(np.ones((2, 2), np.uint8)))
    images, errors = read_images([tmp_path / "a.png", tmp_path / "missing.png"])
    assert [image.name for image in images] == ["a.png"]
    assert errors == [("missing.png", "missing.png: no such file")]


# ------------------------------------------------------------------------------------------- de-identification


def test_metadata_never_contains_identifiers_unless_asked() -> None:
    data = dicom_bytes()
    text = json.dumps(read_image(data, name="scan.dcm").metadata)
    for secret in IDENTIFYING_STRINGS:
        assert secret not in text, secret
    series_text = json.dumps(read_dicom_series(_series_files([0.0, 1.0])).metadata)
    for secret in IDENTIFYING_STRINGS:
        assert secret not in series_text, secret

    revealed = read_image(data, name="scan.dcm", include_identifiers=True).metadata
    identifiers = revealed["identifiers"]
    assert identifiers["PatientName"] == "Doe^Jane"
    assert identifiers["PatientID"] == "ID-12345"
    assert identifiers["InstitutionName"] == "St Example Hospital"
    assert identifiers["AccessionNumber"] == "ACC-777"
    assert identifiers["PatientBirthDate"] == "19700101"
    assert identifiers["(0009,1010)"] == "private secret"
    assert "StudyInstanceUID" in identifiers
    assert deidentify(revealed) == read_image(data, name="scan.dcm").metadata


def test_deidentify_drops_identifying_keys_in_any_spelling_and_depth() -> None:
    metadata = {
        "modality": "MR",
        "PatientName": "x",
        "patient_id": "x",
        "Patient Birth Date": "x",
        "accession_number": "x",
        "institution_name": "x",
        "study_time": "x",
        "AcquisitionDateTime": "x",
        "SeriesInstanceUID": "x",
        "sop_class_uid": "kept",
        "(0010,0010)": "x",
        "00100020": "x",
        "(0029,1010)": "x",
        "nested": {"OperatorsName": "x", "echo_time": 12.0, "items": [{"StationName": "x", "rows": 3}]},
        "identifiers": {"anything": "x"},
        "window_center": 40.0,
    }
    assert deidentify(metadata) == {
        "modality": "MR",
        "sop_class_uid": "kept",
        "nested": {"echo_time": 12.0, "items": [{"rows": 3}]},
        "window_center": 40.0,
    }
    assert metadata["PatientName"] == "x"  # the input is left alone


# ------------------------------------------------------------------------------------------------------- NIfTI


def _marker_volume() -> np.ndarray:
    """RAS volume (x=4, y=5, z=6) with a marker at the patient's right (x=3), anterior (y=4), slice z=1."""
    volume = np.zeros((4, 5, 6), dtype=np.int16)
    volume[3, 4, 1] = 100
    volume[0, 0, 5] = 7  # left, posterior, superior
    return volume


@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
@pytest.mark.parametrize("from_path", [False, True], ids=["bytes", "path"])
def test_nifti_round_trip_with_every_slice_axis(tmp_path: Path, compress: bool, from_path: bool) -> None:
    volume = _marker_volume()
    data = nifti_bytes(volume, affine=np.diag([0.5, 0.7, 2.0, 1.0]), compress=compress)
    source: Path | bytes = data
    if from_path:
        source = tmp_path / "brain"  # no extension: detected by content
        source.write_bytes(data)
    expected_shapes = {"axial": (6, 5, 4), "coronal": (5, 6, 4), "sagittal": (4, 6, 5)}
    for axis, shape in expected_shapes.items():
        image = read_image(source, name="brain", slice_axis=axis)
        assert image.format == "nifti" and image.pixels.shape == shape
        assert image.metadata["slice_axis"] == axis and image.metadata["orientation"] == "RAS"
        assert image.pixels.sum() == volume.sum()
    axial = read_image(source, name="brain")
    assert axial.pixels[1, 0, 0] == 100  # anterior at the top, patient's right on the image left
    assert axial.pixels[5, -1, -1] == 7
    assert axial.spacing == pytest.approx((0.7, 0.5))  # (between rows = y, between columns = x)
    coronal = read_image(source, name="brain", slice_axis="coronal")
    assert coronal.pixels[4, -2, 0] == 100  # slice y=4; superior at the top (z=1 is row 4 of 6)
    sagittal = read_image(source, name="brain", slice_axis="sagittal")
    assert sagittal.pixels[3, -2, 0] == 100  # slice x=3; anterior on the image left


def test_nifti_axial_slices_do_not_depend_on_the_stored_axis_order() -> None:
    volume = np.random.default_rng(1).integers(0, 1000, (4, 5, 6)).astype(np.float32)
    ras = read_image(nifti_bytes(volume), name="ras.nii")
    las_affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    las_affine[0, 3] = 3.0
    las = read_image(nifti_bytes(volume[::-1], affine=las_affine), name="las.nii")
    assert las.metadata["orientation"] == "LAS"
    np.testing.assert_array_equal(las.pixels, ras.pixels)
    permuted_affine = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    permuted = read_image(nifti_bytes(volume.transpose(2, 1, 0), affine=permuted_affine), name="sar.nii")
    assert permuted.metadata["orientation"] == "SAR"
    np.testing.assert_array_equal(permuted.pixels, ras.pixels)


def test_nifti_4d_2d_scaling_nan_and_nifti2() -> None:
    four = read_image(
        nifti_bytes(np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3)), name="4d.nii"
    )
    assert four.pixels.shape == (4, 3, 2) and "kept the first of 3 volumes" in four.metadata["applied"]
    flat = read_image(nifti_bytes(np.ones((4, 5), np.uint8)), name="2d.nii", slice_axis="sagittal")
    assert flat.pixels.shape == (1, 5, 4) and flat.metadata["slice_axis"] == "axial"

    import nibabel

    scaled = nibabel.Nifti1Image(np.full((2, 2, 2), 10, np.int16), np.eye(4))
    scaled.header.set_slope_inter(0.5, 3.0)
    image = read_image(scaled.to_bytes(), name="scaled.nii")
    np.testing.assert_array_equal(image.pixels, np.full((2, 2, 2), 8.0))
    holes = np.ones((3, 3, 2), np.float32)
    holes[0, 0, 0], holes[1, 1, 1] = np.nan, np.inf
    cleaned = read_image(nifti_bytes(holes), name="holes.nii")
    assert np.isfinite(cleaned.pixels).all() and cleaned.pixels.sum() == holes.size - 2
    assert "replaced 2 NaN/infinite value(s) by 0" in cleaned.metadata["applied"]
    second = read_image(nifti_bytes(_marker_volume(), version=2), name="v2.nii")
    assert second.metadata["nifti_version"] == 2 and second.pixels[1, 0, 0] == 100
    assert read_image(nifti_bytes(_marker_volume()), name="x", frames=[1]).pixels.shape == (1, 5, 4)


def test_nifti_pair_header_and_bad_slice_axis_are_refused() -> None:
    header = bytearray(nifti_bytes(np.zeros((2, 2, 2), np.uint8))[:348])
    header[344:348] = b"ni1\x00"
    with pytest.raises(UnsupportedImageError, match=r"^brain.hdr: NIfTI header of a .hdr/.img pair"):
        read_image(bytes(header), name="brain.hdr")
    with pytest.raises(ValueError, match="Did you mean 'axial'"):
        read_image(nifti_bytes(np.zeros((2, 2, 2), np.uint8)), slice_axis="axail")


# ----------------------------------------------------------------------------------------------------- Pillow


def test_sixteen_bit_png_round_trip_is_exact() -> None:
    values = np.random.default_rng(2).integers(0, 65536, (17, 23), dtype=np.uint16)
    values[0, 0], values[-1, -1] = 0, 65535
    image = read_image(png_bytes(values), name="ct.png")
    assert image.format == "png" and image.metadata["mode"].startswith("I;16")
    np.testing.assert_array_equal(image.pixels[0], values.astype(np.float32))
    assert image.metadata["converted_to_grayscale"] is False and image.default_window is None


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "CMYK"])
def test_colour_images_become_luminance_and_are_flagged(mode: str) -> None:
    from PIL import Image as PillowImage

    rgb = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    picture = PillowImage.fromarray(rgb).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if mode == "CMYK" else "PNG")
    image = read_image(buffer.getvalue(), name=f"colour.{mode}")
    assert image.pixels.shape == (1, 9, 11)
    assert image.metadata["converted_to_grayscale"] is True
    if mode == "RGB":
        expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        np.testing.assert_allclose(image.pixels[0], expected, rtol=1e-5)


def test_gray_formats_bmp_jpeg_gif_and_float_tiff() -> None:
    from PIL import Image as PillowImage

    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for kind in ("BMP", "GIF", "JPEG", "WEBP"):
        buffer = io.BytesIO()
        PillowImage.fromarray(gray).save(buffer, format=kind)
        image = read_image(buffer.getvalue(), name=f"gray.{kind.lower()}")
        assert image.format == kind.lower() and image.pixels.shape == (1, 8, 8)
        if kind in ("BMP", "GIF"):
            np.testing.assert_array_equal(image.pixels[0], gray)
    floats = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    buffer = io.BytesIO()
    PillowImage.fromarray(floats).save(buffer, format="TIFF")
    np.testing.assert_array_equal(read_image(buffer.getvalue(), name="f.tif").pixels[0], floats)


def test_multi_page_tiff_gives_frames_and_frame_selection() -> None:
    pages = [np.full((5, 6), value, dtype=np.uint16) for value in (100, 2000, 30000)]
    data = tiff_pages_bytes(pages)
    image = read_image(data, name="stack.tif")
    assert image.format == "tiff" and image.pixels.shape == (3, 5, 6)
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [100, 2000, 30000])
    np.testing.assert_array_equal(
        read_image(data, name="stack.tif", frames=[2, 0]).pixels[:, 0, 0], [30000, 100]
    )
    mixed = tiff_pages_bytes([np.zeros((5, 6), np.uint8), np.zeros((3, 3), np.uint8)])
    with pytest.raises(UnsupportedImageError, match=r"^mixed.tif: TIFF pages have different sizes"):
        read_image(mixed, name="mixed.tif")
    assert read_image(mixed, name="mixed.tif", frames=[1]).pixels.shape == (1, 3, 3)


# ------------------------------------------------------------------------------------------- caps and bad input


def _gzip_stream(*parts: bytes, repeat_zeros_mib: int = 0) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunks = [compressor.compress(part) for part in parts]
    zeros = bytes(1 << 20)
    chunks.extend(compressor.compress(zeros) for _ in range(repeat_zeros_mib))
    chunks.append(compressor.flush())
    return b"".join(chunks)


def _nifti_header_declaring(shape: tuple[int, ...]) -> bytes:
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    return header.binaryblock + bytes(4)


def _truncated_ct() -> bytes:
    data = pydicom_test_file("CT_small.dcm").read_bytes()
    return data[: len(data) - 20000]


BAD_INPUTS = {
    "random": (
        "scan.bin",
        lambda: random.Random(0).randbytes(5000),
        UnreadableImageError,
        "not a DICOM, NIfTI",
    ),
    "empty": ("empty.png", lambda: b"", UnreadableImageError, "the file is empty"),
    "text": ("notes.txt", lambda: b"Patient is fine.\n" * 50, UnreadableImageError, "first bytes 50617469"),
    "truncated DICOM": (
        "ct.dcm",
        _truncated_ct,
        UnreadableImageError,
        "truncated DICOM (pixel data ends after",
    ),
    "huge PNG": ("huge.png", lambda: png_header_only(100000, 100000), ImageTooLargeError, "too many pixels"),
    "truncated PNG": (
        "cut.png",
        lambda: png_bytes(np.zeros((64, 64), np.uint8))[:-30],
        UnreadableImageError,
        "truncated or corrupt PNG",
    ),
    "gzip of zeros as .nii.gz": (
        "bomb.nii.gz",
        lambda: _gzip_stream(repeat_zeros_mib=64),
        UnreadableImageError,
        "inside the gzip stream",
    ),
    "gzip NIfTI bomb": (
        "bomb2.nii.gz",
        lambda: _gzip_stream(_nifti_header_declaring((4096, 4096, 4096)), repeat_zeros_mib=64),
        ImageTooLargeError,
        "NIfTI declares a 4096x4096x4096 volume",
    ),
    "truncated NIfTI": (
        "cut.nii",
        lambda: nifti_bytes(np.zeros((8, 8, 8), np.int16))[:-100],
        UnreadableImageError,
        "truncated NIfTI",
    ),
    "ZIP": ("batch.zip", lambda: b"PK\x03\x04" + bytes(40), UnsupportedImageError, "a ZIP archive"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_inputs_fail_fast_with_a_one_line_message(case: str) -> None:
    name, build, error, reason = BAD_INPUTS[case]
    data = build()
    started = time.perf_counter()
    with pytest.raises(error) as caught:
        read_image(data, name=name)
    assert time.perf_counter() - started < 1.0
    _assert_one_line_error(caught.value, name)
    assert reason in str(caught.value)


@pytest.mark.filterwarnings("ignore")
def test_decoder_panic_becomes_a_library_error() -> None:
    # Found by the fuzz tests: this byte makes pylibjpeg-rle panic, and pyo3's PanicException is a
    # BaseException, not an Exception.
    data = bytearray(pydicom_test_file("MR_small_RLE.dcm").read_bytes())
    data[6019] = 149
    with pytest.raises(UnreadableImageError) as caught:
        read_image(bytes(data), name="rle.dcm")
    _assert_one_line_error(caught.value, "rle.dcm")
    assert "cannot decode the RLE Lossless pixel data (PanicException" in str(caught.value)


@pytest.mark.filterwarnings("ignore")
def test_header_values_quoted_in_messages_stay_on_one_line() -> None:
    # Found by the fuzz tests: a newline inside the Transfer Syntax UID ended up in the message.
    data = dicom_bytes()
    at = data.index(b"1.2.840.10008.1.2.1\x00")
    broken = data[: at + 1] + b"\n" + data[at + 2 :]
    with pytest.raises(UnsupportedImageError) as caught:
        read_image(broken, name="uid.dcm")
    _assert_one_line_error(caught.value, "uid.dcm")


def test_gzip_dicom_bomb_stops_at_the_size_cap() -> None:
    data = _gzip_stream(bytes(128) + b"DICM", repeat_zeros_mib=80)
    with pytest.raises(ImageTooLargeError, match=r"^bomb.dcm.gz: the gzip stream expands beyond"):
        read_image(data, name="bomb.dcm.gz", max_pixels=1000)


def test_deflated_dicom_bomb_is_refused_before_pydicom_inflates_it() -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    buffer = io.BytesIO()
    buffer.write(bytes(128) + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(80)) + compressor.flush()
    with pytest.raises(ImageTooLargeError, match=r"^deflated.dcm: the deflated DICOM dataset expands beyond"):
        read_image(buffer.getvalue() + body, name="deflated.dcm", max_pixels=1000)


def test_pixel_cap_applies_before_decoding_and_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = dicom_bytes(np.zeros((3, 10, 10), np.uint16))
    with pytest.raises(
        ImageTooLargeError, match=r"^big.dcm: DICOM declares 3 frame\(s\) of 10x10 = 300 pixels"
    ):
        read_image(data, name="big.dcm", max_pixels=299)
    assert read_image(data, name="big.dcm", max_pixels=299, frames=[0]).n_slices == 1
    monkeypatch.setenv("AE4AD_MAX_PIXELS", "250")
    with pytest.raises(ImageTooLargeError, match="over the cap of 250"):
        read_image(data, name="big.dcm")
    with pytest.raises(ImageTooLargeError, match=r"^v.nii: NIfTI declares a 8x8x8 volume"):
        read_image(nifti_bytes(np.zeros((8, 8, 8), np.uint8)), name="v.nii")
    with pytest.raises(ImageTooLargeError, match=r"^p.png: PNG declares 1 frame\(s\) of 20x20 = 400 pixels"):
        read_image(png_bytes(np.zeros((20, 20), np.uint8)), name="p.png")
    monkeypatch.setenv("AE4AD_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="AE4AD_MAX_PIXELS must be a positive integer"):
        read_image(data)
    monkeypatch.delenv("AE4AD_MAX_PIXELS")
    assert DEFAULT_MAX_PIXELS == 256 * 1024 * 1024
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        read_image(data, max_pixels=0)


def test_paths_that_are_missing_or_folders(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match=r"^nothing.dcm: no such file$"):
        read_image(tmp_path / "nothing.dcm")
    with pytest.raises(UnreadableImageError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(TypeError, match="path or bytes"):
        read_image(12345)  # type: ignore[arg-type]


def test_gzip_is_read_by_content_and_names_with_newlines_stay_one_line() -> None:
    png = png_bytes(np.full((3, 3), 9, np.uint8))
    image = read_image(gzip.compress(png), name="picture.png.gz")
    assert image.format == "png" and "decompressed gzip" in image.metadata["applied"]
    with pytest.raises(UnreadableImageError) as caught:
        read_image(b"junk", name="evil\nname")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("evil name: ")


def test_image_validates_its_pixels_and_slices_clearly() -> None:
    image = Image(pixels=np.zeros((2, 3, 4), np.float32), name="x", format="png")
    assert image.n_slices == 2 and image.slice(-1).shape == (3, 4)
    assert image.metadata == {} and image.default_window is None and image.spacing is None
    with pytest.raises(IndexError, match=r"^x: slice index 2 is out of range; the image has 2 slice"):
        image.slice(2)
    with pytest.raises(ValueError, match="float32"):
        Image(pixels=np.zeros((3, 4), np.float32), name="x", format="png")
    with pytest.raises(ValueError, match="float32"):
        Image(pixels=np.zeros((1, 3, 4), np.float64), name="x", format="png")
    assert ".nii.gz" in SUPPORTED_EXTENSIONS and ".dcm" in SUPPORTED_EXTENSIONS


def test_struct_packing_of_the_crafted_png_header_is_valid() -> None:
    data = png_header_only(100000, 100000)
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (100000, 100000)
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]


# ------------------------------------------------------------------------------------------ pixels-only reads


def _old_modality_lut(values: np.ndarray, slope: float, intercept: float, photometric: str, info) -> np.ndarray:
    """The conversion before it was done in place: float64 arithmetic, one rounding to float32."""
    frame = np.asarray(values.astype(np.float64) * slope + intercept, dtype=np.float32)
    if photometric == "MONOCHROME1":  # v -> low + high - v over the stored range through the Modality LUT
        low, high = float(info.min) * slope + intercept, float(info.max) * slope + intercept
        frame = np.float32(low + high) - frame
    return frame


@pytest.mark.parametrize("metadata", ["full", "minimal"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize(
    "dtype, slope, intercept",
    [
        (np.int16, 1.0, -1024.0),  # CT: the float32 fast path
        (np.uint16, 1.0, -1024.0),
        (np.uint8, 1.0, 7.0),
        (np.int16, 0.5, -1024.0),
        (np.uint16, 1.0, -1024.25),
        (np.uint16, 2.5, 3.3),
        (np.int16, -1.0, 0.0),
    ],
)
def test_rescaled_pixels_are_bit_identical_to_float64_arithmetic(dtype, slope, intercept, photometric, metadata):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    stored = rng.integers(info.min, info.max, (2, 9, 7), endpoint=True).astype(dtype)
    image = read_image(
        dicom_bytes(stored, rescale=(slope, intercept), photometric=photometric), metadata=metadata
    )
    expected = np.stack([_old_modality_lut(frame, slope, intercept, photometric, info) for frame in stored])
    assert image.pixels.dtype == np.float32
    assert np.array_equal(image.pixels.view(np.uint32), expected.view(np.uint32))


@pytest.mark.filterwarnings("ignore")
def test_minimal_metadata_reads_the_same_pixels_and_errors_as_full() -> None:
    for path in PYDICOM_TEST_FILES:
        try:
            full = read_image(path)
        except Ae4adError as error:
            with pytest.raises(type(error)) as minimal_error:
                read_image(path, metadata="minimal")
            assert str(minimal_error.value) == str(error)
            continue
        minimal = read_image(path, metadata="minimal")
        assert np.array_equal(minimal.pixels, full.pixels, equal_nan=True), path.name
        assert minimal.default_window == full.default_window
        assert minimal.metadata["applied"] == full.metadata["applied"]
        if full.format == "dicom":
            assert set(minimal.metadata) == {"format", "applied"}
            assert minimal.spacing is None


def test_minimal_metadata_holds_no_header_field_and_keeps_one_line_errors() -> None:
    image = read_image(dicom_bytes(rescale=(1.0, -1024.0), window=(40.0, 400.0)), metadata="minimal")
    applied = ["applied the Modality LUT (rescale slope 1 intercept -1024)"]
    assert image.metadata == {"format": "dicom", "applied": applied}
    assert image.default_window == (40.0, 400.0)
    text = json.dumps(image.metadata)
    assert not any(secret in text for secret in IDENTIFYING_STRINGS)
    with pytest.raises(UnreadableImageError) as error:
        read_image(dicom_bytes()[:-40], name="cut.dcm", metadata="minimal")
    _assert_one_line_error(error.value, "cut.dcm")
    with pytest.raises(ValueError, match="metadata level"):
        read_image(dicom_bytes(), metadata="none")
