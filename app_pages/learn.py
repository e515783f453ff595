"""Learn: the AE4AD idea shown with live models (latent size sweep, sweep results, VAE scoring modes).

All numbers and images come from :mod:`ae4ad_core.teaching`; this page reads the case picker and renders.
"""

import altair as alt
import pandas as pd
import streamlit as st

from ae4ad_app.widgets import get_cards
from ae4ad_core import crossval, model_summary, render, teaching
from ae4ad_core.errors import Ae4adError
from ae4ad_core.explanations import MODE_LABELS
from ae4ad_core.plotting import figure_to_png

AE4AD = (
    "Cai, Chen, Cheng. *Rethinking Autoencoders for Medical Anomaly Detection from a Theoretical "
    "Perspective.* MICCAI 2024. [arXiv:2403.09303](https://arxiv.org/abs/2403.09303)"
)
ZIMMERER = (
    "Zimmerer, Isensee, Petersen, Kohl, Maier-Hein. *Unsupervised Anomaly Localization using "
    "Variational Auto-Encoders.* MICCAI 2019. [arXiv:1907.02796](https://arxiv.org/abs/1907.02796)"
)
MODE_WORDS = {
    "reconstruction": (
        "Reconstruction error",
        "Where the VAE's redrawing differs from the input, pixel by pixel. Sharp, but it also "
        "flags fine anatomy that any autoencoder blurs.",
    ),
    "kl": (
        "KL gradient",
        "Which pixels push the image's code away from what the model expects of normal brains (how the KL "
        "term changes with each pixel). It needs no redrawing, but it is coarse.",
    ),
    "combined": (
        "Combined",
        "The product of the two: a pixel must be badly redrawn *and* push the code away. Zimmerer et "
        "al. found that adding the KL term localised brain tumours better than the reconstruction "
        "error alone, over many model settings.",
    ),
}


@st.cache_resource(show_spinner="Loading the models…", max_entries=8)
def get_models(names: tuple[str, ...]) -> dict:
    return dict(zip(names, teaching.load_models(names), strict=True))


@st.cache_data(show_spinner="Choosing lesion cases…")
def get_cases():
    return {case.key: case for case in teaching.teaching_cases()}


@st.cache_data(max_entries=16, show_spinner="Reconstructing with every latent size…")
def latent_row(case_key: str, names: tuple[str, ...], _models: dict):
    case = get_cases()[case_key]
    results = teaching.reconstruct_across_latent_sizes(
        case.pixels, [_models[n] for n in names], mask=case.mask
    )
    vmax = teaching.shared_display_max(results)
    images = [
        (render.grey_rgb(r.reconstruction), render.heat_rgb(r.map, vmax=vmax, truth=case.mask))
        for r in results
    ]
    return results, vmax, images


@st.cache_data(max_entries=16, show_spinner="Scoring with the VAE…")
def vae_modes(case_key: str, name: str, _models: dict):
    case = get_cases()[case_key]
    maps = teaching.compare_modes(case.pixels, _models[name], mask=case.mask)
    images = {m: render.heat_rgb(r.map, vmax=r.display_max, truth=case.mask) for m, r in maps.items()}
    return maps, images


@st.cache_data(show_spinner=False)
def sweep_png(path: str | None = None):
    summary = teaching.load_sweep_summary(path)
    if summary is None:
        return None, None
    return teaching.sweep_lesson(summary), figure_to_png(teaching.sweep_teaching_figure(summary))


def fmt(value, spec: str = ".3f", missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


st.title("Learn: why a narrow code finds lesions")
st.markdown(
    "An autoencoder squeezes each image through a short list of **d** numbers (its *latent code*) and "
    "redraws the image from that list. Trained on normal brains only, it learns to redraw normal anatomy. "
    "Where the redrawing and the input disagree, something unusual may be there: that difference is the "
    "**anomaly map**. The live models below show why the size of the code matters so much."
)
cards = get_cards()
try:
    cases = get_cases()
except Ae4adError as exc:
    st.info(f"The lessons use the demo data set, which is not available: {exc}", icon=":material/info:")
    st.stop()
if not cases:
    st.info("The demo data set has no lesion slices with masks to teach with.", icon=":material/info:")
    st.stop()
key = st.selectbox(
    "Lesion case",
    list(cases),
    format_func=lambda k: cases[k].label,
    key="learn_case",
    help="Clear lesions from the demo test set (synthetic lesions with exact masks).",
)
case = cases[key]

names = tuple(teaching.latent_size_models(cards))
vae = teaching.pick_vae(cards)
try:
    models = get_models(names + ((vae,) if vae else ()))
except Ae4adError as exc:
    st.error(f"A model could not be loaded: {exc}", icon=":material/error:")
    st.stop()

# ------------------------------------------------------------------------------- 1. the latent-size sweep
st.header("1. The size of the code decides what gets redrawn", divider="gray")
if not names:
    st.info("No `ae-d*` models in the registry: train the sweep with `ae4ad sweep`.", icon=":material/info:")
else:
    results, vmax, images = latent_row(key, names, models)
    cols = st.columns(len(results) + 1)
    cols[0].markdown("**Input**")
    cols[0].image(render.grey_rgb(case.pixels, truth=case.mask), width="stretch", output_format="PNG")
    cols[0].image(render.colorbar_png(vmax, label="squared error", orientation="vertical"), width="stretch")
    for col, r, (recon, amap) in zip(cols[1:], results, images, strict=True):
        col.markdown(f"**d = {r.d}**")
        col.image(recon, width="stretch", output_format="PNG")
        col.image(amap, width="stretch", output_format="PNG")
        contrast = f"lesion {r.lesion_contrast:.1f}×" if r.lesion_contrast is not None else ""
        col.caption(f"score {r.score:.3f}  \n{contrast}")
    st.caption(
        "Top row: the input (green outline: the true lesion) and each model's redrawing of it. Bottom row: "
        "each model's anomaly map (squared error), all on one colour scale. *Score*: the image's mean error. "
        "*Lesion n×*: how much brighter the map is inside the true lesion than over the rest of the brain."
    )
    extremes = teaching.lesion_contrast_extremes(results)
    here = ""
    if extremes is not None:
        d_best, best, d_last, last = extremes
        here = (
            f" In this case the map inside the lesion is {best:.1f}× the rest of the brain at d = {d_best}, "
            f"and {last:.1f}× at d = {d_last}."
        )
    st.markdown(
        "**What to look for.** With a small code there is no room for anything the model did not see in "
        "training, so the lesion is left out of the redrawing and stays bright in the map. As d grows the "
        "code gains room to spare, the network learns to copy almost anything, lesion included, and the map "
        "fades exactly where it matters. Too small a code fails the other way: even normal anatomy comes back "
        f"blurred (see d = {results[0].d}), which raises the error of normal brains too.{here} AE4AD "
        "(Cai et al.) explains this through the *information entropy* of the code: it should hold what normal "
        "images need and nothing more."
    )

# ------------------------------------------------------------------------------------- 2. sweep results
st.header("2. Choosing d without peeking at the answers", divider="gray")
lesson, png = sweep_png()
if lesson is None:
    st.info(
        "No sweep results yet: run `ae4ad sweep` and copy its `sweep.json` to assets/sweep/.",
        icon=":material/info:",
    )
else:
    chart, facts = st.columns([3, 1])
    chart.image(png, width="stretch")
    runs = max(lesson.n_runs) if lesson.n_runs else 0
    chart.caption(
        f"Left: detection on the demo test set against d. Right: information in the code of normal "
        f"images (latent entropy, two estimators). Mean ± std over {runs} training seeds per d."
    )
    facts.metric(
        "d chosen from normal images",
        lesson.chosen_d,
        help="Smallest d whose normal validation error is within "
        f"{fmt(lesson.tolerance, '.0%')} of the best: no test labels used.",
    )
    facts.metric(
        "Best d on the test set",
        lesson.oracle_d,
        help="The d a paper would report after looking at the test labels (an oracle).",
    )
    facts.metric(
        "AUROC lost by not peeking",
        f"{fmt(lesson.gap_points, '.1f')} points",
        help=f"AUROC {fmt(lesson.chosen_auroc)} at the chosen d vs {fmt(lesson.oracle_auroc)} "
        "at the oracle d.",
    )
    st.markdown(
        f"AE4AD picks d by its test results, which a clinical tool cannot do. Here d is chosen from normal "
        f"validation images only: the smallest code that still redraws them almost as well as the largest. "
        f"That rule picks **d = {lesson.chosen_d}** (AUROC {fmt(lesson.chosen_auroc)}); the best d on the test "
        f"set is **d = {lesson.oracle_d}** (AUROC {fmt(lesson.oracle_auroc)}), "
        f"**{fmt(lesson.gap_points, '.1f')} points** better."
    )
    lo, hi = lesson.dims[0], lesson.dims[-1]
    grows = "climbs steadily" if lesson.entropy_grows else "broadly rises"
    st.markdown(
        f"**The column the paper lacks: latent entropy.** AE4AD argues in terms of entropy but never measures "
        f"it. Measured here, it {grows} with d, from {fmt(lesson.at(lo, 'entropy_nats'), '.1f')} nats at "
        f"d = {lo} to {fmt(lesson.at(hi, 'entropy_nats'), '.0f')} nats at d = {hi}. The best detector sits low "
        f"on that curve ({fmt(lesson.at(lesson.oracle_d, 'entropy_nats'), '.1f')} nats at "
        f"d = {lesson.oracle_d}), where normal images are still redrawn reasonably (normal validation error "
        f"{fmt(lesson.at(lesson.oracle_d, 'val_error'))}, against {fmt(lesson.at(hi, 'val_error'))} for the "
        f"largest code) but little room is left for anything else."
    )

# ---------------------------------------------------------------------------------- 3. VAE scoring modes
st.header("3. Three ways a VAE points at a lesion", divider="gray")
if vae is None:
    st.info("No VAE in the registry: train one with `ae4ad train --kind vae`.", icon=":material/info:")
else:
    maps, heat = vae_modes(key, vae, models)
    first = next(iter(maps.values()))
    st.markdown(
        f"A variational autoencoder (**{vae}**) also says how far an image's code lies from the codes of "
        "normal images (the KL term). Zimmerer et al. turned that into a pixel map by asking which pixels move "
        "the code most, and combined it with the reconstruction error. Each map has its own fixed scale "
        "from normal images, since their units differ."
    )
    cols = st.columns(len(maps) + 2)
    cols[0].image(
        render.grey_rgb(case.pixels, truth=case.mask),
        width="stretch",
        output_format="PNG",
        caption="Input (green: true lesion)",
    )
    cols[1].image(
        render.grey_rgb(first.reconstruction),
        width="stretch",
        output_format="PNG",
        caption="VAE reconstruction",
    )
    for col, (mode, result) in zip(cols[2:], maps.items(), strict=True):
        title, words = MODE_WORDS.get(mode, (MODE_LABELS.get(mode, mode), ""))
        col.image(heat[mode], width="stretch", output_format="PNG", caption=title)
        contrast = f" · lesion {result.lesion_contrast:.1f}×" if result.lesion_contrast is not None else ""
        col.caption(
            f"{words}  \n*score {result.score:.3g}{contrast}*  \n*colour scale 0 to {result.display_max:.2g}*"
        )

# ------------------------------------------------------------------------------- 4. rate-distortion AE
rdaes = teaching.rate_distortion_models(cards)
if rdaes:
    st.header("4. Limiting information without choosing d", divider="gray")
    summary = teaching.load_sweep_summary()
    for rd_card in rdaes:
        rd = teaching.rate_distortion_lesson(
            rd_card, summary=summary, ae_cards=[c for c in cards if c.name in names]
        )
        weight = f" ({fmt(rd.rate_weight, '.0e')} per bit)" if rd.rate_weight is not None else ""
        versus = []
        if rd.chosen_ae_auroc is not None:
            versus.append(
                f"{fmt(rd.chosen_ae_auroc)} for the fixed-d AE chosen without labels (d = {rd.chosen_ae_d})"
            )
        if rd.best_ae_auroc is not None:
            versus.append(
                f"{fmt(rd.best_ae_auroc)} for the best one, found with test labels (d = {rd.best_ae_d})"
            )
        seeds = " (means over the sweep's seeds)" if summary and versus else ""
        against = f", against {' and '.join(versus)}{seeds}" if versus else ""
        st.markdown(
            f"Shrinking d is a blunt way to limit what the code holds. **{rd.name}** keeps up to {rd.max_d} "
            f"latent values, rounds them to whole numbers and, during training, pays for every bit they cost "
            f"under a learned probability model{weight}. The network then decides for itself how much to keep: "
            f"on normal images it spends **{fmt(rd.mean_rate_bits, '.1f')} bits** on average and really uses "
            f"about **{fmt(rd.effective_dim, '.1f')} dimensions**. Its image AUROC (one training run) is "
            f"**{fmt(rd.image_auroc)}**{against}. This is the *self-adaptive entropy control* that AE4AD leaves "
            "for future work: no d to choose, so no test labels to peek at."
        )
        metric_cols = st.columns(3)
        metric_cols[0].metric("Mean rate on normal images", f"{fmt(rd.mean_rate_bits, '.1f')} bits")
        metric_cols[1].metric("Effective dimension", f"{fmt(rd.effective_dim, '.1f')} of {rd.max_d}")
        gain = rd.gain_over_chosen_points
        delta = None if gain is None else f"{gain:+.1f} points vs d = {rd.chosen_ae_d}"
        metric_cols[2].metric("Image AUROC", fmt(rd.image_auroc), delta=delta)

# --------------------------------------------------------------------------------------------- references
# --------------------------------------------------------------------- choosing d on real patients
REAL_D_TITLE = "Choosing d without labels, on real patients"
real_report = crossval.load_crossval_report()
if not real_report:
    st.caption(f"{REAL_D_TITLE}: appears once the cross-validation over real patients is shipped "
               "(assets/real/crossval.json).")
else:
    st.header(REAL_D_TITLE, divider="gray")
    st.markdown(
        "The same question on real glioma patients (BraTS 2013): AEs with d from 1 to 128, each trained on the "
        "tumour-free slices of all patients but one and tested on the left-out patient (leave one patient "
        "out). d is chosen from the calibration patient's normal slices only, never from tumour labels."
    )
    for seq in real_report:
        rows = model_summary.crossval_sweep_rows(real_report, seq)
        if not rows:
            continue
        st.subheader(model_summary.SEQUENCE_WORDS.get(seq, seq))
        frame = pd.DataFrame(rows)
        cols = st.columns(3)
        for col, y in zip(cols, ("slice AUROC", "pixel AP", "latent entropy (nats)"), strict=True):
            data = frame.dropna(subset=[y]).assign(
                lo=lambda f, y=y: f[y] - f[f"{y} std"].fillna(0), hi=lambda f, y=y: f[y] + f[f"{y} std"].fillna(0)
            )
            x = alt.X("d:Q", scale=alt.Scale(type="log", base=2), title="latent size d")
            base = alt.Chart(data, title=f"{y} vs d (mean ± std over patients)")
            col.altair_chart(
                base.mark_errorbar().encode(x=x, y=alt.Y("lo:Q", title=y, scale=alt.Scale(zero=False)), y2="hi:Q")
                + base.mark_line(point=True).encode(x=x, y=alt.Y(f"{y}:Q"), tooltip=["d", y, f"{y} std"]),
                width="stretch",
            )
        if choice := model_summary.crossval_d_choice(real_report, seq):
            a, b, c = st.columns(3)
            a.metric("d chosen without labels", choice["label_free"],
                     help="Per fold: the smallest d whose validation error on normal slices is within the "
                     "tolerance of the best; the most frequent choice over folds.")
            b.metric("Best d on the test patients", choice["oracle"],
                     help="The d the tumour labels would pick (an oracle no clinic has).")
            gap = choice["gap_points"]
            c.metric("Slice AUROC lost by not peeking", "n/a" if gap is None else f"{gap:.1f} points")
            per_fold = ", ".join(f"{k.replace('brats_2013_', '').replace('_1', '')}: d = {v}"
                                 for k, v in choice["per_fold"].items())
            st.markdown(choice["sentence"] + (f" Per left-out patient: {per_fold}." if per_fold else ""))

st.header("References", divider="gray")
st.markdown(f"1. {AE4AD}\n2. {ZIMMERER}")
st.caption(
    "Demo images: real healthy brains with synthetic lesions (see assets/ATTRIBUTION.md). "
    "A research and teaching tool, not for diagnosis."
)
