"""Real-browser tests: Streamlit server + Debian chromium driven by Playwright
(``apt-get install chromium``; never a browser build downloaded by ``playwright install``).

Skipped where chromium is missing, except under CI (env ``CI`` set), where a missing browser fails.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from browser_utils import (
    ARTIFACTS,
    FIXTURE_AE,
    FIXTURE_VAE,
    chromium_available,
    chromium_page,
    make_fixture_models,
    streamlit_server,
    wait_for_app,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

VERDICT = "percentile of normal validation images"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """AE4AD_HOME with the fixture AE and VAE; skips (fails under CI) without chromium."""
    if not chromium_available():
        message = "Debian chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; browser tests must run in CI.")
        pytest.skip(message)
    home = Path(os.environ.get("AE4AD_TEST_HOME") or tmp_path_factory.mktemp("ae4ad_home"))
    make_fixture_models(home)
    ARTIFACTS.mkdir(exist_ok=True)
    return home


@pytest.fixture(scope="module")
def server(home):
    with streamlit_server(env={"AE4AD_HOME": str(home)}) as running:
        yield running


@pytest.fixture
def page(server):
    with chromium_page() as p:
        p.goto(server.url)
        p.get_by_text("Analyze an image").wait_for(timeout=90_000)  # first run loads torch and the models
        yield p


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the sidebar selectbox labelled ``label``."""
    page.get_by_test_id("stSidebar").get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_app(page)


def shown(page, title: str | re.Pattern) -> None:
    """Wait until the main view's heading is ``title`` (the analysed input's name) and the previous input's
    verdict has gone (Streamlit keeps stale elements until the run ends)."""
    page.get_by_role("heading", name=title).wait_for(timeout=60_000)
    expect(page.get_by_text(VERDICT)).to_have_count(1, timeout=60_000)
    wait_for_app(page, start_ms=1000)


def dicom_file() -> str:
    from pydicom.data import get_testdata_file

    return get_testdata_file("MR_small.dcm")


def test_upload_dicom_see_verdict_and_overlay_then_change_mode(page):
    pick(page, "Model", FIXTURE_VAE)
    page.locator('input[type="file"]').set_input_files(dicom_file())
    shown(page, Path(dicom_file()).name)  # the upload replaced the opening demo case
    verdict = page.get_by_text(VERDICT)
    verdict.wait_for(timeout=60_000)
    wait_for_app(page)
    images = page.locator('[data-testid="stImage"] img')
    page.wait_for_function(  # the three views and the colour bar have loaded
        """() => { const im = [...document.querySelectorAll('[data-testid="stImage"] img')].slice(0, 4);
                   return im.length == 4 && im.every(i => i.complete && i.naturalWidth > 0 && i.width > 0); }""",
        timeout=60_000,
    )
    captions = page.get_by_test_id("stImageCaption").all_inner_texts()
    assert captions[:3] == ["Input", "Reconstruction", "Anomaly map over input"]
    box = images.nth(2).bounding_box()
    assert box and box["width"] > 150  # shown at a readable size, same as the input
    assert images.nth(2).get_attribute("src").endswith(".png")  # lossless, no JPEG artefacts
    first = images.nth(0).bounding_box()
    assert abs(first["width"] - box["width"]) < 2 and abs(first["height"] - box["height"]) < 2
    score_before = (
        page.get_by_test_id("stMetric").filter(has_text="Score").get_by_test_id("stMetricValue").inner_text()
    )
    page.screenshot(path=str(ARTIFACTS / "analyze_dicom_reconstruction.png"))

    page.get_by_test_id("stSidebar").get_by_text("KL", exact=True).click()
    score = page.get_by_test_id("stMetric").filter(has_text="Score").get_by_test_id("stMetricValue")
    expect(score).not_to_have_text(score_before, timeout=60_000)  # rescored in KL mode
    wait_for_app(page)
    verdict.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "analyze_dicom_kl.png"))
    assert not page.get_by_test_id("stException").count()


def test_first_screen_shows_a_real_tumour_case_analysed_without_a_click(page):
    """The opening screen teaches: a real patient's FLAIR slice, its reconstruction and map with the experts'
    outline, the verdict and the licence, with the uploader in view; nothing clicked."""
    from browser_utils import REPO

    if not (REPO / "assets" / "real" / "brats2013.npz").is_file():
        pytest.skip("assets/real/brats2013.npz is not there")
    page.get_by_text(VERDICT).wait_for(timeout=90_000)
    wait_for_app(page)
    expect(page.get_by_role("heading", name=re.compile(r"^Real patient \(BraTS\), FLAIR, slice \d+: glioma"))).to_be_visible()
    expect(page.get_by_text("expert outline (tumour)").first).to_be_visible()
    expect(page.get_by_text("CC BY-NC-SA 3.0 CH — non-commercial").first).to_be_visible()
    expect(page.get_by_test_id("stFileUploaderDropzone")).to_be_visible()  # upload one click away
    page.wait_for_function(  # input, reconstruction, map and colour bar have loaded
        """() => { const im = [...document.querySelectorAll('[data-testid="stImage"] img')].slice(0, 4);
                   return im.length == 4 && im.every(i => i.complete && i.naturalWidth > 0 && i.width > 0); }""",
        timeout=60_000,
    )
    captions = page.get_by_test_id("stImageCaption").all_inner_texts()
    assert captions[:3] == ["Input", "Reconstruction", "Anomaly map over input"]
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "analyze_first_screen.png"))


def test_ae_disables_kl_and_combined(page):
    pick(page, "Model", FIXTURE_AE)
    sidebar = page.get_by_test_id("stSidebar")
    assert sidebar.get_by_text("KL and Combined unavailable", exact=False).is_visible()
    kl = sidebar.get_by_role("radio", name=re.compile(r"^KL"))
    assert kl.is_disabled()


def test_bad_file_reports_one_line_and_page_keeps_working(page, tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"not really")
    pick(page, "Model", FIXTURE_AE)
    page.locator('input[type="file"]').set_input_files([str(bad), dicom_file()])
    shown(page, Path(dicom_file()).name)
    page.get_by_text(VERDICT).wait_for(timeout=60_000)
    wait_for_app(page)
    alert = page.get_by_test_id("stAlertContentError")
    assert alert.count() == 1
    assert alert.inner_text().strip().splitlines()[-1].startswith("broken.dcm: ")  # after the icon's name
    page.screenshot(path=str(ARTIFACTS / "analyze_bad_file.png"))


def test_models_page(page):
    page.get_by_role("link", name="Models").click()
    page.get_by_text("Model zoo").wait_for(timeout=60_000)
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stImage").locator("img")).to_have_count(2, timeout=60_000)  # ROC and PR
    wait_for_app(page)
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "models.png"))


def test_demo_case_shows_ground_truth(page):
    from browser_utils import REPO

    if not (REPO / "assets" / "demo" / "demo.npz").is_file():
        pytest.skip("assets/demo/demo.npz is not built yet")
    pick(page, "Model", FIXTURE_AE)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_role("radiogroup", name="Source").get_by_text("Demo case").click()  # the default
    wait_for_app(page, start_ms=1500)
    sidebar.get_by_role("combobox", name="Demo case").click()
    page.get_by_role("option", name=re.compile(r"^Lesion 1")).click()
    shown(page, re.compile(r"^Lesion 1"))
    wait_for_app(page)
    assert page.get_by_text("ground truth", exact=False).count() >= 1
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / "analyze_demo_lesion.png"))


def test_fresh_server_opened_at_a_page_url_goes_through_the_navigation(home):
    """A fresh server first opened at a page's URL runs that page through app.py's st.navigation (the pages
    live in app_pages/, not in Streamlit's auto-discovered pages/), so the sidebar notice and the full
    navigation are there."""
    with streamlit_server(env={"AE4AD_HOME": str(home)}) as fresh, chromium_page() as page:
        page.goto(fresh.url + "models")
        page.get_by_text("Model zoo").wait_for(timeout=90_000)
        expect(page.get_by_text("not for diagnosis")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("link", name="Analyze")).to_be_visible()
        assert not page.get_by_role("link", name="app").count()


def whole_head_upload_checks(
    page, files: list[Path], heading: str, sequence: str, image, artifact: str
) -> None:
    """Upload ``files`` (one selection) of a whole head, TCGA-FG-6692: the page shows ``heading``, preselects
    the model of ``sequence``, scores the scan and shows the verdict, at the middle slice then at the tumour's
    slice; the map stops at the brain (checked on the library side on ``image``, the page's call)."""
    from ae4ad_core.analysis import analyze_image

    page.locator('input[type="file"]').set_input_files([str(path) for path in files])
    shown(page, heading)
    model = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model", exact=True)
    expect(model).to_have_value(re.compile(rf"^{sequence}-"), timeout=30_000)
    page.get_by_test_id("stSidebar").get_by_text("Show brain outline").click()
    wait_for_app(page, start_ms=1000)
    thumb = page.get_by_role("slider", name="Slice").first  # at the middle slice, 14 of 26
    expect(thumb).to_have_value("14", timeout=30_000)
    thumb.focus()
    for _ in range(3):  # slice 17: the FLAIR hyperintensity of this patient's tumour (right frontal)
        thumb.press("ArrowRight")
    expect(thumb).to_have_value("17", timeout=30_000)
    page.wait_for_timeout(1500)  # the slider sends its value when the keys stop
    wait_for_app(page, start_ms=1000)
    page.get_by_text(VERDICT).wait_for(timeout=60_000)
    assert not page.get_by_test_id("stException").count()
    page.screenshot(path=str(ARTIFACTS / artifact), full_page=True)  # TCGA-derived: never committed
    result = analyze_image(image)
    assert result.analysis.model_name.startswith(f"{sequence}-")
    for i in range(len(result.analysis)):
        assert not result.analysis.outline_in_input_space(i)[~result.brain[i]].any()


@pytest.mark.parametrize("sequence", ["flair", "t1c"])
def test_a_whole_head_upload_gets_its_model_and_a_map_inside_the_brain(page, shared_data, sequence):
    """A clinical whole head (TCGA, skull and face included) as a NIfTI file is detected by its name, gets the
    model of its sequence, is brain-extracted and scored; the map stops at the brain."""
    from ae4ad_core.io import read_image

    path = shared_data / "tcga-head" / f"TCGA-FG-6692_{sequence}.nii.gz"
    whole_head_upload_checks(page, [path], path.name, sequence, read_image(path), f"tcga_{sequence}.png")


@pytest.mark.parametrize("sequence", ["flair", "t1c"])
def test_a_whole_head_dicom_series_gets_its_model_and_a_map_inside_the_brain(
    page, shared_data, sequence, tmp_path
):
    """The same whole head as the MR DICOM series a scanner writes (26 files made from the NIfTI at test
    time, the sequence said by the header, Instance Number 1 the top slice), all files in one upload: the page
    stacks them into one volume in the NIfTI's order and orientation and takes it the same whole-head path."""
    from _fixtures_io import write_dicom_series

    from ae4ad_core.io import read_images

    nifti = shared_data / "tcga-head" / f"TCGA-FG-6692_{sequence}.nii.gz"
    files = write_dicom_series(nifti, tmp_path, name="IM")
    images, errors = read_images(files)
    assert not errors and len(images) == 1 and images[0].n_slices == len(files) == 26
    heading = f"{files[0].name} (+{len(files) - 1} files)"  # a browser sends no folder names
    whole_head_upload_checks(page, files, heading, sequence, images[0], f"tcga_{sequence}_series.png")
