"""Tests of :mod:`ae4ad_core.exports`: the CSV and JSON downloads of an analysis and their file names."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import pytest
import test_render

from ae4ad_core import exports
from ae4ad_core.explanations import volume_summary
from ae4ad_core.io import Image

real_analysis = test_render.real_analysis  # the fixture: a tiny AE scoring a 3-slice volume


def test_records_csv_has_one_row_per_slice():
    records = [{"slice": 0, "score": 0.1, "warnings": ""}, {"slice": 1, "score": 0.2, "warnings": "a; b"}]
    a = SimpleNamespace(records=lambda: records)
    rows = list(csv.DictReader(io.StringIO(exports.records_csv(a, extra={"file": "x.nii"}))))
    assert [r["slice"] for r in rows] == ["0", "1"] and rows[1]["warnings"] == "a; b"
    assert rows[0]["file"] == "x.nii"


def test_result_json_and_csv_of_a_real_analysis(real_analysis):
    volume, loaded, analysis = real_analysis
    image = Image(volume, name="vol.nii", format="nifti", metadata={})
    payload = json.loads(exports.result_json(analysis, image=image, device="cpu"))
    assert payload["input"] == {"name": "vol.nii", "format": "nifti", "shape": [3, 40, 48]}
    assert payload["device"] == "cpu" and len(payload["slices"]) == 3
    rows = list(csv.DictReader(io.StringIO(exports.records_csv(analysis))))
    assert [int(r["slice"]) for r in rows] == [0, 1, 2]
    assert float(rows[0]["score"]) == pytest.approx(analysis.scores[0], rel=1e-6)
    assert volume_summary(analysis).endswith("(volume score = the maximum over slices).")


@pytest.mark.parametrize(
    ("image_name", "expected"),
    [
        ("scan.nii.gz", "scan_ae-d16_kl.json"),
        ("Lesion 1: tumour (easy)", "Lesion_1_tumour_easy_ae-d16_kl.json"),
        ("IM0001", "IM0001_ae-d16_kl.json"),
    ],
)
def test_download_names_are_safe(image_name, expected):
    assert exports.download_name(image_name, "ae-d16", "kl", ".json") == expected

