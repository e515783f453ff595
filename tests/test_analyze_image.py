"""analysis.analyze_image: detect -> choose -> prepare -> analyze, one path for the page, the CLI and batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ae4ad_core.analysis import analyze_image
from ae4ad_core.exports import result_json
from ae4ad_core.io import Image, read_image


def test_tcga_flair_gets_a_flair_model_and_no_map_outside_the_brain(shared_data):
    image = read_image(shared_data / "tcga-head" / "TCGA-FG-6692_flair.nii.gz")
    result = analyze_image(image)
    assert result.guess.sequence == "flair" and result.choice.fits
    assert result.analysis.model_name.startswith("flair-") and result.warning is None
    assert 0.05 < result.preparation["brain_fraction"] < 0.6
    assert result.brain.shape == image.pixels.shape
    outlined = 0
    for i in range(len(result.analysis)):
        outside = ~result.brain[result.analysis.slice_indices[i]]
        assert not np.any(result.analysis.map_in_input_space(i)[outside])
        assert not np.any(result.analysis.outline_in_input_space(i)[outside])
        outlined += int(result.analysis.outline_in_input_space(i).sum())
    assert outlined > 0
    rows = result.analysis.records()
    k = int(np.argmax([r["anomalous_pixel_fraction"] for r in rows]))
    inside = result.analysis.brain[k]
    assert rows[k]["anomalous_pixel_fraction"] == pytest.approx(
        result.analysis.outline_in_input_space(k)[inside].mean())  # a share of the brain, not of the image
    payload = json.loads(result_json(result.analysis, image=image, extra=result.to_record()))
    assert payload["preparation"]["brain_extraction"]["method"]
    assert payload["model_choice"]["model"] == result.analysis.model_name


def test_ct_gets_no_model_and_no_analysis():
    hu = np.random.default_rng(0).normal(40, 20, (2, 64, 64)).astype(np.float32)
    hu[:, :8] = -1000
    image = Image(hu, name="scan.dcm", format="dicom", metadata={"format": "dicom", "modality": "CT"})
    result = analyze_image(image)
    assert result.analysis is None and result.choice.model is None
    assert "CT" in result.choice.reason and "no map" in result.choice.reason
    assert result.to_record()["preparation"] is None


def test_a_model_given_for_another_sequence_is_used_with_a_warning(shared_data):
    from ae4ad_core.registry import load_shared_model

    image = read_image(shared_data / "tcga-head" / "TCGA-FG-6692_t1c.nii.gz")
    result = analyze_image(image, load_shared_model("flair-intensity"), slice_indices=[12, 13])
    assert result.analysis.model_name == "flair-intensity" and len(result.analysis) == 2
    assert result.warning and "T1c" in result.warning
    assert result.to_record()["override_warning"] == result.warning
