"""Models: the zoo with its evaluation metrics (the intensity baseline beside the autoencoders), the
cross-validation over real patients, ROC/PR curves and latent entropy."""

import altair as alt
import pandas as pd
import streamlit as st

from ae4ad_app.widgets import get_cards
from ae4ad_core import crossval
from ae4ad_core.explanations import MODE_LABELS
from ae4ad_core.model_summary import (
    SEQUENCE_WORDS,
    ae_sweep_rows,
    card_summary,
    crossval_rows,
    evaluation_result,
    zoo_rows,
)
from ae4ad_core.plotting import figure_to_png, roc_pr_figures


@st.cache_data(max_entries=32, show_spinner=False)
def curves_png(names: tuple[str, ...], mode: str) -> tuple[bytes, bytes]:
    cards = {c.name: c for c in get_cards()}
    roc, pr = roc_pr_figures({n: evaluation_result(cards[n], mode) for n in names})
    return figure_to_png(roc), figure_to_png(pr)


def line_vs_d(rows: list[dict], y: str, title: str) -> alt.Chart:
    return (
        alt.Chart(pd.DataFrame(rows), title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("d:Q", scale=alt.Scale(type="log", base=2), title="latent size d"),
            y=alt.Y(f"{y}:Q", scale=alt.Scale(zero=False), title=y),
            tooltip=["model", "d", y],
        )
    )


st.title("Model zoo")
st.caption(
    "Every model in the registry: the real-patient models (`flair-*`, `t1c-*`, with the plain-intensity "
    "baseline first), the template-brain zoo and the models you trained; nothing is hidden, whether it beats "
    "the baseline or not. Real-patient models are evaluated on the held-out BraTS patient, the template zoo on "
    "the demo test split (synthetic lesions in held-out brains); thresholds come from normal images only. "
    "Real-patient models: licence CC BY-NC-SA 3.0 CH, non-commercial."
)
cards = get_cards()
if not cards:
    st.info("No models yet: train one with `ae4ad train` or on the Train page.", icon=":material/info:")
    st.stop()

rows = zoo_rows(cards)
number = st.column_config.NumberColumn
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    height="content",
    column_config={
        "mode": st.column_config.TextColumn(help="Scoring mode: how the map and the image score are made."),
        "sequence": st.column_config.TextColumn(help="MRI sequence of the training slices."),
        "data": st.column_config.TextColumn(
            help="Real glioma patients (BraTS 2013) or the template brains of the demo set."
        ),
        "image AUROC": number(
            format="%.3f", help="Area under the ROC curve, image level (1 = perfect, 0.5 = chance)."
        ),
        "level-matched AUROC": number(
            format="%.3f",
            help="Image AUROC with normal and tumour slices matched by brain area, so a score that only "
            "follows how much brain a slice holds gains nothing.",
        ),
        "image AP": number(format="%.3f", help="Average precision, image level."),
        "pixel AP": number(format="%.3f", help="Average precision over all pooled test pixels."),
        "vs baseline": number(
            format="%+.3f",
            help="Pixel AP minus the pixel AP of the plain-intensity baseline of the same sequence and data "
            "(negative: the baseline localises better).",
        ),
        "Dice (calibrated)": number(
            format="%.3f", help="Lesion overlap at the threshold calibrated on normal images."
        ),
        "latent entropy (nats)": number(
            format="%.1f", help="Gaussian estimate of the latent entropy of normal images."
        ),
        "k-NN entropy (nats)": number(
            format="%.1f", help="Kozachenko-Leonenko estimate of the same entropy."
        ),
        "effective dim": number(format="%.1f", help="How many latent dimensions the model really uses."),
        "score vs anatomy": number(
            format="%+.2f",
            help="Spearman correlation of normal slices' scores with their brain area (near 0 is best).",
        ),
    },
)

with st.expander("What each model was trained on: data, sequence, licence"):
    for c in cards:
        st.markdown(f"- `{c.name}`: {card_summary(c)}")

report = crossval.load_crossval_report()
if report:
    st.subheader("Cross-validated over patients")
    st.caption(
        "Leave one patient out: each model is trained on the other patients' tumour-free slices, calibrated on "
        "one of them and tested on the left-out patient; mean ± std over the folds. The plain-intensity "
        "baseline comes first: a model earns its place only by beating it."
    )
    for seq in report:
        if table := crossval_rows(report, seq):
            st.markdown(f"**{SEQUENCE_WORDS.get(seq, seq)}** ({len(report[seq].get('patients') or [])} patients)")
            st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch", height="content")

sweep = ae_sweep_rows(cards)
if sweep:
    st.subheader("Latent size d: detection and information")
    st.caption(
        "AE4AD (Cai et al., MICCAI 2024): an autoencoder detects anomalies best when its latent code "
        "carries as little information as possible while normal images are still reconstructed."
    )
    left, right = st.columns(2)
    left.altair_chart(
        line_vs_d([r for r in sweep if r["image AUROC"] is not None], "image AUROC", "Image AUROC vs d"),
        width="stretch",
    )
    right.altair_chart(
        line_vs_d(
            [r for r in sweep if r["latent entropy (nats)"] is not None],
            "latent entropy (nats)",
            "Latent entropy vs d",
        ),
        width="stretch",
    )

st.subheader("Latent entropy of each model")
first_rows: dict = {}
for r in rows:  # one row per model (its first mode)
    first_rows.setdefault(r["model"], r)
per_model = list(first_rows.values())
entropy = pd.DataFrame(
    [
        {"model": r["model"], "estimate": est, "nats": r[col]}
        for r in per_model
        for est, col in (("Gaussian", "latent entropy (nats)"), ("k-NN", "k-NN entropy (nats)"))
        if r[col] is not None
    ]
)
if not entropy.empty:
    st.altair_chart(
        alt.Chart(entropy)
        .mark_bar()
        .encode(
            x=alt.X("model:N", sort=[c.name for c in cards], title=None, axis=alt.Axis(labelAngle=0)),
            xOffset="estimate:N",
            y=alt.Y("nats:Q", title="latent entropy (nats)"),
            color="estimate:N",
            tooltip=["model", "estimate", alt.Tooltip("nats:Q", format=".1f")],
        )
        .properties(height=260),
        width="stretch",
    )

st.subheader("ROC and precision-recall curves")
mode = st.radio(
    "Scoring mode", list(MODE_LABELS), format_func=MODE_LABELS.get, horizontal=True
)
evaluated = [c.name for c in cards if evaluation_result(c, mode) is not None]
picked = st.multiselect("Models", evaluated, default=evaluated[:6])
if not picked:
    st.info("No evaluated model in this mode (KL and Combined need a VAE).", icon=":material/info:")
    st.stop()
roc, pr = curves_png(tuple(picked), mode)
left, right, _ = st.columns([2, 2, 1])
left.image(roc, width="stretch")
right.image(pr, width="stretch")
