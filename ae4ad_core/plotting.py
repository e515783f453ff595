"""Figures for evaluation results, verdicts and latent statistics.

Every function builds its own :class:`matplotlib.figure.Figure` (no ``pyplot`` global state, so app sessions
running in threads never share a figure). Conventions are those of :mod:`ae4ad_core.render` (which draws the
RGB arrays, :func:`~ae4ad_core.render.overlay_rgb` included): anomaly maps in
inferno on the FIXED scale ``[0, vmax]`` (``vmax`` = the model's ``display_max`` from normal validation images,
never a per-image min-max), the calibrated-threshold outline in cyan, ground truth in green.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from .render import THRESHOLD_COLOUR, TRUTH_COLOUR, check_map_shapes, grey_rgb

__all__ = [
    "roc_pr_figures",
    "pixel_pr_figure",
    "overlay_figure",
    "score_histogram_figure",
    "latent_scatter_figure",
    "spectrum_figure",
    "figure_to_png",
]

_FIGSIZE = (4.0, 3.0)
_DPI = 100


# Constrained layout costs about half of drawing a small figure (savefig lays it out in a dry run first). The
# per-upload figures (histogram, latent scatter) are the same for most inputs down to their axis limits, so
# their layout is computed once and reused: keyed by everything it depends on (kind, size, limits, scales,
# texts), the figure drawn with a reused layout is pixel for pixel the one constrained layout would draw.
_LAYOUTS: dict[tuple, tuple[float, float, float, float]] = {}
_LAYOUTS_MAX = 512


def _layout_key(kind: str, fig: Figure, ax) -> tuple:
    legend = ax.get_legend()
    return (
        kind,
        tuple(float(v) for v in fig.get_size_inches()),
        float(fig.dpi),
        tuple(float(v) for v in ax.get_xlim()),
        tuple(float(v) for v in ax.get_ylim()),
        ax.get_xscale(),
        ax.get_yscale(),
        ax.get_xlabel(),
        ax.get_ylabel(),
        ax.get_title(),
        tuple(t.get_text() for t in legend.get_texts()) if legend is not None else (),
    )


def _reuse_layout(kind: str, fig: Figure, ax) -> Figure:
    """Give ``fig`` the layout of an identical-looking earlier figure (no layout pass), or have
    :func:`figure_to_png` remember the one constrained layout computes for it."""
    key = _layout_key(kind, fig, ax)
    bounds = _LAYOUTS.get(key)
    if bounds is None:
        fig._ae4ad_layout = (key, ax)  # stored by figure_to_png once the layout is known
    else:
        fig.set_layout_engine(None)  # None, not "none": with any engine savefig still draws twice
        ax.set_position(bounds)
    return fig


def _remember_layout(fig: Figure) -> None:
    pending = getattr(fig, "_ae4ad_layout", None)
    if pending is None:
        return
    key, ax = pending
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[key] = tuple(float(v) for v in ax.get_position().bounds)
    del fig._ae4ad_layout


def _rgb01(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in colour)


def _new_figure(figsize: tuple[float, float] = _FIGSIZE) -> tuple[Figure, object]:
    fig = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    return fig, fig.add_subplot()


def _curve(result, key: str, *, pixel: bool = False) -> np.ndarray | None:
    curves = result.curves.get("pixel" if pixel else "image") or {}
    values = curves.get(key)
    return None if values is None else np.asarray(values, dtype=np.float64)


def roc_pr_figures(results: Mapping) -> tuple[Figure, Figure]:
    """Image-level ROC and precision-recall curves, one line per scoring mode.

    Parameters
    ----------
    results : mapping of str to EvaluationResult
        E.g. the output of :func:`ae4ad_core.evaluation.evaluate_all_modes`.

    Returns
    -------
    roc, pr : Figure
        The ROC figure (chance diagonal dashed) and the PR figure (the prevalence of abnormal images, the AP of
        a random score, dashed).
    """
    roc, ax_roc = _new_figure()
    pr, ax_pr = _new_figure()
    prevalence = None
    for mode, res in results.items():
        fpr, tpr = _curve(res, "fpr"), _curve(res, "tpr")
        if fpr is not None and tpr is not None:
            ax_roc.plot(fpr, tpr, lw=1.5, label=f"{mode} (AUROC {res.image_auroc:.3f})")
        precision, recall = _curve(res, "precision"), _curve(res, "recall")
        if precision is not None and recall is not None:
            ax_pr.plot(recall, precision, lw=1.5, label=f"{mode} (AP {res.image_ap:.3f})")
        total = res.n_normal + res.n_abnormal
        prevalence = res.n_abnormal / total if total else prevalence
    ax_roc.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6")
    ax_roc.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Image-level ROC",
    )
    if prevalence is not None:
        ax_pr.axhline(prevalence, ls="--", lw=0.8, color="0.6")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Image-level PR")
    for ax in (ax_roc, ax_pr):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
        ax.tick_params(labelsize=8)
    return roc, pr


def pixel_pr_figure(result) -> Figure:
    """Pixel-level precision-recall curve of one :class:`~ae4ad_core.evaluation.EvaluationResult` with masks,
    with the Dice (F1) along the curve dotted and the best Dice marked."""
    precision, recall = _curve(result, "precision", pixel=True), _curve(result, "recall", pixel=True)
    if precision is None or recall is None:
        raise ValueError(f"The {result.mode} result has no pixel curves (evaluated without masks).")
    fig, ax = _new_figure()
    ax.plot(recall, precision, lw=1.5, label=f"PR (AP {result.pixel_ap:.3f})")
    denom = np.maximum(precision + recall, 1e-12)
    ax.plot(
        recall, 2 * precision * recall / denom, lw=1.0, ls=":", label=f"Dice (best {result.best_dice:.3f})"
    )
    ax.set(
        xlabel="recall",
        ylabel="precision / Dice",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"Pixel-level PR, pooled ({result.mode})",
    )
    ax.title.set_fontsize(9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    return fig


def overlay_figure(
    image: np.ndarray,
    amap: np.ndarray,
    *,
    vmax: float,
    outline: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    alpha: float = 0.5,
    cmap: str = "inferno",
    title: str | None = None,
) -> Figure:
    """An anomaly map over a grayscale image, with a colour bar on the fixed scale ``[0, vmax]``.

    Parameters
    ----------
    image, amap : (H, W) arrays
        Underlay (shown with its 0.5-99.5 percentile range) and anomaly map.
    vmax : float
        Top of the colour scale (the model's ``display_max``); the bar always spans ``[0, vmax]``.
    outline, truth : (H, W) bool arrays, optional
        Calibrated-threshold mask (contour in cyan) and ground truth (contour in green), drawn with
        :func:`skimage.measure.find_contours` at level 0.5.
    alpha : float
        Map opacity at ``vmax`` (fading as ``alpha * sqrt(amap / vmax)``, as in
        :func:`ae4ad_core.render.overlay_rgb`).
    cmap : str
        Matplotlib colormap of the map.
    title : str, optional
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from skimage.measure import find_contours

    image, amap = np.asarray(image), np.asarray(amap, dtype=np.float32)
    check_map_shapes(image, amap, outline=outline, truth=truth)
    vmax = max(float(vmax), 1e-12)
    fig, ax = _new_figure((4.0, 3.4))
    ax.imshow(grey_rgb(image, window=None), interpolation="nearest")
    norm = Normalize(0.0, vmax, clip=True)
    rgba = colormaps[cmap](norm(np.nan_to_num(amap)))
    rgba[..., 3] = float(np.clip(alpha, 0.0, 1.0)) * np.sqrt(np.clip(np.nan_to_num(amap) / vmax, 0.0, 1.0))
    ax.imshow(rgba, interpolation="nearest")
    handles = []
    for mask, colour, label in (
        (outline, THRESHOLD_COLOUR, "above threshold"),
        (truth, TRUTH_COLOUR, "truth"),
    ):
        if mask is None or not np.any(mask):
            continue
        padded = np.pad(np.asarray(mask, dtype=np.float32), 1)  # closes contours touching the border
        for contour in find_contours(padded, 0.5):
            ax.plot(contour[:, 1] - 1, contour[:, 0] - 1, color=_rgb01(colour), lw=1.0)
        handles.append(Line2D([], [], color=_rgb01(colour), lw=1.5, label=label))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.6)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("anomaly map (fixed scale)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return fig


def score_histogram_figure(normal_scores, score: float, threshold: float) -> Figure:
    """Histogram of normal validation scores with the calibrated threshold (dashed) and this image's score.

    Parameters
    ----------
    normal_scores : (M,) array
        Image scores of normal validation images (``ModeCalibration.normal_scores``).
    score, threshold : float
        This image's score and the calibrated image threshold, in the same units.
    """
    scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    fig, ax = _new_figure((4.0, 2.6))
    ax.hist(
        scores,
        bins=min(40, max(5, len(scores) // 5)),
        color="0.7",
        edgecolor="0.5",
        lw=0.4,
        label="normal images",
    )
    ax.axvline(threshold, color="tab:blue", ls="--", lw=1.2, label="threshold")
    ax.axvline(score, color="tab:red", lw=1.8, label="this image")
    ax.set(xlabel="anomaly score", ylabel="normal images")
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    return _reuse_layout("score_histogram", fig, ax)


def latent_scatter_figure(normal_points, point) -> Figure:
    """2D projection of normal latent codes (gray) with this image's code (a red star).

    Parameters
    ----------
    normal_points : (M, 2) array
        E.g. ``LatentStatistics.pca_points``.
    point : (2,) array
        This image's projected code (``LatentStatistics.project``).
    """
    pts = np.asarray(normal_points, dtype=np.float64).reshape(-1, 2)
    p = np.asarray(point, dtype=np.float64).reshape(2)
    fig, ax = _new_figure()
    ax.scatter(pts[:, 0], pts[:, 1], s=6, color="0.6", alpha=0.7, label="normal images")
    ax.scatter([p[0]], [p[1]], s=120, marker="*", color="tab:red", edgecolor="k", lw=0.5, label="this image")
    ax.set(xlabel="latent PC 1", ylabel="latent PC 2")
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    return _reuse_layout("latent_scatter", fig, ax)


def spectrum_figure(spectrum) -> Figure:
    """Variance spectrum of the latent codes (eigenvalues, largest first), log scale when all are positive."""
    s = np.asarray(spectrum, dtype=np.float64).ravel()
    fig, ax = _new_figure((4.0, 2.6))
    ax.bar(np.arange(1, len(s) + 1), s, color="tab:purple")
    if len(s) and np.all(s > 0):
        ax.set_yscale("log")
    ax.set(xlabel="latent component", ylabel="variance", title="Latent variance spectrum")
    ax.title.set_fontsize(9)
    ax.tick_params(labelsize=8)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` (no global state touched)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    _remember_layout(fig)
    return buf.getvalue()
