"""Analyze: a file, a DICOM series or a demo case -> anomaly maps, a verdict, latent statistics.

Scoring runs once per (input, model, mode) and is cached; display settings (window, opacity, outlines,
slice) only redraw.
"""

from functools import partial

import numpy as np
import streamlit as st

from ae4ad_core import display
from ae4ad_core.analysis import analyze, calibration_of
from ae4ad_core.archive import expand_uploads
from ae4ad_core.errors import Ae4adError
from ae4ad_core.io import Image, read_images
from ae4ad_core.plotting import figure_to_png, latent_scatter_figure, score_histogram_figure, spectrum_figure
from ae4ad_core.registry import find_model_dir, list_models, load_shared_model
from ae4ad_core.scoring import modes_for


def get_model(name: str, stamp: float):
    """The model, from the library's process-wide cache (shared with the other pages; ``stamp`` keeps the
    callers' cache keys tied to the card's version)."""
    return load_shared_model(name)


@st.cache_resource(ttl=20, show_spinner=False)  # cards are frozen and read-only: no copy per rerun
def get_cards():
    return list_models()


@st.cache_data(show_spinner="Loading demo cases…")
def get_demo_cases():
    return display.demo_cases()


@st.cache_data(max_entries=4, ttl=3600, show_spinner="Reading files…")
def read_uploads(key: str, _files: list[tuple[str, bytes]]):
    files, zip_errors = expand_uploads(_files)
    images, errors = read_images(files)
    return images, zip_errors + errors


def read_or_stop(key: str, files: list[tuple[str, bytes]]) -> list[Image]:
    """The readable images of ``files``; one error line per file that could not be read; stop if none."""
    images, errors = read_uploads(key, files)
    for failed, reason in errors:
        st.error(reason if reason.startswith(failed) else f"{failed}: {reason}", icon=":material/error:")
    if not images:
        st.stop()
    return images


@st.cache_data(max_entries=32, show_spinner="Scoring…")
def run_analysis(key: str, model_name: str, stamp: float, mode: str, _pixels):
    return analyze(_pixels, get_model(model_name, stamp), mode=mode)


@st.cache_data(max_entries=256, show_spinner=False)
def chart_png(kind: str, model_name: str, stamp: float, mode: str, point: tuple) -> bytes:
    cal = calibration_of(get_model(model_name, stamp))
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
    st.session_state.update(source="From Batch", model=request["model"], mode=request["mode"])

with st.sidebar:
    st.header("Input")
    sources = ["Upload", "Demo case"] + (["From Batch"] if request else [])
    source = st.radio("Source", sources, horizontal=True, label_visibility="collapsed", key="source")
    files = None
    if source == "Upload":
        files = st.file_uploader(
            "DICOM files or series, NIfTI, PNG, JPEG, TIFF, or a ZIP of them",
            type=None,
            accept_multiple_files=True,
            help="Any file name works (PACS exports often have none): the content decides the format. "
            "Several DICOM files of one series become one volume.",
        )
    else:
        cases = {c.key: c for c in get_demo_cases()}
        case = cases[st.selectbox("Demo case", list(cases), format_func=lambda k: cases[k].label)]

    st.header("Model")
    cards = get_cards()
    if not cards:
        st.error("No models found in assets/models or the user's models folder.")
        st.stop()
    names = [c.name for c in cards]
    if st.session_state.get("model") not in names:
        st.session_state["model"] = display.default_model_name(cards)
    name = st.selectbox("Model", names, key="model")
    card = cards[names.index(name)]
    st.caption(display.card_summary(card))
    stamp = (find_model_dir(name) / "card.json").stat().st_mtime
    loaded = get_model(name, stamp)
    modes = modes_for(loaded.inference)
    available = [m for m, reason in modes.items() if reason is None]
    if st.session_state.get("mode") not in available:
        st.session_state["mode"] = available[0]
    mode = st.radio(
        "Scoring mode",
        available if len(available) > 1 else list(modes),
        key="mode",
        format_func=display.MODE_LABELS.get,
        disabled=len(available) == 1,
        captions=[display.MODE_HELP[m] for m in (available if len(available) > 1 else modes)],
    )
    for reason in dict.fromkeys(r for r in modes.values() if r):
        off = " and ".join(display.MODE_LABELS[m] for m, r in modes.items() if r == reason)
        st.caption(f":material/block: {off} unavailable for this model: {reason}.")

    st.header("Display")
    preset = st.selectbox("Window / level", display.WINDOW_PRESETS, format_func=str.capitalize)
    invert = st.toggle("Invert grey levels")
    opacity = st.slider("Map opacity", 0.0, 1.0, 0.5, 0.05)
    outlines = st.toggle("Show outlines", value=True)

# ------------------------------------------------------------------------------------------------- input
truth, first_slice = None, None
if source == "From Batch":
    key = display.digest(request["name"], str(len(request["data"])))
    images = read_or_stop(key, [(request["name"], request["data"])])
    image, first_slice = images[0], int(request.get("slice", 0))
elif source == "Upload":
    if not files:
        st.title("Analyze an image")
        st.info(
            "Upload a DICOM file or series, a NIfTI volume or a PNG/JPEG/TIFF image in the sidebar, "
            "or pick a demo case.",
            icon=":material/upload_file:",
        )
        st.stop()
    key = display.digest(*[f"{f.file_id}:{f.name}:{f.size}" for f in files])
    images = read_or_stop(key, [(f.name, f.getvalue()) for f in files])
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
    )
    key, truth = f"demo:{case.key}", case.mask

try:
    analysis = run_analysis(key, name, stamp, mode, image.pixels)
except Ae4adError as exc:
    st.error(str(exc), icon=":material/error:")
    st.stop()

# ------------------------------------------------------------------------------------------------- views
st.subheader(image.name)
views = st.container()
i = 0
if image.n_slices > 1:
    start = image.n_slices // 2 if first_slice is None else min(first_slice, image.n_slices - 1)
    i = st.slider("Slice", 1, image.n_slices, start + 1, key=f"slice:{key}") - 1
window = display.window_for(
    image.pixels, preset, default_window=image.default_window, ct=display.is_ct(image.metadata)
)
inp, rec, over = display.view_images(
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
with views:
    for col, img, caption in zip(
        st.columns(3), (inp, rec, over), ("Input", "Reconstruction", "Anomaly map over input"), strict=True
    ):
        col.image(img, caption=caption, width="stretch", output_format="PNG")
    left, right = st.columns([2, 1])
    left.caption(display.legend_html(preset, image, truth is not None), unsafe_allow_html=True)
    right.image(display.colorbar_png(analysis.display_max), width="stretch")

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
        text.columns(4), display.verdict_numbers(analysis, i), strict=True
    ):
        col.metric(label, value, help=helptext)
    if summary := display.volume_summary(analysis):
        text.caption(summary)
    if caveat := display.anatomy_caveat(card, mode):
        text.caption(f":material/info: {caveat}")
    hist.image(chart_png("histogram", name, stamp, mode, (float(analysis.scores[i]),)), width="stretch")

latent_tab, details_tab, downloads_tab = st.tabs(["Latent statistics", "Image details", "Downloads"])
with latent_tab:
    stats = calibration_of(loaded).latent
    words, plots = st.columns([3, 2])
    for stat, value, sentence in display.latent_rows(
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
        [{"Field": k, "Value": v} for k, v in display.header_rows(image)],
        hide_index=True,
        border="horizontal",
    )
    steps.markdown("**What preprocessing did**")
    steps.markdown(
        "\n".join(
            f"1. {s}" for s in display.preprocessing_steps(image, card.preprocessing, analysis.geometries[i])
        )
    )
with downloads_tab:
    file_name = partial(display.download_name, image.name, name, mode)
    panels = partial(display.panels_png, (inp, rec, over), ("Input", "Reconstruction", "Anomaly map"))
    as_json = partial(display.result_json, analysis, image=image, device=str(loaded.device))
    cols = st.columns(3)
    cols[0].download_button(
        "Maps (PNG)", panels, file_name(f"_slice{i + 1}.png"), "image/png", on_click="ignore"
    )
    cols[1].download_button(
        "Result (JSON)", as_json, file_name(".json"), "application/json", on_click="ignore"
    )
    cols[2].download_button(
        "Result (CSV)",
        partial(display.records_csv, analysis),
        file_name(".csv"),
        "text/csv",
        on_click="ignore",
    )
    st.caption("Results hold scores and settings only: no pixel data and no patient identifiers.")
