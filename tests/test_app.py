"""Streamlit AppTest tests of the app: every page runs; the Analyze page reads PNG, DICOM and NIfTI uploads and
demo cases, shows maps and a verdict, switches model and mode, survives bad files, and never rescored for
display-only changes.

The registry holds whatever models exist (shipped zoo and user models); the tests train a tiny AE and VAE in a
temporary AE4AD_HOME and pick them by name.
"""

from __future__ import annotations

import ast
import io
import os
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from browser_utils import FIXTURE_AE, FIXTURE_VAE, REPO, make_fixture_models
from streamlit.testing.v1 import AppTest

APP = str(REPO / "app.py")


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory):
    """A tiny AE and VAE in a temporary AE4AD_HOME (the environment variable is set for the session)."""
    home = Path(os.environ.get("AE4AD_TEST_HOME") or tmp_path_factory.mktemp("ae4ad_home"))
    names = make_fixture_models(home)
    old = os.environ.get("AE4AD_HOME")
    os.environ["AE4AD_HOME"] = str(home)
    yield names
    if old is None:
        os.environ.pop("AE4AD_HOME", None)
    else:
        os.environ["AE4AD_HOME"] = old


@pytest.fixture
def app(fixture_models):
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def png_bytes(size: int = 96) -> bytes:
    from browser_utils import synthetic_brains
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((synthetic_brains(1, size=size, seed=5)[0] * 255).astype(np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def nifti_bytes(n: int = 5) -> bytes:
    import nibabel as nib
    from browser_utils import synthetic_brains

    vol = np.transpose(synthetic_brains(n, size=64, seed=7), (2, 1, 0)) * 1000.0
    return nib.Nifti1Image(vol.astype(np.float32), np.eye(4)).to_bytes()


def dicom_bytes(name: str = "CT_small.dcm") -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name)).read_bytes()


def texts(at) -> str:
    """All visible text of markdown, captions, metrics, errors, warnings and infos."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def images_shown(at) -> int:
    return len(at.get("image"))


def choose(at, model: str, mode: str | None = None):
    at.selectbox(key="model").set_value(model).run()
    if mode is not None:
        at.radio(key="mode").set_value(mode).run()
    assert not at.exception, at.exception
    return at


def upload(at, *files: tuple[str, bytes]):
    at.sidebar.file_uploader[0].set_value(
        [(name, data, "application/octet-stream") for name, data in files]
    ).run()
    assert not at.exception, at.exception
    return at


def assert_result_shown(at):
    text = texts(at)
    assert "normal range: score at the" in text, text
    assert "Threshold" in text and "Normal percentile" in text
    assert images_shown(at) >= 4  # input, reconstruction, overlay, colour bar (+ charts)


# ------------------------------------------------------------------------------------------------ pages


def listed_pages() -> list[str]:
    """The page files listed in app.py's PAGES that exist."""
    tree = ast.parse((REPO / "app.py").read_text())
    listed = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PAGES"
    )
    return [path for path, _, _ in listed if (REPO / path).is_file()]


@pytest.mark.parametrize("page", listed_pages())
def test_every_page_runs_inside_the_app(app, page):
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert app.title, f"{page} shows no title"


@pytest.mark.parametrize("page", ["app_pages/analyze.py", "app_pages/models.py"])
def test_sidebar_has_the_notice_and_the_device(app, page):
    # A switched-to page runs through app.py's st.navigation, so the shared sidebar is there too.
    app.switch_page(page).run()
    assert any("not for diagnosis" in w.value for w in app.sidebar.warning)
    assert any("Computing on" in c.value for c in app.sidebar.caption)


def test_analyze_is_the_default_page_and_models_page_shows_the_zoo(app):
    assert "Analyze an image" in [t.value for t in app.title]
    app.switch_page("app_pages/models.py").run()
    assert not app.exception, app.exception
    assert "Model zoo" in [t.value for t in app.title]
    assert len(app.dataframe) >= 1
    assert {FIXTURE_AE, FIXTURE_VAE} <= set(app.dataframe[0].value["model"])
    assert len(app.get("image")) == 2  # ROC and PR curves of the evaluated models
    assert len(app.get("vega_lite_chart")) >= 1  # latent entropy per model
    app.radio[0].set_value("kl").run()
    assert not app.exception and len(app.get("image")) == 2


def test_uploader_accepts_any_extension(app):
    uploader = app.sidebar.file_uploader[0]
    assert uploader.allowed_type == [] and uploader.accept_multiple_files


# ----------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("brain.png", png_bytes),
        ("CT_small.dcm", dicom_bytes),
        ("IM0001", dicom_bytes),
        ("volume.nii", nifti_bytes),
    ],
    ids=["png", "dicom", "dicom-no-extension", "nifti"],
)
def test_upload_shows_maps_and_a_verdict(app, name, data):
    choose(app, FIXTURE_AE)
    upload(app, (name, data()))
    assert_result_shown(app)
    assert not app.error
    assert app.subheader[0].value == name


def test_nifti_volume_has_a_slice_slider_and_volume_summary(app):
    choose(app, FIXTURE_AE)
    upload(app, ("volume.nii.gz", nifti_bytes(6)))
    slider = app.slider(key=[s.key for s in app.slider if s.key and s.key.startswith("slice:")][0])
    assert (slider.min, slider.max, slider.value) == (1, 6, 4)
    assert "of 6 slices above the threshold" in texts(app)
    slider.set_value(2).run()
    assert not app.exception
    assert_result_shown(app)


def test_dicom_series_becomes_one_volume(app):
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    files = []
    for k in range(3):
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k * 5)]
        ds.SOPInstanceUID = f"1.2.3.4.{k + 1}"
        buf = io.BytesIO()
        ds.save_as(buf)
        files.append((f"slice{k}", buf.getvalue()))
    choose(app, FIXTURE_AE)
    upload(app, *files)
    assert not app.error
    assert "of 3 slices above the threshold" in texts(app)
    assert_result_shown(app)


def test_bad_file_shows_one_line_error_and_the_page_survives(app):
    choose(app, FIXTURE_AE)
    upload(app, ("broken.dcm", b"\x00" * 128 + b"DICM" + b"garbage"), ("brain.png", png_bytes()))
    assert len(app.error) == 1
    message = app.error[0].value
    assert message.startswith("broken.dcm") and "\n" not in message
    assert_result_shown(app)  # the good file is still analysed
    upload(app, ("notes.txt", b"hello"))
    assert len(app.error) == 1 and "notes.txt" in app.error[0].value
    assert not app.exception


def test_out_of_distribution_input_is_flagged(app):
    choose(app, FIXTURE_AE)
    upload(app, ("CT_small.dcm", dicom_bytes()))
    assert any("outside what the model was trained on" in w.value for w in app.warning)


# ------------------------------------------------------------------------------------- models and modes


def test_kl_and_combined_are_disabled_for_an_ae(app):
    choose(app, FIXTURE_AE)
    radio = app.radio(key="mode")
    assert radio.disabled and radio.value == "reconstruction"
    assert radio.options == ["Reconstruction", "KL", "Combined"]  # shown, greyed out
    assert any(
        "KL and Combined unavailable" in c.value and "needs a VAE" in c.value for c in app.sidebar.caption
    )


def test_switching_model_and_mode(app):
    choose(app, FIXTURE_AE)
    upload(app, ("brain.png", png_bytes()))
    ae_score = next(m.value for m in app.metric if m.label == "Score")
    choose(app, FIXTURE_VAE)
    radio = app.radio(key="mode")
    assert not radio.disabled and radio.options == ["Reconstruction", "KL", "Combined"]
    assert_result_shown(app)
    scores = {"reconstruction": next(m.value for m in app.metric if m.label == "Score")}
    for mode in ("kl", "combined"):
        choose(app, FIXTURE_VAE, mode)
        assert_result_shown(app)
        scores[mode] = next(m.value for m in app.metric if m.label == "Score")
    assert len(set(scores.values())) == 3, scores
    assert ae_score != scores["reconstruction"]
    # Back to the AE: the mode falls back to reconstruction.
    choose(app, FIXTURE_AE)
    assert app.radio(key="mode").value == "reconstruction"
    assert_result_shown(app)


def test_display_changes_do_not_rescore(app, monkeypatch):
    import ae4ad_core.analysis as analysis_module

    calls = []
    real = analysis_module.analyze
    monkeypatch.setattr(analysis_module, "analyze", lambda *a, **k: calls.append(1) or real(*a, **k))
    choose(app, FIXTURE_AE)
    calls.clear()  # the opening demo case was analysed with the chosen model
    upload(app, ("volume.nii", nifti_bytes(4)))
    assert len(calls) == 1
    app.sidebar.slider[0].set_value(0.9).run()  # opacity
    app.sidebar.selectbox[1].set_value("bone").run()  # window preset
    app.sidebar.toggle[0].set_value(True).run()  # invert
    app.sidebar.toggle[1].set_value(False).run()  # outlines
    [s for s in app.slider if s.key and s.key.startswith("slice:")][0].set_value(1).run()
    assert not app.exception
    assert len(calls) == 1
    choose(app, FIXTURE_VAE, "kl")
    assert len(calls) == 3  # one per new (model, mode): VAE reconstruction, then VAE KL


def test_latent_details_and_downloads_tabs(app):
    choose(app, FIXTURE_VAE)
    upload(app, ("MR_small.dcm", dicom_bytes("MR_small.dcm")))
    text = texts(app)
    assert "How surprising this image's code is to the model (latent surprisal)" in text
    assert "Latent entropy, Gaussian" in text and "bits" in text and "Effective dimension" in text
    assert "What preprocessing did" in text
    header = app.table[0].value
    assert "Modality" in list(header["Field"])
    assert not any("Patient" in str(v) for v in header["Field"])
    labels = [b.label for b in app.get("download_button")]
    # a DICOM upload also offers its DICOM results (Parametric Map + Segmentation)
    assert labels == ["Maps (PNG)", "Result (JSON)", "Result (CSV)", "DICOM results (map + segmentation, ZIP)"]


def test_demo_cases_show_ground_truth(app):
    if not (REPO / "assets" / "demo" / "demo.npz").is_file():
        pytest.skip("assets/demo/demo.npz is not built yet")
    choose(app, FIXTURE_AE)
    app.sidebar.radio[0].set_value("Demo case").run()
    assert not app.exception, app.exception
    demo = app.sidebar.selectbox[0]
    labels = demo.options
    assert any(o.startswith("Normal") for o in labels) and any(o.startswith("Lesion") for o in labels)
    demo.select_index(next(k for k, o in enumerate(labels) if o.startswith("Lesion"))).run()
    assert not app.exception, app.exception
    assert_result_shown(app)
    assert "ground truth" in texts(app)


def test_volume_sent_from_the_batch_page_opens_at_its_slice(fixture_models):
    """The Batch page's "open in Analyze" contract: session_state["analyze_request"] selects source, model,
    mode and slice."""
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["analyze_request"] = {
        "name": "volume.nii.gz", "data": nifti_bytes(6), "slice": 1, "model": FIXTURE_VAE, "mode": "kl",
    }
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="source").value == "From Batch"
    assert at.selectbox(key="model").value == FIXTURE_VAE and at.radio(key="mode").value == "kl"
    slider = at.slider(key=[s.key for s in at.slider if s.key and s.key.startswith("slice:")][0])
    assert slider.value == 2  # 0-based slice 1 of the request, shown 1-based
    assert_result_shown(at)


def _same_name_same_size_volumes() -> tuple[bytes, bytes]:
    """Two uncompressed NIfTI volumes of one shape (so the same byte size) with different content."""
    import nibabel as nib
    from browser_utils import synthetic_brains

    first, second = (
        nib.Nifti1Image(np.transpose(synthetic_brains(3, size=64, seed=s), (2, 1, 0)) * 1000.0, np.eye(4))
        .to_bytes()
        for s in (7, 8)
    )
    assert len(first) == len(second) and first != second
    return first, second


def test_a_second_volume_with_the_same_name_and_size_shows_its_own_result(fixture_models):
    """Caches are keyed by the bytes: a second series sent from Batch under the same name and byte size (a
    name-and-length key would serve the first one's result) is scored anew."""
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    scores = []
    for data in _same_name_same_size_volumes():
        at.session_state["analyze_request"] = {
            "name": "series.nii", "data": data, "slice": 0, "model": FIXTURE_AE, "mode": "reconstruction",
        }
        at.run()
        assert not at.exception, at.exception
        assert_result_shown(at)
        scores.append(next(m.value for m in at.metric if m.label == "Score"))
    assert scores[0] != scores[1]


def test_a_second_upload_with_the_same_name_and_size_shows_its_own_result(app):
    choose(app, FIXTURE_AE)
    scores = []
    for data in _same_name_same_size_volumes():
        upload(app, ("series.nii", data))
        assert_result_shown(app)
        scores.append(next(m.value for m in app.metric if m.label == "Score"))
    assert scores[0] != scores[1]


# ------------------------------------------------------------------------------- real-patient first screen

REAL_ASSET = REPO / "assets" / "real" / "brats2013.npz"
needs_real = pytest.mark.skipif(not REAL_ASSET.is_file(), reason="assets/real/brats2013.npz is not there")


def mismatch_notes(at) -> list[str]:
    return [w.value for w in at.warning if "This model was trained on" in w.value]


@needs_real
def test_first_screen_is_a_real_tumour_case_already_analysed(app):
    """Opening the app with no input shows the first real-patient FLAIR case analysed by the FLAIR model, the
    expert outline in the legend, the licence, and the uploader in view."""
    from ae4ad_core.model_summary import default_model_for
    from ae4ad_core.registry import list_models

    assert app.radio(key="source").value == "Demo case"
    demo = app.sidebar.selectbox[0]
    assert demo.label == "Demo case"
    assert demo.options[0].startswith("Real patient (BraTS), FLAIR, slice ") and demo.options[0].endswith("glioma")
    assert demo.index == 0
    first_template = next(k for k, o in enumerate(demo.options) if not o.startswith("Real patient"))
    assert all(not o.startswith("Real patient") for o in demo.options[first_template:])  # real cases first
    assert app.selectbox(key="model").value == default_model_for(list_models(), "flair")
    assert app.selectbox(key="model").value.startswith("flair-")
    assert_result_shown(app)
    text = texts(app)
    assert "expert outline (tumour)" in text and "above the calibrated pixel threshold" in text
    assert "CC BY-NC-SA 3.0 CH — non-commercial" in text
    assert any("CC BY-NC-SA 3.0 CH" in c.value for c in app.sidebar.caption)  # the notice
    assert any("licence CC BY-NC-SA 3.0 CH (non-commercial)" in c.value for c in app.sidebar.caption)  # card
    assert app.sidebar.file_uploader[0].label.startswith("Upload")  # one click away
    assert "Analyze an image" in [t.value for t in app.title]
    assert not mismatch_notes(app)  # model and case agree


@needs_real
def test_a_t1c_case_preselects_its_model_and_a_mismatch_is_noted(app):
    from ae4ad_core.model_summary import card_sequence
    from ae4ad_core.registry import list_models

    demo = app.sidebar.selectbox[0]
    t1c = next(k for k, o in enumerate(demo.options) if o.startswith("Real patient (BraTS), T1c"))
    demo.select_index(t1c).run()
    assert not app.exception, app.exception
    chosen = app.selectbox(key="model").value
    if any(card_sequence(c) == "t1c" for c in list_models()):
        assert chosen.startswith("t1c-") and not mismatch_notes(app)
    # Any model can still be picked; a FLAIR model on a T1c case is noted.
    choose(app, "flair-intensity")
    assert app.selectbox(key="model").value == "flair-intensity"
    assert any("real FLAIR slices" in w and "real T1c slices" in w for w in mismatch_notes(app))
    assert_result_shown(app)
    # Back to the FLAIR case: its model is preselected again and the note goes.
    app.sidebar.selectbox[0].select_index(0).run()
    assert app.selectbox(key="model").value.startswith("flair-") and not mismatch_notes(app)


@needs_real
def test_an_upload_replaces_the_demo_case(app):
    upload(app, ("brain.png", png_bytes()))
    assert app.radio(key="source").value == "Upload"
    assert app.subheader[0].value == "brain.png"
    # Nothing tells this PNG's sequence: no model is preselected for it and no map is shown until one is picked.
    assert any("No model fits this scan" in i.value and "could not be told" in i.value for i in app.info)
    choose(app, FIXTURE_AE)
    assert_result_shown(app)
    assert any("teaching model" in w.value for w in app.warning)


# ------------------------------------------------------------------------------- whole-head uploads


def verdict_shown(at) -> bool:
    return "normal range: score at the" in texts(at)


def test_a_whole_head_flair_gets_a_flair_model_and_a_map_inside_the_brain(app, shared_data):
    """The TCGA FLAIR (a clinical whole head, skull and face included) preselects a FLAIR model, is brain-
    extracted and standardised, and its map has no above-threshold pixel outside the extracted brain."""
    from ae4ad_core.analysis import analyze_image
    from ae4ad_core.io import read_image
    from ae4ad_core.registry import load_shared_model
    from ae4ad_core.sequence import detect_sequence

    path = shared_data / "tcga-head" / "TCGA-FG-6692_flair.nii.gz"
    upload(app, (path.name, path.read_bytes()))
    assert not app.error, [e.value for e in app.error]
    model = app.selectbox(key="model").value
    assert model.startswith("flair-")
    assert_result_shown(app)
    text = texts(app)
    assert "FLAIR" in text and "Brain extraction:" in text and "Standardisation:" in text
    assert not any("trained on" in w.value and "this looks like" in w.value for w in app.warning)
    app.sidebar.toggle[2].set_value(True).run()  # the brain outline
    assert not app.exception and verdict_shown(app)
    # The page's call, on the library side: nothing above the threshold outside the brain.
    image = read_image(path)
    result = analyze_image(image, load_shared_model(model), guess=detect_sequence(image))
    assert result.analysis.volume_above_threshold
    for i in range(len(result.analysis)):
        assert not np.any(result.analysis.outline_in_input_space(i) & ~result.brain[i])
        assert not np.any(result.analysis.map_in_input_space(i)[~result.brain[i]])


def ct_dicom_bytes() -> bytes:
    """A synthetic head CT slice: Modality CT, Hounsfield units (air -1000, brain about 40, bone 1000)."""
    from _fixtures_io import dicom_bytes as make_dicom

    yy, xx = np.mgrid[-1:1:128j, -1:1:128j]
    r = np.hypot(yy / 0.8, xx / 0.7)
    hu = np.where(r < 0.9, 40.0, -1000.0) + np.where((r >= 0.9) & (r < 1.0), 1000.0, 0.0)
    hu += np.random.default_rng(0).normal(0, 5, hu.shape)
    return make_dicom((hu + 1024).astype(np.uint16), rescale=(1.0, -1024.0), window=(40.0, 80.0))


def test_a_ct_gets_the_plain_no_model_statement_and_no_map(app):
    upload(app, ("head_ct.dcm", ct_dicom_bytes()))
    assert not app.exception and not app.error
    statement = [i.value for i in app.info if "No model fits this scan" in i.value]
    assert statement and "CT" in statement[0] and "no map is shown" in statement[0]
    assert not verdict_shown(app) and images_shown(app) == 0
    # A model picked explicitly is used, with the warning that its map means nothing here.
    choose(app, FIXTURE_AE)
    assert_result_shown(app)
    assert any("this looks like a CT" in w.value for w in app.warning)


# ------------------------------------------------------------------------------------------- Models page


@pytest.fixture
def crossval_file(tmp_path, monkeypatch):
    """A made-up cross-validation report in tmp, served by ``load_crossval_report`` (the shipped one may be
    missing or different)."""
    from browser_utils import fake_crossval_report

    import ae4ad_core.crossval as cv

    path = fake_crossval_report(tmp_path / "crossval.json")
    real = cv.load_crossval_report
    monkeypatch.setattr(cv, "load_crossval_report", lambda p=None: real(path if p is None else p))
    return path


def test_models_page_puts_the_baseline_beside_the_models_and_shows_the_crossvalidation(app, crossval_file):
    app.switch_page("app_pages/models.py").run()
    assert not app.exception, app.exception
    zoo = app.dataframe[0].value
    for column in ("sequence", "data", "pixel AP", "level-matched AUROC", "vs baseline"):
        assert column in zoo.columns
    assert {FIXTURE_AE, FIXTURE_VAE} <= set(zoo["model"])
    if (REPO / "assets" / "models" / "flair-intensity").is_dir():
        real = zoo[zoo["data"] == "real patients"]
        assert real.iloc[0]["model"] == "flair-intensity"  # the baseline first, beside the others
        assert real.iloc[0]["vs baseline"] == 0.0 and real.iloc[0]["sequence"] == "FLAIR"
        ours = zoo[zoo["model"] == "flair-intensity"]
        assert ours.iloc[0]["type"] == "Plain-intensity baseline"
    assert len(app.dataframe) == 2
    cv_table = app.dataframe[1].value
    assert cv_table.iloc[0]["model"] == "flair-intensity" and "±" in cv_table.iloc[0]["pixel AP"]
    assert "Cross-validated over patients" in [s.value for s in app.subheader]


def test_models_page_without_a_crossvalidation_report(app, monkeypatch):
    import ae4ad_core.crossval as cv

    monkeypatch.setattr(cv, "load_crossval_report", lambda p=None: None)
    app.switch_page("app_pages/models.py").run()
    assert not app.exception, app.exception
    assert len(app.dataframe) == 1
    assert "Cross-validated over patients" not in [s.value for s in app.subheader]


def test_a_per_scan_volume_from_batch_is_chosen_for_again(fixture_models):
    """A volume the Batch page listed as "no model fits" (model chosen per scan) opens with the statement."""
    from ae4ad_core.batch import PER_SCAN

    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["analyze_request"] = {
        "name": "head_ct.dcm", "data": ct_dicom_bytes(), "slice": 0, "model": PER_SCAN, "mode": "reconstruction",
    }
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="source").value == "From Batch"
    assert any("No model fits this scan" in i.value for i in at.info) and not verdict_shown(at)
