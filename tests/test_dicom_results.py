"""DICOM results (``ae4ad score --dicom``, :mod:`ae4ad_core.dicom_results`): a Parametric Map and a
Segmentation per scored DICOM image or series, valid by ``dciodvfy`` (dicom3tools), in the source's study and
frame of reference, referencing the source instances, carrying the map values, and holding the patient's
identifiers only when asked for."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ae4ad_core.analysis import analyze, analyze_image
from ae4ad_core.cli import main
from ae4ad_core.dicom_results import (
    DICOM_INPUT_NEEDED,
    build_dicom_results,
    dicom_results_for_uploads,
    dicom_results_zip,
    read_source_datasets,
    write_dicom_results,
)
from ae4ad_core.errors import UnsupportedImageError
from ae4ad_core.io import read_dicom_series, read_image, read_images

pytestmark = pytest.mark.usefixtures("single_thread")

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "AE4AD-TEST-7731"
MR_SMALL = get_testdata_file("MR_small.dcm")


def synthetic_mr_series(folder: Path, *, n: int = 4, size: int = 48, seed: int = 0) -> list[Path]:
    """``n`` single-frame MR slices of one series written to ``folder``. File names run opposite to the slice
    positions (``slice0`` is the most superior), so name order is not slice order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    body = ((xx / 0.8) ** 2 + (yy / 0.7) ** 2 <= 1).astype(float)
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = study
        ds.StudyDate, ds.StudyTime = "20250102", "101500"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 3
        ds.Manufacturer = "Synthetic"
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 20, 500, 1
        ds.MagneticFieldStrength = 1.5
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [-60.0, -60.0, 10.0 * (n - k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [2.5, 2.5]
        ds.SliceThickness = 5.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = 900 * body * (0.8 + 0.2 * rng.random((size, size)))
        if k == 1:
            pixels[20:28, 18:26] += 1500  # a bright "lesion"
        ds.PixelData = np.clip(pixels, 0, 4095).astype(np.uint16).tobytes()
        path = folder / f"slice{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of ``dciodvfy`` output starting with "Error" (violations of the standard)."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is missing; CI installs it with 'make browser-deps'")
        pytest.skip("dciodvfy missing: apt-get install dicom3tools")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def source_of_frame(dataset, frame: int) -> str:
    """SOP Instance UID of the source image a frame of a derived multi-frame object was made from."""
    item = dataset.PerFrameFunctionalGroupsSequence[frame].DerivationImageSequence[0]
    return str(item.SourceImageSequence[0].ReferencedSOPInstanceUID)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("series") / "mr-series"
    synthetic_mr_series(folder)
    return folder


def score_dicom(source: Path, model_dir: Path, out: Path, *extra: str) -> int:
    return main(["score", str(source), "--model", str(model_dir), "--out", str(out), "--device", "cpu", *extra])


@pytest.mark.parametrize(
    ("which", "kind", "mode"),
    [("series", "ae", "reconstruction"), ("mr_small", "ae", "reconstruction"), ("mr_small", "vae", "kl"),
     ("series", "vae", "combined")],
)
def test_score_dicom_writes_valid_objects_in_the_source_study(which, kind, mode, series_dir, tmp_path, request):
    model_dir = request.getfixturevalue(f"tiny_{kind}_dir")
    model = request.getfixturevalue(kind)
    source = series_dir if which == "series" else Path(MR_SMALL)
    out = tmp_path / "out"
    assert score_dicom(source, model_dir, out, "--dicom", "--mode", mode) == 0
    maps = sorted(out.glob("*_map.dcm"))
    segs = sorted(out.glob("*_seg.dcm"))
    assert len(maps) == len(segs) == 1
    files = sorted(series_dir.iterdir()) if which == "series" else [source]
    sources = read_source_datasets(files)
    image = read_dicom_series(files) if which == "series" else read_image(source)
    expected = analyze_image(image, model, mode=mode).analysis  # the CLI's path: brain extraction first
    for path in (maps[0], segs[0]):
        assert dciodvfy_errors(path) == []
        obj = pydicom.dcmread(path)
        assert obj.StudyInstanceUID == sources[0].StudyInstanceUID
        assert obj.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
        assert obj.SeriesInstanceUID != sources[0].SeriesInstanceUID
        ref = obj.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == sources[0].SeriesInstanceUID
        assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == {
            s.SOPInstanceUID for s in sources
        }
        assert str(obj.PatientName) == str(sources[0].PatientName)
        assert obj.PatientID == sources[0].PatientID
    pm = pydicom.dcmread(maps[0])
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == model.name
    assert model.name in mapping.LUTExplanation and mode in mapping.LUTExplanation
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    values = pm.pixel_array.reshape(-1, int(pm.Rows), int(pm.Columns))
    position_of = {s.SOPInstanceUID: i for i, s in enumerate(sources)}
    assert len(values) == len(sources)
    for frame in range(len(values)):
        i = position_of[source_of_frame(pm, frame)]
        np.testing.assert_allclose(values[frame], expected.map_in_input_space(i), rtol=1e-6, atol=1e-7)
    seg = pydicom.dcmread(segs[0])
    assert seg.SegmentationType == "BINARY"
    assert seg.SegmentSequence[0].SegmentAlgorithmName == model.name
    masks = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    for frame in range(len(masks)):
        i = position_of[source_of_frame(seg, frame)]
        np.testing.assert_array_equal(masks[frame].astype(bool), expected.outline_in_input_space(i))


def test_identifiers_only_in_the_dicom_objects_and_only_when_asked(series_dir, tiny_ae_dir, tmp_path):
    identifiers = (PATIENT_NAME.encode(), PATIENT_ID.encode(), b"Doe", b"19700101")
    plain, asked = tmp_path / "plain", tmp_path / "asked"
    assert score_dicom(series_dir, tiny_ae_dir, plain) == 0
    assert score_dicom(series_dir, tiny_ae_dir, asked, "--dicom") == 0
    assert not list(plain.glob("*.dcm"))
    written = {p.name for p in asked.iterdir()}
    assert {p.name for p in plain.iterdir()} == {n for n in written if not n.endswith(".dcm")}
    for folder in (plain, asked):
        for path in folder.iterdir():
            data = path.read_bytes()
            carries = any(marker in data for marker in identifiers)
            assert carries == path.name.endswith(".dcm"), path.name
    payload = json.loads(next(asked.glob("*.json")).read_text())
    assert sorted(payload["dicom"]) == sorted(n for n in written if n.endswith(".dcm"))


def test_series_files_in_slice_order(series_dir):
    files = sorted(series_dir.iterdir())
    image = read_dicom_series(files)
    datasets = read_source_datasets(list(reversed(files)), image=image)
    unordered = read_source_datasets(files[::2] + files[1::2])  # the reader's rule without the image
    assert [d.SOPInstanceUID for d in datasets] == [d.SOPInstanceUID for d in unordered]
    for i, dataset in enumerate(datasets):
        np.testing.assert_array_equal(dataset.pixel_array.astype(np.float32), image.pixels[i])
    positions = [float(d.ImagePositionPatient[2]) for d in datasets]
    assert positions == sorted(positions)


def test_two_dimensional_input_gets_one_clear_line(tiny_ae_dir, tmp_path, capsys):
    from PIL import Image as PILImage

    png = tmp_path / "slice.png"
    PILImage.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(png)
    assert score_dicom(png, tiny_ae_dir, tmp_path / "out", "--dicom") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and DICOM_INPUT_NEEDED in err and err.startswith("error: slice.png")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.dcm"))


def test_dicom_needs_an_output_folder(series_dir, tiny_ae_dir, capsys):
    assert main(["score", str(series_dir), "--model", str(tiny_ae_dir), "--dicom"]) == 2
    assert "--out" in capsys.readouterr().err


def test_zip_from_uploaded_bytes(series_dir, ae):
    uploads = [(p.name, p.read_bytes()) for p in sorted(series_dir.iterdir())]
    image = read_dicom_series(uploads)
    analysis = analyze(image.pixels, ae)
    data = dicom_results_zip(uploads, analysis, image=image, stem="mr")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        assert names == ["mr_reconstruction_map.dcm", "mr_reconstruction_seg.dcm"]
        pm = pydicom.dcmread(io.BytesIO(archive.read(names[0])))
    assert pm.StudyInstanceUID == pydicom.dcmread(io.BytesIO(uploads[0][1])).StudyInstanceUID
    with pytest.raises(UnsupportedImageError, match="DICOM results need a DICOM input"):
        dicom_results_zip(uploads, analysis, image=dataclasses.replace(image, format="png"))


def test_partial_slices_and_an_empty_region(series_dir, ae, tmp_path):
    files = sorted(series_dir.iterdir())
    image = read_dicom_series(files)
    datasets = read_source_datasets(files, image=image)
    chunks = [analyze(image.pixels, ae, slice_indices=[3]), analyze(image.pixels, ae, slice_indices=[1])]
    nothing = [dataclasses.replace(c, pixel_threshold=float("inf")) for c in chunks]
    paths = write_dicom_results(datasets, nothing, tmp_path, stem="part")
    pm = pydicom.dcmread(paths[0])
    assert int(pm.NumberOfFrames) == 2
    assert {source_of_frame(pm, f) for f in range(2)} == {datasets[1].SOPInstanceUID, datasets[3].SOPInstanceUID}
    for path in paths:
        assert dciodvfy_errors(path) == []
    results = build_dicom_results(datasets, chunks)
    assert results.segmentation.SeriesNumber == results.parametric_map.SeriesNumber + 1


def test_download_for_the_analyze_page_from_a_zip_upload(series_dir, ae):
    from PIL import Image as PILImage

    from ae4ad_core.archive import expand_uploads

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(series_dir.iterdir()):
            archive.writestr(f"exam/{path.name}", path.read_bytes())
    png = io.BytesIO()
    PILImage.fromarray(np.zeros((16, 16), np.uint8)).save(png, format="PNG")
    uploads = [("exam.zip", buffer.getvalue()), ("photo.png", png.getvalue())]
    images, errors = read_images(expand_uploads(uploads)[0])
    assert not errors and [i.format for i in images] == ["dicom-series", "png"]
    series = images[0]
    name, data = dicom_results_for_uploads(uploads, series, analyze(series.pixels, ae))
    assert name == "exam_dicom_results.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        maps = [n for n in archive.namelist() if n.endswith("_map.dcm")]
        pm = pydicom.dcmread(io.BytesIO(archive.read(maps[0])))
    assert int(pm.NumberOfFrames) == series.n_slices
    with pytest.raises(UnsupportedImageError, match="DICOM results need a DICOM input"):
        dicom_results_for_uploads(uploads, images[1], analyze(images[1].pixels, ae))


def test_a_source_highdicom_refuses_gets_one_line(tmp_path, tiny_ae_dir, capsys):
    """A multi-frame file without per-frame geometry (frames stacked into a single-frame IOD)."""
    source = synthetic_mr_series(tmp_path / "one", n=1)[0]
    dataset = pydicom.dcmread(source)
    dataset.NumberOfFrames = 3
    dataset.PixelData = dataset.PixelData * 3
    dataset.save_as(tmp_path / "frames.dcm")
    assert score_dicom(tmp_path / "frames.dcm", tiny_ae_dir, tmp_path / "out", "--dicom") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DICOM results cannot be made") and err.count("\n") == 1
    assert score_dicom(tmp_path / "frames.dcm", tiny_ae_dir, tmp_path / "out", "--dicom", "--slices", "1") == 2
    assert "need every frame scored" in capsys.readouterr().err


def test_a_folder_of_two_series_is_refused(tmp_path, tiny_ae_dir, capsys):
    synthetic_mr_series(tmp_path / "mixed", n=2, seed=1)
    for path in synthetic_mr_series(tmp_path / "other", n=2, seed=2):
        path.rename(tmp_path / "mixed" / f"other-{path.name}")
    assert score_dicom(tmp_path / "mixed", tiny_ae_dir, tmp_path / "out", "--dicom") == 2
    err = capsys.readouterr().err
    assert "holds 2 images or series" in err and err.count("\n") == 1


def test_analyze_page_offers_dicom_results_for_dicom_input_only():
    import streamlit as st
    from PIL import Image as PILImage
    from streamlit.testing.v1 import AppTest

    png = io.BytesIO()
    PILImage.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(png, format="PNG")
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    for name, data, offered in [("MR_small.dcm", Path(MR_SMALL).read_bytes(), True), ("a.png", png.getvalue(), False)]:
        st.cache_data.clear()
        at = AppTest.from_file(app, default_timeout=60)
        at.session_state["analyze_request"] = {
            "name": name, "data": data, "slice": 0, "model": "ae-d16", "mode": "reconstruction",
        }
        at.run()
        assert not at.exception, at.exception
        labels = [b.label for b in at.get("download_button")]
        assert ("DICOM results (map + segmentation, ZIP)" in labels) == offered, labels
