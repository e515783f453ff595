"""Plain-language text about an image and its analysis: scoring-mode labels, the header and preprocessing
summaries, the latent-statistics rows and the numbers under the verdict.

Words a clinician understands first, the term of art second. Nothing here imports Streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "MODE_LABELS",
    "MODE_HELP",
    "header_rows",
    "preprocessing_steps",
    "preparation_lines",
    "latent_rows",
    "verdict_numbers",
    "volume_summary",
]

MODE_LABELS: dict[str, str] = {
    "reconstruction": "Reconstruction",
    "kl": "KL",
    "combined": "Combined",
    "mse": "MSE (paper)",
}
MODE_HELP: dict[str, str] = {
    "reconstruction": "Where the model fails to redraw the image (squared reconstruction error).",
    "kl": "Which pixels push the image's code away from normal (gradient of the KL term, VAE only).",
    "combined": "Reconstruction error weighted by the KL gradient (VAE only).",
    "mse": "The AE4AD paper's score: squared error over the whole image, averaged (for comparison).",
}


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
        ("Score", f"{analysis.scores[i]:.4g}", f"Image score in {MODE_LABELS.get(analysis.mode, analysis.mode)} mode."),
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


def preparation_lines(result) -> list[str]:
    """What the whole-head path did to an upload (an :class:`~ae4ad_core.analysis.ImageAnalysis`), one line
    each: what the scan looks like and why, the model choice, the brain extraction and the standardisation."""
    guess, prep = result.guess, result.preparation or {}
    lines = [f"Detected: {guess.describe()}" + (f" — {'; '.join(guess.reasons[:3])}" if guess.reasons else "")]
    lines.append(f"Model: {result.choice.reason}")
    if result.warning:
        lines.append(f"Model used: {prep.get('model', '')} — {result.warning}")
    extraction = prep.get("brain_extraction") or {}
    if extraction:
        fraction = prep.get("brain_fraction")
        share = f"; the brain covers {fraction:.0%} of the image" if isinstance(fraction, (int, float)) else ""
        lines.append(f"Brain extraction: {extraction.get('method', 'not recorded')}{share}")
    standard = prep.get("standardisation") or {}
    if standard.get("method"):
        lines.append(f"Standardisation: {standard['method']}")
    lines += [f"Note: {note}" for note in prep.get("notes", [])]
    return lines
