"""The Learn page: AppTest on ``app_pages/learn.py`` alone, plus a real-browser run through ``app.py``.

The page teaches with the shipped models (the ``ae-d*`` sweep, ``vae-d16``, optionally a rate-distortion AE),
the demo test set and ``assets/sweep/sweep.json``; tests that need them skip when they are missing. The browser
test is skipped where Debian's chromium is missing, except under CI (env ``CI`` set), where it fails. Its
screenshot goes to ``test-artifacts/learn.png``.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import streamlit as st
from browser_utils import ARTIFACTS, REPO, chromium_available, chromium_page, streamlit_server, wait_for_app
from streamlit.testing.v1 import AppTest

from ae4ad_core import registry, teaching
from ae4ad_core.data import DEMO_PATH

LEARN = str(REPO / "app_pages" / "learn.py")
SWEEP = [f"ae-d{d}" for d in (1, 2, 4, 8, 16, 32, 64, 128)]
SHIPPED = registry.shipped_models_dir()
HAVE_ASSETS = (
    DEMO_PATH.is_file()
    and teaching.SWEEP_PATH.is_file()
    and all((SHIPPED / n / "card.json").is_file() for n in [*SWEEP, "vae-d16"])
)
needs_assets = pytest.mark.skipif(not HAVE_ASSETS, reason="the shipped models, demo set or sweep are missing")
SECTIONS = [
    "1. The size of the code decides what gets redrawn",
    "2. Choosing d without peeking at the answers",
    "3. Three ways a VAE points at a lesion",
]
RATE_SECTION = "4. Limiting information without choosing d"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty AE4AD_HOME and fresh Streamlit caches (AppTest runs in this process and shares them)."""
    monkeypatch.setenv("AE4AD_HOME", str(tmp_path / "home"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield tmp_path / "home"
    st.cache_data.clear()
    st.cache_resource.clear()


def run_page() -> AppTest:
    at = AppTest.from_file(LEARN, default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def text_of(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def shipped_rdae() -> list[str]:
    return [c.name for c in teaching.rate_distortion_models(registry.list_models([SHIPPED]))]


@needs_assets
def test_every_section_renders_with_live_models(home):
    at = run_page()
    headers = [h.value for h in at.header]
    assert headers[:3] == SECTIONS and headers[-1] == "References"
    assert (RATE_SECTION in headers) == bool(shipped_rdae())
    case = at.selectbox(key="learn_case")
    assert len(case.options) == 4 and case.value == teaching.teaching_cases()[0].key
    # input + colour bar + 8 redrawings + 8 maps, the sweep chart, input + reconstruction + 3 VAE maps
    assert len(at.get("image")) == 1 + 1 + 2 * len(SWEEP) + 1 + 5
    scores = [c.value for c in at.caption if c.value.startswith("score ")]
    assert len(scores) == len(SWEEP) and all("lesion" in s for s in scores)
    summary = json.loads(teaching.SWEEP_PATH.read_text())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["d chosen from normal images"] == str(summary["chosen_d"])
    assert metrics["Best d on the test set"] == str(summary["oracle_d"])
    assert metrics["AUROC lost by not peeking"] == f"{summary['auroc_gap_points']:.1f} points"
    text = text_of(at)
    assert "The column the paper lacks: latent entropy" in text
    assert "In this case the map inside the lesion is" in text
    for cite in (
        "Cai, Chen, Cheng",
        "arXiv:2403.09303",
        "Zimmerer, Isensee, Petersen, Kohl, Maier-Hein",
        "arXiv:1907.02796",
    ):
        assert cite in text
    for title in ("Reconstruction error", "KL gradient", "Combined"):
        assert any(title in (img.proto.imgs[0].caption if img.proto.imgs else "") for img in at.get("image"))


@needs_assets
def test_choosing_another_case_recomputes_the_rows(home):
    at = run_page()
    before = [c.value for c in at.caption if c.value.startswith("score ")]
    second = at.selectbox(key="learn_case").options[1]
    key = next(c.key for c in teaching.teaching_cases() if c.label == second)
    at.selectbox(key="learn_case").set_value(key).run()
    assert not at.exception, at.exception
    after = [c.value for c in at.caption if c.value.startswith("score ")]
    assert len(after) == len(before) and after != before
    at.selectbox(key="learn_case").set_value(teaching.teaching_cases()[0].key).run()
    assert [c.value for c in at.caption if c.value.startswith("score ")] == before  # same case, same numbers


@needs_assets
def test_rate_distortion_section_uses_the_card_numbers(home):
    from conftest import make_tiny_model, one_thread

    with one_thread():
        folder = make_tiny_model(home / "models", "rdae", name="rdae-test")
    card = json.loads((folder / "card.json").read_text())
    card["metrics"] = {"reconstruction": {"image_auroc": 0.6125}}
    card["training"] = {"config": {"rate_weight": 0.0005}}
    (folder / "card.json").write_text(json.dumps(card))
    at = run_page()
    assert RATE_SECTION in [h.value for h in at.header]
    text = text_of(at)
    assert "**rdae-test** keeps up to 4 latent values" in text
    assert f"**{card['latent']['mean_rate_bits']:.1f} bits**" in text
    assert "(5e-04 per bit)" in text and "**0.613**" in text
    values = [m.value for m in at.metric if m.label == "Image AUROC"]
    assert "0.613" in values


def test_page_explains_what_is_missing(home, monkeypatch, tmp_path, tiny_ae_dir):
    """No sweep models, no VAE, no sweep summary: each section says what to run instead of failing."""
    import shutil

    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "no-zoo")
    monkeypatch.setattr(teaching, "SWEEP_PATH", tmp_path / "no-sweep.json")
    shutil.copytree(tiny_ae_dir, home / "models" / tiny_ae_dir.name)
    if not DEMO_PATH.is_file():
        at = run_page()
        assert "demo data set" in at.info[0].value
        return
    at = run_page()
    infos = " ".join(i.value for i in at.info)
    assert "No `ae-d*` models" in infos and "No sweep results" in infos and "No VAE" in infos
    assert RATE_SECTION not in [h.value for h in at.header]


def test_page_without_the_demo_set(home, monkeypatch, tmp_path):
    monkeypatch.setenv("AE4AD_DEMO", str(tmp_path / "missing.npz"))
    at = run_page()
    assert "not available" in at.info[0].value and not at.header


# ------------------------------------------------------------------------------------------ real browser

IMAGE_SOURCES = """() => [...document.querySelectorAll('[data-testid="stImage"] img')].map(img => img.src)"""


def screenshot(page, path) -> None:
    """The whole page: the viewport is grown to the height of the content first (Streamlit scrolls inside
    its own container, so a full-page capture would stop at the viewport)."""
    height = page.evaluate(
        """() => document.querySelector('[data-testid="stMainBlockContainer"]').scrollHeight"""
    )
    page.set_viewport_size({"width": page.viewport_size["width"], "height": int(height) + 120})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))


@pytest.mark.browser
@needs_assets
def test_learn_page_in_a_real_browser(tmp_path):
    from playwright.sync_api import expect

    if not chromium_available():
        message = "Debian chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; browser tests must run in CI.")
        pytest.skip(message)
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        streamlit_server(env={"AE4AD_HOME": str(tmp_path / "home")}) as server,
        chromium_page(width=1500, height=1000) as page,
    ):
        started = time.perf_counter()
        page.goto(server.url + "learn")  # a fresh server opened straight at the page (a bookmark)
        page.get_by_role("heading", name="References").wait_for(timeout=120_000)
        wait_for_app(page, 120_000)
        first_render = time.perf_counter() - started
        assert page.url.rstrip("/").endswith("/learn")
        # It ran inside app.py: the app's navigation and notice are in the sidebar.
        sidebar = page.get_by_test_id("stSidebar")
        assert sidebar.get_by_role("link", name="Analyze").count() == 1
        assert sidebar.get_by_text("not for diagnosis").count() == 1
        for title in [*SECTIONS, "References"]:
            assert page.get_by_role("heading", name=title).count() == 1, title
        images = page.locator('[data-testid="stImage"] img')
        assert images.count() == 1 + 1 + 2 * len(SWEEP) + 1 + 5
        loaded = page.evaluate(
            """() => [...document.querySelectorAll('[data-testid="stImage"] img')]
                     .map(img => img.complete && img.naturalWidth > 0)"""
        )
        assert all(loaded)
        widths = {round(images.nth(i).bounding_box()["width"]) for i in range(2, 2 + 2 * len(SWEEP))}
        assert len(widths) == 1 and widths.pop() > 60  # the d row is a regular grid of readable thumbnails
        assert not page.get_by_test_id("stException").count()
        screenshot(page, ARTIFACTS / "learn.png")

        takeaway = page.get_by_text(re.compile(r"In this case the map inside the lesion"))
        before = takeaway.inner_text()
        sources = page.evaluate(IMAGE_SOURCES)
        second = teaching.teaching_cases()[1].label
        page.get_by_role("combobox", name="Lesion case").click()
        page.get_by_role("option", name=second, exact=True).click()
        wait_for_app(page, 60_000, start_ms=1500)
        expect(takeaway).not_to_have_text(before, timeout=60_000)  # recomputed for the new case
        assert page.get_by_role("combobox", name="Lesion case").input_value() == second
        page.wait_for_function(  # every input, redrawing and map of the d row replaced and loaded
            """old => { const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
                       return imgs.length === old.length
                         && imgs.every((img, i) => i === 1 || (img.src !== old[i] || i > 17))
                         && imgs.every(img => img.complete && img.naturalWidth > 0); }""",
            arg=sources,
            timeout=60_000,
        )
        assert not page.get_by_test_id("stException").count()
        screenshot(page, ARTIFACTS / "learn_second_case.png")
    print(f"Learn page, fresh server opened at /learn: {first_render:.1f} s to the last element")


REAL_D_TITLE = "Choosing d without labels, on real patients"


@needs_assets
def test_real_patient_choice_of_d_reads_the_crossvalidation(home, tmp_path, monkeypatch):
    from browser_utils import fake_crossval_report

    import ae4ad_core.crossval as cv

    path = fake_crossval_report(tmp_path / "crossval.json")
    real = cv.load_crossval_report
    monkeypatch.setattr(cv, "load_crossval_report", lambda p=None: real(path if p is None else p))
    at = run_page()
    headers = [h.value for h in at.header]
    assert REAL_D_TITLE in headers and headers[-1] == "References"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["d chosen without labels"] == "8" and metrics["Best d on the test patients"] == "16"
    assert metrics["Slice AUROC lost by not peeking"].endswith(" points")
    text = text_of(at)
    assert "the label-free rule picks d = 8" in text and "would have picked d = 16" in text
    assert "Per left-out patient: p3: d = 8" in text
    charts = [c.spec for c in at.get("vega_lite_chart")]
    for y in ("slice AUROC", "pixel AP", "latent entropy (nats)"):
        assert any(f"{y} vs d (mean \\u00b1 std over patients)" in c for c in charts), y


@needs_assets
def test_real_patient_section_is_one_line_without_the_report(home, monkeypatch):
    import ae4ad_core.crossval as cv

    monkeypatch.setattr(cv, "load_crossval_report", lambda p=None: None)
    at = run_page()
    assert REAL_D_TITLE not in [h.value for h in at.header]
    notes = [c.value for c in at.caption if c.value.startswith(REAL_D_TITLE)]
    assert len(notes) == 1 and "\n" not in notes[0]
