"""Analyze: a file, a DICOM series or a demo case -> anomaly maps, a verdict, latent statistics.

The page opens on the first real-patient demo case, already analysed by the best model of its sequence, with
the uploader in view; an upload switches the input to it. Choosing a demo case preselects the model for its
sequence (:func:`ae4ad_core.model_summary.default_model_for`); any model can still be picked, with a note when
its sequence differs from the case's.

An upload goes the whole-head path (:func:`ae4ad_core.analysis.analyze_image`): its sequence is detected, the
model trained on it is preselected (or a plain "no model fits" statement replaces the map, unless the user picks
a model, which then comes with a warning), the brain is extracted and standardised as the model's training data
were, and the map stops at the brain. The Image details tab and the JSON/CSV say what was detected, chosen and
done.

Scoring runs once per (input, model, mode) and is cached; display settings (window, opacity, outlines,
slice) only redraw.
"""

from functools import partial

import numpy as np
import streamlit as st

from ae4ad_app.widgets import (
    demo_case_key,
    get_cards,
    get_demo_cases,
    get_model,
    model_picker,
    read_or_stop,
    upload_key,
)
from ae4ad_core import explanations, exports, model_summary, render
from ae4ad_core.analysis import analyze_image, calibration_of
from ae4ad_core.batch import PER_SCAN
from ae4ad_core.content_hash import files_digest
from ae4ad_core.demo_cases import case_caption
from ae4ad_core.dicom_results import dicom_results_for_uploads
from ae4ad_core.errors import Ae4adError
from ae4ad_core.explanations import preparation_lines
from ae4ad_core.io import Image
from ae4ad_core.model_choice import choose_model
from ae4ad_core.model_choice import is_patient_model as card_is_patient_model
from ae4ad_core.plotting import figure_to_png, latent_scatter_figure, score_histogram_figure, spectrum_figure
from ae4ad_core.read_only import freeze_arrays
from ae4ad_core.sequence import SequenceGuess, detect_sequence


@st.cache_resource(max_entries=16, show_spinner="Finding the brain and scoring…")
def run_analysis(key: str, model_name: str, stamp: float, mode: str, _image, _guess):
    """Brain extraction, standardisation and scoring, once per (input content, model, mode); the result is
    shared read-only by every session (no pickled copy kept, none unpickled on a rerun)."""
    return freeze_arrays(analyze_image(_image, get_model(model_name), cards=get_cards(), mode=mode, guess=_guess))


@st.cache_data(max_entries=64, show_spinner=False)
def guess_of(key: str, _image) -> SequenceGuess:
    """What the upload appears to be (sequence, modality, body part), once per content."""
    return detect_sequence(_image)


def demo_guess(case) -> SequenceGuess:
    """A demo case's sequence is known."""
    return SequenceGuess(
        case.sequence or "unknown", "MR", "brain", 1.0, [f"demo case: a {case.sequence or 'brain'} slice"]
    )


@st.cache_data(max_entries=256, show_spinner=False)
def chart_png(kind: str, model_name: str, stamp: float, mode: str, point: tuple) -> bytes:
    cal = calibration_of(get_model(model_name))
    if kind == "histogram":
        fig = score_histogram_figure(cal.modes[mode].normal_scores, point[0], cal.modes[mode].threshold)
    elif kind == "spectrum":
        fig = spectrum_figure(cal.latent.spectrum)
    else:
        fig = latent_scatter_figure(cal.latent.pca_points, np.asarray(point))
    return figure_to_png(fig)


# ----------------------------------------------------------------------------------------------- sidebar
# A volume sent from the Batch page: {"name", "data", "slice", "model", "mode"} (see app_pages/batch.py).
request = st.session_state.get("analyze_request")
if request and st.session_state.get("_request_shown") is not request:
    st.session_state["_request_shown"] = request
    st.session_state["_request_key"] = files_digest([(request["name"], request["data"])])  # hashed once
    st.session_state.update(source="From Batch", mode=request["mode"])
    if request["model"] == PER_SCAN:  # the model chosen per scan: this page chooses it again (or none)
        st.session_state["_per_scan_request"] = True
    else:
        st.session_state.update(model=request["model"], _per_scan_request=False)


def _prefer_upload() -> None:
    """A new upload becomes the input (the uploader stays in view whatever the source)."""
    if st.session_state.get("uploads"):
        st.session_state["source"] = "Upload"


with st.sidebar:
    st.header("Input")
    sources = ["Demo case", "Upload"] + (["From Batch"] if request else [])
    source = st.radio("Source", sources, horizontal=True, label_visibility="collapsed", key="source")
    case = None
    if source == "Demo case":
        cases = {c.key: c for c in get_demo_cases()}
        if not cases:  # no demo data installed: the uploader below is the input
            source = "Upload"
        else:
            case = cases[st.selectbox("Demo case", list(cases), format_func=lambda k: cases[k].label)]
            if case.licence:
                st.caption(f":material/license: {case.licence}")
    files = st.file_uploader(
        "Upload: DICOM files or series, NIfTI, PNG, JPEG, TIFF, or a ZIP of them",
        type=None,
        accept_multiple_files=True,
        key="uploads",
        on_change=_prefer_upload,
        help="Any file name works (PACS exports often have none): the content decides the format. "
        "Several DICOM files of one series become one volume.",
    )

# ------------------------------------------------------------------------------------------------- input
st.title("Analyze an image")
truth, first_slice, uploaded = None, None, []
if source == "From Batch":
    key = st.session_state["_request_key"]
    uploaded = [(request["name"], request["data"])]
    images = read_or_stop(key, uploaded)
    image, first_slice = images[0], int(request.get("slice", 0))
elif source == "Upload":
    if not files:
        st.info(
            "Upload a DICOM file or series, a NIfTI volume or a PNG/JPEG/TIFF image in the sidebar, "
            "or pick a demo case.",
            icon=":material/upload_file:",
        )
        st.stop()
    key = upload_key(files)
    uploaded = [(f.name, f.getvalue()) for f in files]
    images = read_or_stop(key, uploaded)
    pick = 0
    if len(images) > 1:
        pick = st.selectbox("Image", range(len(images)), format_func=lambda k: images[k].name)
    image, key = images[pick], f"{key}:{pick}"
else:
    image = Image(
        case.pixels,
        name=case.label,
        format="demo",
        metadata={"format": "demo", "lesion_kind": case.lesion_kind or "none (normal)"},
        default_window=case.window,
    )
    key, truth = demo_case_key(case), case.mask

# Which scan is it, and which model fits it? A new input preselects that model (a demo case: the model of its
# sequence); the user may pick another after, with a warning when it does not fit.
guess = demo_guess(case) if case is not None and source == "Demo case" else guess_of(key, image)
fit = choose_model(guess, get_cards())
if st.session_state.get("_model_chosen_for") != key:
    st.session_state["_model_chosen_for"] = key
    if source == "Demo case":
        preselect = model_summary.default_model_for(get_cards(), case.sequence)
    else:
        from_batch = source == "From Batch" and not st.session_state.get("_per_scan_request")
        preselect = None if from_batch else fit.model  # From Batch: the batch's model
        if source == "From Batch":  # the batch's model counts as picked; a per-scan request chooses anew
            st.session_state["_auto_model"] = None if from_batch else PER_SCAN  # set below once picked
    if preselect:
        st.session_state["model"] = st.session_state["_auto_model"] = preselect

with st.sidebar:
    st.header("Model")
    choice = model_picker()
    name, card, loaded, mode, stamp = choice.name, choice.card, choice.model, choice.mode, choice.stamp
    mismatch = model_summary.sequence_note(card, case.sequence) if case is not None else None
    if st.session_state.get("_auto_model") == PER_SCAN:  # the model shown was not picked for this scan
        st.session_state["_auto_model"] = name

    st.header("Display")
    preset = st.selectbox("Window / level", render.WINDOW_PRESETS, format_func=str.capitalize)
    invert = st.toggle("Invert grey levels")
    opacity = st.slider("Map opacity", 0.0, 1.0, 0.5, 0.05)
    outlines = st.toggle("Show outlines", value=True)
    show_brain = st.toggle(
        "Show brain outline",
        value=False,
        help="The edge of the brain found in the scan (grey); the map stops there.",
    )

# An upload no model fits gets a plain statement instead of a meaningless map, unless the user picked a model
# (not the one preselected): it is used then, with a warning. Demo cases and volumes from Batch are scored.
picked = st.session_state.get("model") != st.session_state.get("_auto_model")
if fit.model is None and not picked and source != "Demo case":
    st.subheader(image.name)
    st.info(f"**No model fits this scan.** {fit.reason}", icon=":material/block:")
    st.caption(
        f"Detected: {guess.describe()}. "
        + " ".join(guess.reasons[:3])
        + " To score it anyway, pick a model in the sidebar (its map will come with a warning)."
    )
    st.stop()

try:
    whole = run_analysis(key, name, stamp, mode, image, guess)
except Ae4adError as exc:
    st.error(str(exc), icon=":material/error:")
    st.stop()
analysis = whole.analysis

# ------------------------------------------------------------------------------------------------- views
st.subheader(image.name)
with st.container():  # one slot whatever it holds, so the elements below keep their place between inputs
    if case is not None and source == "Demo case":
        st.caption(case_caption(case))
    if mismatch:
        st.warning(mismatch, icon=":material/warning:")
    elif whole.warning and source != "Demo case":
        st.warning(whole.warning, icon=":material/warning:")
    elif source != "Demo case" and fit.model == name:
        st.caption(f":material/check_circle: {fit.reason}")
views = st.container()
i = 0
if image.n_slices > 1:
    start = image.n_slices // 2 if first_slice is None else min(first_slice, image.n_slices - 1)
    i = st.slider("Slice", 1, image.n_slices, start + 1, key=f"slice:{key}") - 1
window = render.window_for(
    image.pixels, preset, default_window=image.default_window, ct=render.is_ct(image.metadata)
)
inp, rec, over = render.view_images(
    image.pixels[i],
    analysis,
    i,
    window=window,
    preprocessing=card.preprocessing,
    invert=invert,
    opacity=opacity,
    show_outlines=outlines,
    truth=truth,
)
if whole.slices is not None and card_is_patient_model(card) and source != "Demo case":
    # The model saw the standardised brain (z-scores): its reconstruction is shown in those units.
    prepared = whole.slices[analysis.slice_indices[i]]
    _, rec, _ = render.view_images(
        prepared,
        analysis,
        i,
        window=render.window_for(prepared, "auto"),
        preprocessing=card.preprocessing,
        invert=invert,
        show_outlines=False,
    )
if show_brain and analysis.brain is not None:
    over = render.draw_brain_outline(over, analysis.brain[i])
with views:
    for col, img, caption in zip(
        st.columns(3), (inp, rec, over), ("Input", "Reconstruction", "Anomaly map over input"), strict=True
    ):
        col.image(img, caption=caption, width="stretch", output_format="PNG")
    left, right = st.columns([2, 1])
    truth_label = case.truth_label if case is not None and source == "Demo case" else "ground truth"
    left.caption(
        render.legend_html(preset, image, truth is not None, truth_label=truth_label), unsafe_allow_html=True
    )
    if note := model_summary.reconstruction_note(card):
        left.caption(f":material/info: {note}")
    right.image(render.colorbar_png(analysis.display_max), width="stretch")

# ----------------------------------------------------------------------------------------------- verdict
if analysis.warnings and analysis.warnings[i]:
    st.warning(
        "This input may be outside what the model was trained on: " + "; ".join(analysis.warnings[i]) + ".",
        icon=":material/warning:",
    )
with st.container(border=True):
    text, hist = st.columns([3, 2])
    above = bool(analysis.above_threshold[i])
    icon = ":red[:material/error:]" if above else ":green[:material/check_circle:]"
    text.markdown(f"#### {icon} {analysis.verdict(i)}")
    for col, (label, value, helptext) in zip(
        text.columns(4), explanations.verdict_numbers(analysis, i), strict=True
    ):
        col.metric(label, value, help=helptext)
    if summary := explanations.volume_summary(analysis):
        text.caption(summary)
    if caveat := model_summary.anatomy_caveat(card, mode):
        text.caption(f":material/info: {caveat}")
    hist.image(chart_png("histogram", name, stamp, mode, (float(analysis.scores[i]),)), width="stretch")

latent_tab, details_tab, downloads_tab = st.tabs(["Latent statistics", "Image details", "Downloads"])
with latent_tab:
    stats = calibration_of(loaded).latent
    words, plots = st.columns([3, 2])
    for stat, value, sentence in explanations.latent_rows(
        stats.summary(), float(analysis.surprisal[i]), float(analysis.surprisal_percentiles[i])
    ):
        words.markdown(f"**{stat}: {value}**  \n{sentence}")
    plots.image(chart_png("spectrum", name, stamp, mode, ()), width="stretch")
    plots.image(
        chart_png("scatter", name, stamp, mode, tuple(map(float, analysis.projection[i]))),
        width="stretch",
        caption="Where this image's code falls among normal images (2D projection of the latent codes).",
    )
with details_tab:
    facts, steps = st.columns(2)
    facts.markdown("**Header (de-identified)**")
    facts.table(
        [{"Field": k, "Value": v} for k, v in explanations.header_rows(image)],
        hide_index=True,
        border="horizontal",
    )
    steps.markdown("**What preprocessing did**")
    steps.markdown(
        "\n".join(
            f"1. {s}"
            for s in explanations.preprocessing_steps(image, card.preprocessing, analysis.geometries[i])
        )
    )
    steps.markdown("**Which scan, which model, which brain**")
    steps.markdown("\n".join(f"- {line}" for line in preparation_lines(whole)))
with downloads_tab:
    file_name = partial(exports.download_name, image.name, name, mode)
    panels = partial(render.panels_png, (inp, rec, over), ("Input", "Reconstruction", "Anomaly map"))
    as_json = partial(
        exports.result_json, analysis, image=image, device=str(loaded.device), extra=whole.to_record()
    )
    cols = st.columns(3)
    cols[0].download_button(
        "Maps (PNG)", panels, file_name(f"_slice{i + 1}.png"), "image/png", on_click="ignore"
    )
    cols[1].download_button(
        "Result (JSON)", as_json, file_name(".json"), "application/json", on_click="ignore"
    )
    cols[2].download_button(
        "Result (CSV)",
        partial(exports.records_csv, analysis, extra=exports.preparation_columns(whole)),
        file_name(".csv"),
        "text/csv",
        on_click="ignore",
    )
    st.caption("Results hold scores and settings only: no pixel data and no patient identifiers.")
    if uploaded and image.format in ("dicom", "dicom-series"):
        st.download_button(
            "DICOM results (map + segmentation, ZIP)",
            lambda: dicom_results_for_uploads(uploaded, image, analysis)[1],
            file_name("_dicom.zip"),
            "application/zip",
            on_click="ignore",
            help="A DICOM Parametric Map and Segmentation in the patient's study, shown over the scan by a "
            "DICOM viewer. They carry the patient's identifiers: they belong in that patient's record.",
        )
