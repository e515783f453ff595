"""Tests of :mod:`ae4ad_core.explanations`: plain-language text about an image and its analysis."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from ae4ad_core import explanations
from ae4ad_core.io import Image
from ae4ad_core.preprocess import PreprocessConfig


def test_header_rows_never_show_identifiers():
    meta = {
        "format": "dicom",
        "modality": "CT",
        "PatientName": "Doe^Jane",
        "patient_id": "123",
        "pixel_spacing": [0.5, 0.5],
        "applied": ["x"],
    }
    image = Image(np.zeros((2, 4, 5), np.float32), name="scan.dcm", format="dicom", metadata=meta)
    rows = dict(explanations.header_rows(image))
    text = json.dumps(rows)
    assert "Doe" not in text and "123" not in text
    assert rows["Modality"] == "CT"
    assert rows["Pixel spacing (mm)"] == "0.5 x 0.5"
    assert rows["Size"] == "2 slice(s) of 4 x 5 pixels"


def test_preprocessing_steps_describe_scaling_crop_and_resize():
    from ae4ad_core.preprocess import SliceGeometry

    image = Image(
        np.zeros((1, 40, 60), np.float32), name="x.png", format="png", metadata={"applied": ["gray"]}
    )
    prep = PreprocessConfig(size=64, crop_foreground=True)
    steps = explanations.preprocessing_steps(image, prep, SliceGeometry((40, 60), (5, 10, 30, 40), 40))
    text = " ".join(steps)
    assert "percentiles" in text and "Cropped" in text and "Padded to a 40 x 40" in text and "64 x 64" in text
    assert "Reader: gray." in steps


def test_latent_rows_speak_plainly_first():
    summary = {
        "latent_dim": 16,
        "entropy_gaussian_nats": 10.0,
        "entropy_gaussian_bits": 14.4,
        "entropy_knn_nats": 9.0,
        "entropy_knn_bits": 13.0,
        "effective_dim": 4.2,
    }
    rows = explanations.latent_rows(summary, 30.0, 97.0)
    assert len(rows) == 4
    assert rows[3][2].startswith("How surprising this image")
    assert "(latent surprisal)" in rows[3][2] and "97%" in rows[3][2]


def test_volume_summary_only_for_volumes():
    class Volume(SimpleNamespace):
        def __len__(self):
            return len(self.scores)

    a = Volume(
        scores=np.array([0.1, 0.5, 0.2]),
        above_threshold=np.array([False, True, False]),
        slice_indices=[0, 1, 2],
    )
    assert explanations.volume_summary(Volume(scores=np.array([0.1]))) is None
    assert explanations.volume_summary(a) == (
        "1 of 3 slices above the threshold; the highest score is on slice 2 "
        "(volume score = the maximum over slices)."
    )

