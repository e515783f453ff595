"""Sequence, modality and body part from synthetic DICOM headers, public file namings and pixel statistics."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from _fixtures_io import dicom_bytes

from ae4ad_core.io import read_image
from ae4ad_core.sequence import (
    SequenceGuess,
    detect_sequence,
    sequence_from_header,
    sequence_from_name,
    sequence_from_pixels,
)

TCGA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tcga-head"


def _dicom(modality: str = "MR", **tags) -> bytes:
    """A 32x32 uint16 DICOM file with the given acquisition tags (keywords)."""
    pixels = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 512).astype(np.uint16)
    return dicom_bytes(pixels, modality=modality, pixel_spacing=(0.9, 0.9),
                       series_uid=tags.pop("SeriesInstanceUID", None), **tags)


HEADERS = {
    # name: (tags, modality, expected sequence, expected body part)
    "flair": (
        dict(
            SeriesDescription="AX FLAIR",
            RepetitionTime=9000,
            EchoTime=120,
            InversionTime=2500,
            ScanningSequence="SE\\IR",
            BodyPartExamined="HEAD",
        ),
        "MR",
        "flair",
        "brain",
    ),
    "flair-timing-only": (
        dict(RepetitionTime=9000, EchoTime=120, InversionTime=2500),
        "MR",
        "flair",
        "unknown",
    ),
    "t1": (
        dict(SeriesDescription="AX T1 SE", RepetitionTime=500, EchoTime=10, BodyPartExamined="BRAIN"),
        "MR",
        "t1",
        "brain",
    ),
    "t1-timing-only": (dict(RepetitionTime=500, EchoTime=10), "MR", "t1", "unknown"),
    "t1c-plus-c": (dict(SeriesDescription="AX T1+C", RepetitionTime=550, EchoTime=9), "MR", "t1c", "unknown"),
    "t1c-post": (
        dict(SeriesDescription="T1 MPRAGE POST", RepetitionTime=2300, EchoTime=3, InversionTime=900),
        "MR",
        "t1c",
        "unknown",
    ),
    "t2": (dict(SeriesDescription="t2_tse_tra", RepetitionTime=4000, EchoTime=100), "MR", "t2", "unknown"),
    "t2-timing-only": (dict(RepetitionTime=4000, EchoTime=100), "MR", "t2", "unknown"),
    "ct-abdomen": (
        dict(BodyPartExamined="ABDOMEN", SeriesDescription="CT ABD/PELVIS"),
        "CT",
        "other",
        "abdomen",
    ),
    "cr-chest": (dict(BodyPartExamined="CHEST"), "CR", "other", "chest"),
    "dx-chest": (dict(BodyPartExamined="CHEST", ViewPosition="PA"), "DX", "other", "chest"),
    "mr-knee": (dict(BodyPartExamined="KNEE", SeriesDescription="PD FS COR"), "MR", "other", "knee"),
    "dwi": (
        dict(SeriesDescription="ep2d_diff_3scan_trace", RepetitionTime=5000, EchoTime=90),
        "MR",
        "other",
        "unknown",
    ),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_sequence_from_synthetic_dicom_read_by_the_reader(case):
    tags, modality, sequence, body_part = HEADERS[case]
    image = read_image(_dicom(modality, **tags), name=f"{case}.dcm")
    guess = detect_sequence(image)
    assert (guess.sequence, guess.modality, guess.body_part) == (sequence, modality, body_part), guess.reasons
    assert guess.reasons and all(isinstance(r, str) for r in guess.reasons)
    assert 0.0 < guess.confidence <= 1.0
    assert "Doe" not in " ".join(guess.reasons)
    if "SeriesDescription" in tags and sequence != "other":  # the reader keeps the description
        assert any("series description" in r for r in guess.reasons), guess.reasons


def test_contrast_agent_makes_t1c_from_a_dataset():
    import pydicom

    ds = pydicom.dcmread(
        io.BytesIO(_dicom("MR", RepetitionTime=500, EchoTime=10, ContrastBolusAgent="Gadovist"))
    )
    guess = sequence_from_header(ds)
    assert guess.sequence == "t1c"
    assert any("contrast agent" in r for r in guess.reasons)
    # The reader's de-identified metadata has no Contrast/Bolus Agent: the same file is a plain T1 there.
    image = read_image(_dicom("MR", RepetitionTime=500, EchoTime=10, ContrastBolusAgent="Gadovist"))
    assert detect_sequence(image).sequence == "t1"


def test_words_and_timing_agreeing_give_more_confidence_than_either():
    both = sequence_from_header(HEADERS["flair"][0] | {"Modality": "MR"})
    timing = sequence_from_header(HEADERS["flair-timing-only"][0] | {"Modality": "MR"})
    words = sequence_from_header({"Modality": "MR", "SeriesDescription": "AX FLAIR"})
    assert both.confidence > words.confidence > timing.confidence > 0


def test_t1_flair_is_t1_and_t2_star_is_other():
    t1_flair = {
        "Modality": "MR",
        "SeriesDescription": "SAG T1 FLAIR",
        "RepetitionTime": 2000,
        "EchoTime": 9,
        "InversionTime": 800,
    }
    assert sequence_from_header(t1_flair).sequence == "t1"
    assert sequence_from_header({"Modality": "MR", "SeriesDescription": "T2* GRE"}).sequence == "other"


def test_empty_header_is_unknown():
    guess = sequence_from_header({})
    assert guess == SequenceGuess("unknown", "unknown", "unknown", 0.0, [])
    assert guess.is_brain_mr


NAMES = {
    "TCGA-FG-6692_flair.nii.gz": "flair",
    "TCGA-FG-6692_t1.nii.gz": "t1",
    "TCGA-FG-6692_t1c.nii.gz": "t1c",
    "TCGA-FG-6692_t2.nii.gz": "t2",
    "TCGA-FG-6692_t1c_brainmask.nii.gz": "other",
    "BraTS2021_00495_flair.nii.gz": "flair",
    "BraTS2021_00495_t1ce.nii.gz": "t1c",
    "BraTS2021_00495_t1.nii.gz": "t1",
    "BraTS2021_00495_t2.nii.gz": "t2",
    "BraTS2021_00495_seg.nii.gz": "other",
    "BraTS-GLI-00000-000-t2f.nii.gz": "flair",
    "BraTS-GLI-00000-000-t1c.nii.gz": "t1c",
    "BraTS-GLI-00000-000-t1n.nii.gz": "t1",
    "BraTS-GLI-00000-000-t2w.nii.gz": "t2",
    "brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz": "flair",
    "T1c_subtrMeanDivStd.nii.gz": "t1c",
    "T1_subtrMeanDivStd.nii.gz": "t1",
    "OTMultiClass.nii.gz": "unknown",
    "patient7_T1c.png": "t1c",
    "FLAIR.png": "flair",
    "scan.nii.gz": "unknown",
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_sequence_from_public_file_names(name):
    guess = sequence_from_name(name)
    assert guess.sequence == NAMES[name], guess.reasons
    if guess.sequence in ("flair", "t1", "t1c", "t2"):
        assert guess.modality == "MR" and guess.confidence >= 0.8


@pytest.mark.parametrize(
    ("name", "modality", "body_part"),
    [
        ("chest_xray.png", "DX", "chest"),
        ("abdomen_ct.nii.gz", "CT", "abdomen"),
        ("knee_T2.png", "MR", "knee"),
    ],
)
def test_non_brain_names(name, modality, body_part):
    guess = sequence_from_name(name)
    assert (guess.modality, guess.body_part) == (modality, body_part)
    assert not guess.is_brain_mr


def test_hounsfield_units_mean_ct():
    ct = np.full((1, 64, 64), -1000.0, np.float32)
    ct[0, 16:48, 16:48] = 40.0
    ct[0, 20:24, 20:24] = 900.0
    modality, reasons, facts = sequence_from_pixels(ct)
    assert modality == "CT" and facts["hounsfield_like"] and reasons


def test_standardised_skull_stripped_pixels_are_recognised():
    rng = np.random.default_rng(0)
    z = np.full((2, 64, 64), -3.5, np.float32)
    z[:, 12:52, 12:52] = rng.standard_normal((2, 40, 40)).astype(np.float32)
    _, reasons, facts = sequence_from_pixels(z)
    assert facts["constant_background"] and facts["standardised"] and reasons


def test_detect_sequence_on_a_png_by_name():
    from tests._fixtures_io import png_bytes

    image = read_image(png_bytes(np.tile(np.arange(64, dtype=np.uint8), (64, 1))), name="case_T1c.png")
    assert detect_sequence(image).sequence == "t1c"


@pytest.mark.skipif(not TCGA.is_dir() and os.environ.get("CI") != "true", reason="shared TCGA data missing")
@pytest.mark.parametrize("sequence", ["flair", "t1", "t1c", "t2"])
def test_every_tcga_sequence_is_detected(sequence):
    image = read_image(TCGA / f"TCGA-FG-6692_{sequence}.nii.gz")
    guess = detect_sequence(image)
    assert guess.sequence == sequence and guess.modality == "MR"


BRATS = TCGA.parent / "brats2013"


@pytest.mark.skipif(not BRATS.is_dir() and os.environ.get("CI") != "true", reason="shared BraTS data missing")
@pytest.mark.parametrize("patient", ["brats_2013_pat0003_1", "brats_2013_pat0006_1"])
@pytest.mark.parametrize(
    ("file", "sequence"), [("Flair_subtrMeanDivStd.nii.gz", "flair"), ("T1c_subtrMeanDivStd.nii.gz", "t1c")]
)
def test_brats_patients_flair_and_t1c_are_detected(patient, file, sequence):
    guess = detect_sequence(read_image(BRATS / patient / file, frames=[70, 75, 80]))
    assert guess.sequence == sequence and guess.modality == "MR"


def test_a_dicom_series_read_as_one_volume():
    from pydicom.uid import generate_uid

    from ae4ad_core.io import read_images

    uid = generate_uid()
    files = [
        (
            f"IM{k}.dcm",
            _dicom(
                "MR",
                SeriesInstanceUID=uid,
                SeriesDescription="AX T2 FLAIR",
                RepetitionTime=9000,
                EchoTime=120,
                InversionTime=2500,
                InstanceNumber=k + 1,
                ImagePositionPatient=[0, 0, 5.0 * k],
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            ),
        )
        for k in range(3)
    ]
    images, errors = read_images(files)
    assert not errors and len(images) == 1 and images[0].format == "dicom-series"
    guess = detect_sequence(images[0])
    assert guess.sequence == "flair" and guess.confidence == 0.95
