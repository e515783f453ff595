"""Display logic shared by the app's pages and reports: windowing, view images, plain-language summaries.

Nothing here imports Streamlit, so every function is reachable from tests, the CLI and reports. Pages read
widgets, call these helpers and render what they return.

Conventions (the same on every page, see DESIGN.md): anomaly maps use a perceptually uniform colormap
(inferno) on the FIXED scale ``[0, display_max]`` from the model's normal validation images; the calibrated
pixel-threshold outline is cyan and the ground-truth outline green.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .analysis import outline_in_input_space

__all__ = [
    "WINDOW_PRESETS",
    "CT_WINDOWS",
    "MODE_LABELS",
    "MODE_HELP",
    "DemoCase",
    "demo_cases",
    "is_ct",
    "window_for",
    "window_description",
    "legend_html",
    "apply_window",
    "reconstruction_in_raw_units",
    "outline_in_input_space",
    "view_images",
    "colorbar_png",
    "panels_png",
    "header_rows",
    "preprocessing_steps",
    "card_summary",
    "default_model_name",
    "zoo_rows",
    "evaluation_result",
    "ae_sweep_rows",
    "latent_rows",
    "verdict_numbers",
    "volume_summary",
    "records_csv",
    "result_json",
    "download_name",
    "digest",
]

WINDOW_PRESETS: tuple[str, ...] = ("auto", "brain", "soft tissue", "bone")
"""Window/level presets offered for display."""

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
"""Standard CT windows ``(center, width)`` in Hounsfield units."""

# Non-CT images have no physical intensity unit: presets are windows over the image's own histogram,
# as percentiles (low, high) of the tissue pixels (brain) or of all pixels.
_RELATIVE_WINDOWS: dict[str, tuple[float, float]] = {
    "auto": (0.5, 99.5),
    "brain": (2.0, 98.0),
    "soft tissue": (0.5, 99.5),
    "bone": (0.0, 100.0),
}

_WINDOW_SAMPLE = 2_000_000

MODE_LABELS: dict[str, str] = {"reconstruction": "Reconstruction", "kl": "KL", "combined": "Combined"}
MODE_HELP: dict[str, str] = {
    "reconstruction": "Where the model fails to redraw the image (squared reconstruction error).",
    "kl": "Which pixels push the image's code away from normal (gradient of the KL term, VAE only).",
    "combined": "Reconstruction error weighted by the KL gradient (VAE only).",
}


# ----------------------------------------------------------------------------------------------- demo cases


@dataclass(frozen=True, eq=False)
class DemoCase:
    """One slice of the demo test split, with its ground truth.

    Attributes
    ----------
    key : stable identifier (used as a cache key)
    label : what a picker shows, e.g. ``"Lesion 2: tumour"``
    pixels : ``(1, H, W)`` float32 in [0, 1]
    mask : ``(H, W)`` bool ground-truth lesion mask, or None for a normal slice
    lesion_kind : e.g. ``"tumour"``, or None for a normal slice
    """

    key: str
    label: str
    pixels: np.ndarray
    mask: np.ndarray | None
    lesion_kind: str | None

    @property
    def is_normal(self) -> bool:
        return self.mask is None


def demo_cases(dataset=None, *, n_normal: int = 3, n_lesion: int = 5) -> list[DemoCase]:
    """A few normal and lesion slices of the demo test split (deterministic choice).

    Normals are spread evenly over the normal test slices; lesions cover as many lesion kinds as possible,
    preferring the largest lesion of each kind (the clearest teaching example).

    Parameters
    ----------
    dataset : Dataset, optional
        Anything with a ``test`` split holding ``images`` (N, H, W), ``labels`` (N,), ``masks`` (N, H, W) and
        optionally ``names`` and ``extra["lesion_kind"]``; default :func:`ae4ad_core.data.load_demo`.
    """
    if dataset is None:
        from .data import load_demo

        dataset = load_demo()
    test = dataset.test
    images = np.asarray(test.images, dtype=np.float32)
    labels = np.asarray(test.labels).astype(int)
    masks = getattr(test, "masks", None)
    extra = getattr(test, "extra", None) or {}
    kinds = extra.get("lesion_kind") if isinstance(extra, Mapping) else None
    kinds = (
        [None if k in (None, "", "none") else str(k) for k in kinds]
        if kinds is not None
        else [None] * len(labels)
    )
    difficulty = extra.get("difficulty") if isinstance(extra, Mapping) else None
    cases: list[DemoCase] = []
    normal_idx = np.flatnonzero(labels == 0)
    if len(normal_idx):
        # Mid-brain slices (the upper half by tissue area), spread evenly over the split.
        area = (images[normal_idx] > 0.05).reshape(len(normal_idx), -1).sum(1)
        central = normal_idx[area >= np.median(area)]
        picks = central[np.linspace(0, len(central) - 1, min(n_normal, len(central))).astype(int)]
        for j, i in enumerate(dict.fromkeys(picks.tolist()), start=1):
            cases.append(DemoCase(f"normal-{i}", f"Normal {j}", images[i][None], None, None))
    lesion_idx = np.flatnonzero(labels == 1)
    if len(lesion_idx):
        area = (
            (np.asarray(masks)[lesion_idx].reshape(len(lesion_idx), -1) > 0).sum(1)
            if masks is not None
            else np.zeros(len(lesion_idx))
        )
        order = lesion_idx[np.argsort(-area, kind="stable")]
        chosen: list[int] = []
        seen: set = set()
        for i in order:  # the largest lesion of each kind first, then the next largest overall
            if kinds[i] not in seen:
                chosen.append(int(i))
                seen.add(kinds[i])
        chosen += [int(i) for i in order if int(i) not in chosen]
        for j, i in enumerate(chosen[:n_lesion], start=1):
            mask = np.asarray(masks[i]) > 0 if masks is not None else None
            kind = kinds[i] or "lesion"
            level = f" ({difficulty[i]})" if difficulty is not None and str(difficulty[i]) else ""
            cases.append(DemoCase(f"lesion-{i}", f"Lesion {j}: {kind}{level}", images[i][None], mask, kind))
    return cases


# ------------------------------------------------------------------------------------------------ windowing


def is_ct(metadata: Mapping | None) -> bool:
    """True for CT images (pixels in Hounsfield units)."""
    return str((metadata or {}).get("modality", "")).upper() == "CT"


def window_for(
    pixels: np.ndarray,
    preset: str = "auto",
    *,
    default_window: tuple[float, float] | None = None,
    ct: bool = False,
) -> tuple[float, float]:
    """Display window ``(center, width)`` in the unit of ``pixels``.

    ``auto`` uses the file's own window (DICOM Window Center/Width) when it has one, else the 0.5-99.5th
    percentiles. For CT, ``brain``, ``soft tissue`` and ``bone`` are the standard Hounsfield windows
    (:data:`CT_WINDOWS`). Other images have no physical unit, so the presets are relative to the image's own
    histogram: ``brain`` = 2nd-98th percentile of the tissue (non-background) pixels (tight contrast),
    ``soft tissue`` = 0.5-99.5th percentile, ``bone`` = the full range.
    """
    from .errors import look_up_option

    look_up_option(preset, WINDOW_PRESETS, what="window preset")
    if preset == "auto" and default_window is not None:
        return float(default_window[0]), max(float(default_window[1]), 1e-6)
    if ct and preset in CT_WINDOWS:
        return CT_WINDOWS[preset]
    values = np.asarray(pixels, dtype=np.float32).ravel()
    if values.size > _WINDOW_SAMPLE:  # large volumes: a regular subsample is plenty for percentiles
        values = values[:: values.size // _WINDOW_SAMPLE + 1]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.5, 1.0
    if preset == "brain":
        lo_all = float(values.min())
        tissue = values[values > lo_all + 0.05 * (float(values.max()) - lo_all)]
        values = tissue if tissue.size >= 16 else values
    lo, hi = np.percentile(values, _RELATIVE_WINDOWS[preset])
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return (lo + hi) / 2.0, hi - lo


def window_description(preset: str, ct: bool) -> str:
    """One line saying what a preset means for this image."""
    if ct and preset in CT_WINDOWS:
        c, w = CT_WINDOWS[preset]
        return f"CT {preset} window: level {c:g} HU, width {w:g} HU."
    return {
        "auto": "The file's own window if it has one, else the 0.5-99.5th percentile of the image.",
        "brain": "Tight contrast on the tissue: 2nd-98th percentile of non-background pixels.",
        "soft tissue": "0.5-99.5th percentile of all pixels.",
        "bone": "The full intensity range.",
    }[preset]


def legend_html(preset: str, image, has_truth: bool) -> str:
    """The caption under the views: what the window shows and what the outline colours mean (HTML)."""
    from .plotting import THRESHOLD_COLOUR, TRUTH_COLOUR

    def swatch(rgb):
        return f'<span style="color:rgb{tuple(rgb)};font-weight:700">&#9632;</span>'

    text = (
        f"{window_description(preset, is_ct(image.metadata))} {swatch(THRESHOLD_COLOUR)} above the "
        "calibrated pixel threshold"
    )
    if has_truth:
        text += f" &nbsp;{swatch(TRUTH_COLOUR)} ground truth"
    return text + "."


def apply_window(pixels: np.ndarray, center: float, width: float, *, invert: bool = False) -> np.ndarray:
    """Map intensities through a linear window to uint8 gray (DICOM ``center +- width / 2``)."""
    lo = center - width / 2.0
    unit = np.clip((np.asarray(pixels, dtype=np.float32) - lo) / max(width, 1e-6), 0.0, 1.0)
    unit = np.nan_to_num(unit, nan=0.0)
    if invert:
        unit = 1.0 - unit
    return np.round(unit * 255.0).astype(np.uint8)


def _nearest_rank(values: np.ndarray, q: float) -> float:
    """Percentile by nearest rank, exactly as :func:`ae4ad_core.preprocess.scale_intensity` computes it."""
    flat = np.sort(np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0).ravel())
    k = int(round(q / 100.0 * (flat.size - 1)))
    return float(flat[min(max(k, 0), flat.size - 1)])


def reconstruction_in_raw_units(
    reconstruction: np.ndarray, raw_slice: np.ndarray, preprocessing
) -> np.ndarray:
    """Undo the card's intensity scaling on a reconstruction in model units ([-1, 1], input geometry), so the
    reconstruction can be shown with the same window as the input."""
    if preprocessing.intensity == "window":
        lo = preprocessing.center - preprocessing.width / 2.0
        hi = lo + preprocessing.width
    else:
        lo = _nearest_rank(raw_slice, preprocessing.low)
        hi = _nearest_rank(raw_slice, preprocessing.high)
    span = max(hi - lo, 1e-6)
    return (np.asarray(reconstruction, dtype=np.float32) + 1.0) / 2.0 * span + lo


def view_images(
    raw_slice: np.ndarray,
    analysis,
    i: int,
    *,
    window: tuple[float, float],
    preprocessing,
    invert: bool = False,
    opacity: float = 0.5,
    show_outlines: bool = True,
    truth: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three views of slice ``i``, all ``(H, W, 3)`` uint8 in the input geometry.

    Returns ``(input, reconstruction, overlay)``: the input windowed for display; the reconstruction mapped
    back to input intensity units and shown with the same window; the anomaly map over the input
    (:func:`ae4ad_core.plotting.overlay_rgb`: inferno on the fixed scale ``[0, display_max]``, cyan threshold
    outline, green ground-truth outline).
    """
    from .plotting import overlay_rgb

    center, width = window
    gray = apply_window(raw_slice, center, width, invert=invert)
    recon = reconstruction_in_raw_units(analysis.reconstruction_in_input_space(i), raw_slice, preprocessing)
    recon_gray = apply_window(recon, center, width, invert=invert)
    outline = outline_in_input_space(analysis, i) if show_outlines else None
    truth = truth if show_outlines and truth is not None and truth.shape == raw_slice.shape else None
    over = overlay_rgb(
        gray,
        analysis.map_in_input_space(i),
        vmax=analysis.display_max,
        alpha=opacity,
        outline=outline,
        truth=truth,
        window=(127.5, 255.0),
    )
    return _as_rgb(gray), _as_rgb(recon_gray), over


def _as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


@functools.lru_cache(maxsize=64)
def colorbar_png(vmax: float, *, label: str = "anomaly map (fixed scale from normal images)") -> bytes:
    """A slim horizontal inferno colour bar from 0 to ``vmax`` as PNG bytes."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0, 0.62), dpi=150)
    ax = fig.add_axes((0.04, 0.58, 0.92, 0.22))
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, vmax), "inferno"), cax=ax, orientation="horizontal")
    bar.set_ticks([0.0, vmax / 2.0, vmax])
    bar.set_ticklabels(["0", f"{vmax / 2:.3g}", f"{vmax:.3g}"])
    bar.ax.tick_params(labelsize=7, length=2, pad=1)
    bar.outline.set_linewidth(0.4)
    fig.text(0.5, 0.02, label, ha="center", va="bottom", fontsize=7, color="#444")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", transparent=True)
    return buf.getvalue()


def panels_png(panels: Sequence[np.ndarray], titles: Sequence[str] | None = None) -> bytes:
    """Side-by-side RGB panels (same height) as one PNG, with optional titles above them."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    h = max(p.shape[0] for p in panels)
    gap = 8
    head = 18 if titles else 0
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = PILImage.new("RGB", (width, h + head), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for k, p in enumerate(panels):
        canvas.paste(PILImage.fromarray(np.ascontiguousarray(p)), (x, head))
        if titles:
            draw.text((x + 2, 3), titles[k], fill=(0, 0, 0))
        x += p.shape[1] + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------- words and tables


_HEADER_LABELS: dict[str, str] = {
    "format": "Format",
    "modality": "Modality",
    "manufacturer": "Manufacturer",
    "manufacturer_model": "Scanner model",
    "body_part": "Body part",
    "study_description": "Study description",
    "series_description": "Series description",
    "protocol_name": "Protocol",
    "image_type": "Image type",
    "photometric": "Photometric interpretation",
    "bits_stored": "Bits stored",
    "rescale_slope": "Rescale slope",
    "rescale_intercept": "Rescale intercept",
    "window_center": "Window center",
    "window_width": "Window width",
    "pixel_spacing": "Pixel spacing (mm)",
    "voxel_size": "Voxel size (mm)",
    "slice_thickness": "Slice thickness (mm)",
    "magnetic_field_strength": "Field strength (T)",
    "echo_time": "Echo time (ms)",
    "repetition_time": "Repetition time (ms)",
    "inversion_time": "Inversion time (ms)",
    "flip_angle": "Flip angle (deg)",
    "scanning_sequence": "Scanning sequence",
    "kvp": "Tube voltage (kVp)",
    "convolution_kernel": "Convolution kernel",
    "transfer_syntax": "Transfer syntax",
    "sop_class": "SOP class",
    "orientation": "Orientation",
    "slice_axis": "Slice plane",
    "sorted_by": "Slices sorted by",
    "n_files": "Files in series",
    "lesion_kind": "Synthetic lesion",
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return (
            " x ".join(_fmt(v) for v in value)
            if all(isinstance(v, (int, float)) for v in value)
            else ", ".join(_fmt(v) for v in value)
        )
    return str(value)


def _format_label(fmt: str) -> str:
    return {"dicom-series": "DICOM series", "nifti": "NIfTI", "demo": "demo case"}.get(fmt, str(fmt).upper())


def header_rows(image) -> list[tuple[str, str]]:
    """De-identified header summary ``(field, value)`` of an :class:`~ae4ad_core.io.Image`.

    Only an allow-list of acquisition fields is shown, after :func:`ae4ad_core.io.deidentify` (belt and
    braces: the reader already de-identifies), so patient identifiers never reach the page.
    """
    from .io import deidentify

    meta = deidentify(dict(image.metadata or {}))
    n, h, w = image.pixels.shape
    rows = [("File", str(image.name)), ("Size", f"{n} slice(s) of {h} x {w} pixels")]
    for key, label in _HEADER_LABELS.items():
        if key in meta and meta[key] not in (None, "", []):
            rows.append((label, _format_label(meta[key]) if key == "format" else _fmt(meta[key])))
    return rows


def preprocessing_steps(image, preprocessing, geometry=None) -> list[str]:
    """What happened between the file and the model input, in order, in plain words."""
    fmt = _format_label(image.format)
    steps = [
        f"Read as {fmt}: {image.n_slices} slice(s) of {image.pixels.shape[1]} x "
        f"{image.pixels.shape[2]} pixels."
    ]
    steps += [f"Reader: {s}." for s in (image.metadata or {}).get("applied", [])]
    p = preprocessing
    if p.intensity == "window":
        steps.append(f"Intensities windowed at level {p.center:g}, width {p.width:g} and scaled to [-1, 1].")
    else:
        steps.append(
            f"Intensities scaled per slice: the {p.low:g}th-{p.high:g}th percentiles map to [-1, 1] "
            "(values outside are clipped)."
        )
    if geometry is not None:
        top, left, h, w = geometry.crop
        if p.crop_foreground and (h, w) != tuple(geometry.shape):
            steps.append(
                f"Cropped to the tissue bounding box: rows {top}-{top + h - 1}, columns {left}-{left + w - 1}."
            )
        if h != w:
            steps.append(f"Padded to a {geometry.side} x {geometry.side} square with background.")
    steps.append(f"Resized to the model's {p.size} x {p.size} input; maps are resized back for display.")
    return steps


def _metric(card, key: str, mode: str = "reconstruction"):
    value = (card.metrics or {}).get(mode, {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def card_summary(card) -> str:
    """One line for a model picker: type, d, input size, training data, latent entropy, demo AUROC."""
    kind = card.kind.upper()
    parts = [f"**{kind}**, d = {card.latent_dim}", f"{card.architecture.image_size} px input"]
    data = _short((card.training_data or {}).get("description") or "")
    if data:
        parts.append(f"trained on {data}")
    ent = (card.latent or {}).get("entropy_gaussian_nats")
    if isinstance(ent, (int, float)) and math.isfinite(ent):
        parts.append(f"latent entropy {ent:.1f} nats")
    auroc = _metric(card, "image_auroc")
    if auroc is not None:
        on_demo = "demo" in str((card.training_data or {}).get("description", "")).lower()
        parts.append(f"{'demo' if on_demo else 'test'} AUROC {auroc:.2f}")
    return " · ".join(parts)


def _short(text: str, limit: int = 60) -> str:
    """The first clause of a long description (before a parenthesis, semicolon or sentence end)."""
    import re

    head = re.split(r"\s\(|;|\.\s", str(text).strip(), maxsplit=1)[0].strip()
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


def default_model_name(cards: Sequence) -> str | None:
    """The model a page selects first: an AE with d = 16 (the paper's usual setting) if there is one."""
    if not cards:
        return None
    for card in cards:
        if card.kind == "ae" and card.latent_dim == 16:
            return card.name
    return cards[0].name


def zoo_rows(cards: Sequence) -> list[dict]:
    """One row per model for the zoo table: card fields that matter and evaluation metrics."""
    rows = []
    for c in cards:
        lat = c.latent or {}
        rows.append(
            {
                "model": c.name,
                "type": c.kind.upper(),
                "d": c.latent_dim,
                "input (px)": c.architecture.image_size,
                "image AUROC": _metric(c, "image_auroc"),
                "image AP": _metric(c, "image_ap"),
                "pixel AP": _metric(c, "pixel_ap"),
                "Dice (calibrated)": _metric(c, "calibrated_dice"),
                "latent entropy (nats)": lat.get("entropy_gaussian_nats"),
                "k-NN entropy (nats)": lat.get("entropy_knn_nats"),
                "effective dim": lat.get("effective_dim"),
                "trained on": (c.training_data or {}).get("description", ""),
                "epochs": ((c.training or {}).get("config") or {}).get("epochs"),
            }
        )
    return rows


def evaluation_result(card, mode: str = "reconstruction"):
    """The card's stored :class:`~ae4ad_core.evaluation.EvaluationResult` for ``mode`` (curves included), or
    None when the model was not evaluated in that mode."""
    import dataclasses

    from .evaluation import EvaluationResult

    data = (card.metrics or {}).get(mode)
    if not isinstance(data, Mapping) or "curves" not in data:
        return None
    fields = {f.name for f in dataclasses.fields(EvaluationResult)}
    try:
        return EvaluationResult(**{k: v for k, v in data.items() if k in fields})
    except TypeError:  # a card written by another version of the library
        return None


def ae_sweep_rows(cards: Sequence) -> list[dict]:
    """Plain AEs of the same input size and data (the largest such group) for AUROC-vs-d and entropy-vs-d."""
    groups: dict[tuple, list] = {}
    for c in cards:
        if c.kind == "ae":
            key = (c.architecture.image_size, (c.training_data or {}).get("description", ""))
            groups.setdefault(key, []).append(c)
    if not groups:
        return []
    best = max(groups.values(), key=len)
    if len({c.latent_dim for c in best}) < 2:
        return []
    return sorted(
        (
            {
                "d": c.latent_dim,
                "model": c.name,
                "image AUROC": _metric(c, "image_auroc"),
                "latent entropy (nats)": (c.latent or {}).get("entropy_gaussian_nats"),
                "effective dim": (c.latent or {}).get("effective_dim"),
            }
            for c in best
        ),
        key=lambda r: r["d"],
    )


def latent_rows(summary: Mapping, surprisal: float, percentile: float) -> list[tuple[str, str, str]]:
    """``(statistic, value, plain-language sentence)`` rows for the latent-statistics tab.

    ``summary`` is :meth:`ae4ad_core.entropy.LatentStatistics.summary`; words a clinician understands first,
    the term of art second.
    """
    d = summary.get("latent_dim")
    rows = [
        (
            "Latent entropy, Gaussian",
            f"{summary['entropy_gaussian_nats']:.1f} nats = {summary['entropy_gaussian_bits']:.1f} bits",
            "How much information the model keeps about a normal image in its compressed code "
            "(latent entropy, Gaussian estimate). Less is better as long as normal images are still redrawn well.",
        ),
        (
            "Latent entropy, k-NN",
            f"{summary['entropy_knn_nats']:.1f} nats = {summary['entropy_knn_bits']:.1f} bits",
            "The same quantity measured without assuming a bell-shaped distribution "
            "(Kozachenko-Leonenko k-nearest-neighbour estimate).",
        ),
        (
            "Effective dimension",
            f"{summary['effective_dim']:.1f} of {d}",
            f"How many of the code's {d} numbers the model really uses for normal images "
            "(participation ratio of the variance spectrum).",
        ),
        (
            "This image's surprisal",
            f"{surprisal:.1f} nats, {percentile:.0f}th percentile",
            f"How surprising this image's code is to the model (latent surprisal): higher than "
            f"{percentile:.0f}% of normal validation images.",
        ),
    ]
    if summary.get("mean_kl_nats") is not None:
        rows.append(
            (
                "Mean KL rate",
                f"{summary['mean_kl_nats']:.1f} nats",
                "How far, on average, a normal image's code sits from the VAE's prior (mean KL divergence).",
            )
        )
    return rows


def verdict_numbers(analysis, i: int) -> list[tuple[str, str, str]]:
    """``(label, value, help)`` for the numbers under the verdict sentence."""
    return [
        ("Score", f"{analysis.scores[i]:.4g}", f"Image score in {MODE_LABELS[analysis.mode]} mode."),
        ("Threshold", f"{analysis.threshold:.4g}", "Calibrated on normal validation images only."),
        (
            "FPR",
            f"{analysis.fpr:.0%}",
            "False-positive rate: the share of normal validation images above the threshold.",
        ),
        (
            "Normal percentile",
            f"{analysis.score_percentiles[i]:.0f}",
            "Percent of normal validation images scoring at or below this image.",
        ),
    ]


def volume_summary(analysis) -> str | None:
    """One sentence for a volume/series: how many slices are above the threshold and where the peak is."""
    n = len(analysis)
    if n < 2:
        return None
    k = int(np.argmax(analysis.scores))
    above = int(np.sum(analysis.above_threshold))
    return (
        f"{above} of {n} slices above the threshold; the highest score is on slice "
        f"{analysis.slice_indices[k] + 1} (volume score = the maximum over slices)."
    )


def records_csv(analysis, *, extra: Mapping | None = None) -> str:
    """The per-slice records of an analysis as CSV text (one row per slice, no pixel data, no identifiers)."""
    rows = [{**(extra or {}), **r} for r in analysis.records()]
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def result_json(analysis, *, image=None, device: str | None = None, demo_case: str | None = None) -> str:
    """:meth:`Analysis.to_json` plus what was analysed (file name, format, shape) and on which device."""
    extra: dict = {}
    if image is not None:
        extra["input"] = {"name": image.name, "format": image.format, "shape": list(image.pixels.shape)}
    if demo_case is not None:
        extra["demo_case"] = demo_case
    if device is not None:
        extra["device"] = device
    return analysis.to_json(extra=extra)


def download_name(image_name: str, model: str, mode: str, suffix: str) -> str:
    """A safe file name for a download, e.g. ``scan_ae-d16_reconstruction.json``."""
    import re

    stem = image_name.rsplit(".", 1)[0] if not image_name.endswith(".nii.gz") else image_name[:-7]
    text = f"{stem}_{model}_{mode}{suffix}"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def digest(*parts: bytes | str) -> str:
    """A short content hash (cache key) of uploaded bytes and names."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else bytes(p))
        h.update(b"\x00")
    return h.hexdigest()


ANATOMY_CAVEAT_RHO = 0.5


def anatomy_caveat(card, mode: str) -> str | None:
    """A warning when this model's score in ``mode`` follows how much anatomy a slice holds.

    The evaluation stores the Spearman correlation between normal test slices' scores and their brain area
    (``anatomy_correlation``); above ``ANATOMY_CAVEAT_RHO`` in magnitude, a high or low score may reflect the
    slice level rather than an anomaly, and the reader should compare with neighbouring slices.
    """
    rho = _metric(card, "anatomy_correlation", mode)
    if rho is None or abs(rho) < ANATOMY_CAVEAT_RHO:
        return None
    direction = "more" if rho > 0 else "less"
    return (
        f"Read with care: on normal test slices this model's score rises with {direction} brain in the slice "
        f"(Spearman ρ = {rho:+.2f}), so part of any score reflects the slice level, not an anomaly. "
        "Compare with neighbouring slices and look at where the map lights up."
    )
