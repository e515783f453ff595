"""Batch: many files, DICOM series or ZIP archives at once -> a table ranked by anomaly score, CSV and PDF.

Scoring runs when the user presses the button and is kept in the session per (files, model, mode); the table,
exports and the identifiers checkbox only redraw.
"""

from functools import partial

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from ae4ad_app.widgets import model_picker, upload_key
from ae4ad_core.batch import PER_SCAN, score_uploads
from ae4ad_core.content_hash import content_digest
from ae4ad_core.errors import Ae4adError
from ae4ad_core.report import NOTICE, build_pdf_report

ANALYZE_PAGE = "app_pages/analyze.py"

st.title("Batch screening")
st.caption(
    f"Score many images at once and rank them by how unlike the model's normal images they are. {NOTICE}"
)

with st.sidebar:
    st.header("Model")
    per_scan = st.toggle(
        "The model that fits each scan",
        value=True,
        key="batch_per_scan",
        help="Each scan gets the model trained on its sequence (FLAIR, T1c...), found from its header, file "
        "name and pixels; a scan no model fits (CT, X-ray, another sequence) is listed, not scored. Off: the "
        "model below scores every scan, with a warning where it does not fit.",
    )
    if per_scan:
        name, card, loaded, mode, stamp = PER_SCAN, None, None, "reconstruction", 0.0
        st.caption("Scoring mode: reconstruction.")
    else:
        choice = model_picker(model_key="batch_model", mode_key="batch_mode")
        name, card, loaded, mode, stamp = choice.name, choice.card, choice.model, choice.mode, choice.stamp

files = st.file_uploader(
    "Images, DICOM series or ZIP archives of them",
    type=None,
    accept_multiple_files=True,
    key="batch_files",
    help="Any file name works (PACS exports often have none): the content decides the format. DICOM files of "
    "one series become one volume.",
)
if not files:
    st.info(
        "Upload files or a ZIP archive to score them all with the chosen model.",
        icon=":material/upload_file:",
    )
    st.stop()

key = content_digest(upload_key(files), name, str(stamp), mode)
if st.button(f"Score {len(files)} upload(s)", type="primary", icon=":material/play_arrow:"):
    bar = st.progress(0.0, text="Starting…")
    try:
        result = score_uploads(
            [(f.name, f.getvalue()) for f in files],
            loaded,
            mode=mode,
            include_identifiers=True,
            progress=lambda frac, text: bar.progress(frac, text=text),
        )
    except Ae4adError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
    bar.empty()
    st.session_state["batch_result"] = (key, result)

stored = st.session_state.get("batch_result")
if stored is None or stored[0] != key:
    st.info("Press **Score** to rank these uploads with the chosen model and mode.", icon=":material/info:")
    st.stop()
result = stored[1]

# ------------------------------------------------------------------------------------------------ summary
cols = st.columns(5 if per_scan else 4)
cols[0].metric(
    "Volumes scored",
    len(result.volumes) - result.n_unfit,
    help="A file, or a DICOM series read as one volume.",
)
cols[1].metric(
    "Above the threshold",
    result.n_above,
    help=f"At least one slice above the threshold set for {result.fpr:.0%} false positives on normals.",
)
if per_scan:
    cols[2].metric(
        "No model fits",
        result.n_unfit,
        help="CT, X-ray, another body part or sequence: listed, not scored (a map would mean nothing).",
    )
else:
    cols[2].metric(
        "Threshold", f"{result.threshold:.4g}", help="Calibrated on normal validation images only."
    )
cols[-1].metric("Could not be read", len(result.errors))

# ------------------------------------------------------------------------------------------------ ranked table
if result.volumes:
    st.subheader("Ranked by anomaly score")
    table = result.ranked_table()
    number = st.column_config.NumberColumn
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        row_height=72,
        key="batch_table",
        on_select="rerun",
        selection_mode="single-row",
        column_order=[c for c in table.columns if c != "volume_id"],
        column_config={
            "image": st.column_config.ImageColumn("image", help="The highest-scoring slice."),
            "map": st.column_config.ImageColumn(
                "map",
                help="Anomaly map over it: fixed scale from normal images; cyan = above the pixel threshold.",
            ),
            "score": number(format="%.4g", help="Volume score = the highest slice score."),
            "percentile": number(
                format="%.0f", help="Percent of normal validation images scoring at or below."
            ),
            "sequence": st.column_config.TextColumn(
                help="The sequence detected (header, file name, pixels)."
            ),
            "fits": st.column_config.CheckboxColumn(help="Scored by a model trained on this kind of scan."),
            "brain fraction": number(format="%.2f", help="Share of the image inside the extracted brain."),
        },
    )
    selected = event.selection.rows if event is not None else []
    if selected:
        vid = table["volume_id"].iloc[selected[0]]
        label = table["file / series"].iloc[selected[0]]
        if st.button(f"Open {label} in the Analyze page", icon=":material/open_in_new:"):
            st.session_state["analyze_request"] = result.analyze_request(vid)
            try:
                st.switch_page(ANALYZE_PAGE)
            except StreamlitAPIException:
                st.warning("The Analyze page is not part of this app.", icon=":material/warning:")
    else:
        st.caption("Select a row to open that volume in the Analyze page.")
    with st.expander("Every slice"):
        st.dataframe(result.to_dataframe("slice"), hide_index=True, width="stretch")

if result.errors:
    st.subheader(f"{len(result.errors)} upload(s) could not be read or scored")
    st.dataframe(pd.DataFrame(result.errors, columns=["file", "reason"]), hide_index=True, width="stretch")

# ------------------------------------------------------------------------------------------------ exports
st.subheader("Export")
with_ids = st.checkbox(
    "Include patient identifiers (name, ID, birth date, accession number, study date, "
    "institution) in the exports",
    value=False,
    key="batch_identifiers",
    help="Off by default: exports are de-identified; file names are kept.",
)
stem = f"batch_{name}_{mode}"
left, right = st.columns(2)
left.download_button(
    "Results (CSV)",
    result.to_csv(include_identifiers=with_ids),
    f"{stem}.csv",
    "text/csv",
    icon=":material/table:",
    on_click="ignore",
    key="batch_csv",
)
right.download_button(
    "Report (PDF)",
    partial(build_pdf_report, result, card, include_identifiers=with_ids),
    f"{stem}.pdf",
    "application/pdf",
    icon=":material/picture_as_pdf:",
    on_click="ignore",
    key="batch_pdf",
)
