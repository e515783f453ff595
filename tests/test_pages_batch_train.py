"""AppTest of the Batch and Train pages, each run on its own (``AppTest.from_file("app_pages/...")``).

Batch: a mix of good and bad uploads (PNG, DICOM, random bytes, a ZIP) gives the ranked table, the failures and
the exports; selecting a row hands the volume to the Analyze page. Train: one epoch on uploaded normal images
trains, calibrates and registers a model that the registry then lists.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from _fixtures_io import dicom_bytes, png_bytes
from browser_utils import REPO
from streamlit.testing.v1 import AppTest
from test_jobs import normal_pngs, zipped

from ae4ad_core.data import DEMO_PATH
from ae4ad_core.registry import list_models

BATCH = str(REPO / "app_pages" / "batch.py")
TRAIN = str(REPO / "app_pages" / "train.py")


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_models_root):
    """An AE4AD_HOME holding the tiny AE and VAE."""
    models = tmp_path / "home" / "models"
    shutil.copytree(tiny_models_root, models)
    monkeypatch.setenv("AE4AD_HOME", str(tmp_path / "home"))
    return models


def batch_uploads() -> list[tuple[str, bytes, str]]:
    rng = np.random.default_rng(4)
    archive = zipped(
        [
            ("inner.png", png_bytes((rng.random((40, 40)) * 255).astype(np.uint8))),
            ("scan.dcm", dicom_bytes((rng.random((24, 24)) * 900).astype(np.int16))),
        ],
        folder="case7",
    )
    return [
        ("a.png", png_bytes((rng.random((48, 48)) * 255).astype(np.uint8)), "image/png"),
        ("IM0001", dicom_bytes((rng.random((32, 32)) * 1000).astype(np.int16)), "application/octet-stream"),
        ("garbage.dcm", rng.bytes(500), "application/dicom"),
        ("case7.zip", archive, "application/zip"),
    ]


def test_batch_page_ranks_uploads_lists_failures_and_exports(home):
    at = AppTest.from_file(BATCH, default_timeout=120).run()
    assert not at.exception, at.exception
    assert "Upload files or a ZIP" in at.info[0].value
    assert at.toggle(key="batch_per_scan").value  # each scan's own model by default
    at.toggle(key="batch_per_scan").set_value(False).run()  # one model for all
    at.selectbox(key="batch_model").set_value("tiny-ae-d4").run()
    at.file_uploader(key="batch_files").set_value(batch_uploads()).run()
    assert not at.dataframe, "nothing is scored before the button is pressed"
    at.button[0].click().run()
    assert not at.exception, at.exception

    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Volumes scored"] == "4" and metrics["Could not be read"] == "1"
    ranked = at.dataframe[0].value
    assert set(ranked["file / series"]) == {
        "a.png",
        "IM0001",
        "case7.zip/case7/inner.png",
        "case7.zip/case7/scan.dcm",
    }
    assert list(ranked["score"]) == sorted(ranked["score"], reverse=True)
    assert list(ranked["rank"]) == [1, 2, 3, 4]
    assert ranked["map"].str.startswith("data:image/png;base64,").all()
    failures = next(d.value for d in at.dataframe if list(d.value.columns) == ["file", "reason"])
    assert list(failures["file"]) == ["garbage.dcm"] and failures["reason"][0].startswith("garbage.dcm: ")
    assert [b.label for b in at.download_button] == ["Results (CSV)", "Report (PDF)"]
    assert not at.checkbox(key="batch_identifiers").value

    at.session_state["batch_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    top = ranked["file / series"][0]
    open_button = next(b for b in at.button if b.label.startswith("Open "))
    assert top in open_button.label
    open_button.click().run()
    request = at.session_state["analyze_request"]
    assert set(request) == {"name", "data", "slice", "model", "mode"}
    assert request["model"] == "tiny-ae-d4" and request["mode"] == "reconstruction" and request["data"]
    notes = [w.value for w in at.warning]
    assert any(
        "Analyze page is not part of this app" in n for n in notes
    )  # the page ran without st.navigation

    radio = at.radio(key="batch_mode")  # an AE scores one mode (the others greyed out); a VAE three
    assert radio.options == ["Reconstruction", "KL", "Combined"] and radio.disabled
    at.selectbox(key="batch_model").set_value("tiny-vae-d4").run()
    radio = at.radio(key="batch_mode")
    assert radio.options == ["Reconstruction", "KL", "Combined"] and not radio.disabled
    assert any("Press **Score**" in i.value for i in at.info), "a new model needs a new run"


def _wait_for_job(at: AppTest, timeout: float = 180.0) -> AppTest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        if at.success or any("Training failed" in e.value for e in at.error):
            return at
        time.sleep(0.5)
    raise AssertionError("the training job did not finish")


def test_train_page_trains_one_epoch_and_registers_the_model(home):
    at = AppTest.from_file(TRAIN, default_timeout=120).run()
    assert not at.exception, at.exception
    assert at.button(key="train_start").disabled  # no data yet
    at.file_uploader(key="train_files").set_value(
        [("normals.zip", zipped(normal_pngs(24)), "application/zip")]
    ).run()
    warnings = " ".join(w.value for w in at.warning)
    assert "Only 24 normal slices" in warnings and not at.error
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_d").set_value(4).run()
    name_box = at.text_input[0]
    assert name_box.value == "my-ae-d4"
    name_box.set_value("page-trained").run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "train_job" in at.session_state

    _wait_for_job(at)
    assert "page-trained" in at.success[0].value and not at.error
    assert "page-trained" in {c.name for c in list_models()}
    assert (home / "page-trained" / "card.json").is_file()


def test_train_page_guides_on_too_few_images(home):
    at = AppTest.from_file(TRAIN, default_timeout=60).run()
    at.file_uploader(key="train_files").set_value([(n, d, "image/png") for n, d in normal_pngs(12)]).run()
    assert any("held out for calibration" in e.value for e in at.error)
    assert at.button(key="train_start").disabled
    at.file_uploader(key="train_files").set_value([("x.png", b"not a png", "image/png")]).run()
    assert any("at least 8" in e.value for e in at.error)


@pytest.mark.skipif(not DEMO_PATH.is_file(), reason="assets/demo/demo.npz is not built yet")
def test_train_page_offers_the_demo_data(home):
    at = AppTest.from_file(TRAIN, default_timeout=60).run()
    at.radio(key="train_source").set_value("Demo brain MRI").run()
    assert not at.exception and not at.error
    assert "Demo" in " ".join(c.value for c in at.caption)
    assert not at.button(key="train_start").disabled


def test_batch_page_chooses_the_model_per_scan_and_lists_what_no_model_fits(home, shared_data):
    import numpy as np
    from _fixtures_io import dicom_bytes

    flair = shared_data / "tcga-head" / "TCGA-FG-6692_flair.nii.gz"
    hu = np.random.default_rng(0).normal(1064, 20, (64, 64)).astype(np.uint16)
    at = AppTest.from_file(BATCH, default_timeout=120).run()
    at.file_uploader(key="batch_files").set_value(
        [("head_ct.dcm", dicom_bytes(hu, rescale=(1.0, -1024.0)), "application/dicom"),
         (flair.name, flair.read_bytes(), "application/gzip")]
    ).run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Volumes scored"] == "1" and metrics["No model fits"] == "1"
    ranked = at.dataframe[0].value
    assert list(ranked["file / series"]) == [flair.name, "head_ct.dcm"]
    assert ranked["model"][0].startswith("flair-") and list(ranked["verdict"])[1] == "no model fits"
    assert list(ranked["sequence"]) == ["flair", "other"] and list(ranked["fits"]) == [True, False]
    assert [b.label for b in at.download_button] == ["Results (CSV)", "Report (PDF)"]
