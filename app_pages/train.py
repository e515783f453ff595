"""Train: a new model from your own normal images (files or a ZIP) or the demo data, in the background.

The job lives in a server-wide :class:`~ae4ad_core.jobs.JobManager`, so switching pages or reloading does not
stop it; a fragment polls its progress once a second while it runs.
"""

import pandas as pd
import streamlit as st

from ae4ad_app.widgets import upload_key
from ae4ad_core.data import load_demo
from ae4ad_core.errors import Ae4adError
from ae4ad_core.jobs import (
    JobManager,
    JobSnapshot,
    automatic_latent_dim,
    check_training_set,
    dataset_from_uploads,
    suggest_model_name,
)
from ae4ad_core.registry import user_models_dir
from ae4ad_core.training import TrainConfig

LATENT_CHOICES = ["automatic", 1, 2, 4, 8, 16, 32, 64, 128]
KINDS = {"ae": "Autoencoder (AE)", "vae": "Variational autoencoder (VAE)"}


@st.cache_resource
def job_manager() -> JobManager:
    return JobManager()


@st.cache_data(max_entries=4, show_spinner="Reading the images…")
def uploaded_dataset(key: str, _files):
    return dataset_from_uploads([(f.name, f.getvalue()) for f in _files])


def show_job(snap: JobSnapshot) -> None:
    st.progress(snap.fraction, text=f"**{snap.name}**: {snap.phase}, epoch {snap.epoch} of {snap.epochs}")
    last = snap.history[-1] if snap.history else {}
    val = next((h["val_loss"] for h in reversed(snap.history) if "val_loss" in h), None)
    cols = st.columns(4)
    cols[0].metric(
        "Training loss", f"{last['loss']:.4g}" if last else "–", help="Mean squared error per pixel."
    )
    cols[1].metric(
        "Validation loss",
        f"{val:.4g}" if val is not None else "–",
        help="The same error on held-out normal images.",
    )
    cols[2].metric("Throughput", f"{snap.images_per_second:.0f} images/s" if snap.images_per_second else "–")
    cols[3].metric("Elapsed", f"{snap.elapsed:.0f} s")
    if len(snap.history) > 1:
        curve = pd.DataFrame(snap.history).set_index("epoch")
        st.line_chart(curve[[c for c in ("loss", "val_loss") if c in curve]], x_label="epoch", y_label="loss")
    if snap.status == "done":
        st.success(
            f"Model **{snap.name}** is trained, calibrated on held-out normal images and registered in "
            f"`{snap.result_path}`. It now appears in the model pickers.",
            icon=":material/check_circle:",
        )
    elif snap.status == "failed":
        st.error(f"Training failed: {snap.error}", icon=":material/error:")
    elif snap.status == "cancelled":
        st.info("Training was cancelled; no model was saved.", icon=":material/cancel:")


@st.fragment(run_every=1)
def live(job_id: str) -> None:
    job = job_manager().get(job_id)
    snap = job.snapshot()
    show_job(snap)
    if not snap.running:
        st.rerun()
    if st.button("Cancel training", icon=":material/stop:", key="train_cancel"):
        job.cancel()


st.title("Train a model")
st.caption(
    "Train an autoencoder on **normal** images only; it learns what normal looks like, is calibrated on "
    "held-out normal images and is registered for the Analyze and Batch pages. Research and teaching tool "
    "— not for diagnosis."
)
manager = job_manager()

# ------------------------------------------------------------------------------------------------ data
st.subheader("1. Normal images")
source = st.radio("Source", ["Upload normal images", "Demo brain MRI"], horizontal=True, key="train_source")
dataset = None
try:
    if source == "Demo brain MRI":
        dataset = load_demo()
    else:
        files = st.file_uploader(
            "Normal images: DICOM files or series, NIfTI, PNG... or a ZIP of them",
            type=None,
            accept_multiple_files=True,
            key="train_files",
            help="Each file or DICOM series is one subject: training and validation are split by subject.",
        )
        if files:
            dataset = uploaded_dataset(upload_key(files), files)
        else:
            st.info(
                "Upload at least 20 normal images (30 or more recommended), or use the demo data.",
                icon=":material/upload_file:",
            )
except Ae4adError as exc:
    st.error(str(exc), icon=":material/error:")
guidance = check_training_set(dataset) if dataset is not None else []
if dataset is not None:
    st.caption(dataset.description)
for g in guidance:
    (st.error if g.level == "error" else st.warning)(g.message, icon=":material/warning:")
blocked = dataset is None or any(g.level == "error" for g in guidance)

# ------------------------------------------------------------------------------------------------ settings
st.subheader("2. Model")
c1, c2, c3, c4 = st.columns(4)
kind = c1.radio("Type", list(KINDS), format_func=KINDS.get, key="train_kind")
choice = c2.selectbox(
    "Latent size d",
    LATENT_CHOICES,
    key="train_d",
    help="How many numbers the model may keep per image. Smaller = less information about "
    "anomalies passes through (AE4AD), but normal images must still be redrawn.",
)
auto_d, why = automatic_latent_dim()
d = auto_d if choice == "automatic" else int(choice)
if choice == "automatic":
    c2.caption(why)
epochs = c3.number_input(
    "Epochs",
    min_value=1,
    max_value=1000,
    value=30,
    key="train_epochs",
    help="Passes over the training images.",
)
size = c4.selectbox(
    "Input size (px)",
    [64, 128],
    key="train_size",
    help="64 px is the paper's setting and trains about 4x faster than 128 px.",
)
name = st.text_input("Model name", value=suggest_model_name(f"my-{kind}-d{d}"), key=f"train_name:{kind}:{d}")

# ------------------------------------------------------------------------------------------------ job
current = manager.get(st.session_state.get("train_job", ""))
if current is None:  # e.g. after a reload: follow the newest job still running on this server
    current = next((j for j in manager.list() if j.status == "running"), None)
busy = current is not None and current.status == "running"
if st.button(
    "Train", type="primary", icon=":material/model_training:", disabled=blocked or busy, key="train_start"
):
    config = TrainConfig(kind=kind, latent_dim=d, image_size=int(size), epochs=int(epochs), val_every=1)
    try:
        current = manager.start(config, dataset, name=name.strip())
        st.session_state["train_job"] = current.job_id
        st.rerun()  # redraw with the job running (Train disabled, live progress)
    except (ValueError, Ae4adError) as exc:
        st.error(str(exc), icon=":material/error:")
st.caption(f"New models are saved in `{user_models_dir()}`.")

if current is not None:
    st.subheader("3. Progress")
    if current.status == "running":
        live(current.job_id)
    else:
        show_job(current.snapshot())
