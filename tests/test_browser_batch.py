"""Real browser on the Batch page: upload a ZIP, see the ranked table, download the CSV (Playwright + Debian
chromium, see ``browser_utils``). Skipped where chromium is missing, except under CI (env ``CI``), where it fails.

The page runs on its own (``streamlit run app_pages/batch.py``), so the test does not depend on the app's navigation.
"""

from __future__ import annotations

import csv
import io
import os
import shutil

import numpy as np
import pytest
from _fixtures_io import dicom_bytes, png_bytes
from browser_utils import ARTIFACTS, REPO, chromium_available, chromium_page, streamlit_server, wait_for_app
from test_jobs import zipped

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models_root):
    if not chromium_available():
        message = "Debian chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; browser tests must run in CI.")
        pytest.skip(message)
    home = tmp_path_factory.mktemp("batch_home")
    shutil.copytree(tiny_models_root, home / "models")
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(REPO / "app_pages" / "batch.py", env={"AE4AD_HOME": str(home)}) as running:
        yield running


def test_upload_zip_rank_and_download_csv(server, tmp_path):
    rng = np.random.default_rng(7)
    archive = tmp_path / "ward7.zip"
    archive.write_bytes(
        zipped(
            [
                ("a.png", png_bytes((rng.random((48, 48)) * 255).astype(np.uint8))),
                ("b.png", png_bytes((rng.random((40, 56)) * 120).astype(np.uint8))),
                ("c.dcm", dicom_bytes((rng.random((32, 32)) * 1000).astype(np.int16))),
                ("notes.bin", rng.bytes(300)),
            ],
            folder="scans",
        )
    )
    with chromium_page() as page:
        page.goto(server.url)
        page.get_by_text("Upload files or a ZIP archive").wait_for(timeout=90_000)  # first run loads torch
        # One model for every scan (made-up images: no model fits them by sequence).
        page.get_by_test_id("stSidebar").get_by_text("The model that fits each scan").click()
        page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model", exact=True).wait_for(timeout=60_000)
        wait_for_app(page)
        page.locator('input[type="file"]').set_input_files(str(archive))
        page.get_by_role("button", name="Score 1 upload(s)").click()
        page.get_by_text("Ranked by anomaly score").wait_for(timeout=90_000)
        wait_for_app(page)
        metric = (
            page.get_by_test_id("stMetric").filter(has_text="Volumes scored").get_by_test_id("stMetricValue")
        )
        assert metric.inner_text() == "3"
        page.get_by_text("1 upload(s) could not be read or scored").wait_for(timeout=30_000)
        tables = page.locator('[data-testid="stDataFrame"]:visible')
        tables.nth(1).wait_for(timeout=30_000)  # the ranked table and the failures
        page.screenshot(path=str(ARTIFACTS / "batch_ranked.png"), full_page=True)

        with page.expect_download(timeout=30_000) as info:
            page.get_by_role("button", name="Results (CSV)").click()
        download = info.value
        assert download.suggested_filename.endswith(".csv")
        rows = list(csv.DictReader(io.StringIO(open(download.path(), encoding="utf-8").read())))
    scored = [r for r in rows if not r["error"]]
    assert {r["name"] for r in scored} == {
        "ward7.zip/scans/a.png",
        "ward7.zip/scans/b.png",
        "ward7.zip/scans/c.dcm",
    }
    assert [int(r["volume_rank"]) for r in scored] == [1, 2, 3]
    assert [r["name"] for r in rows if r["error"]] == ["ward7.zip/scans/notes.bin"]
    assert "PatientName" not in rows[0]
