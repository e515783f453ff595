"""Computation behind the Learn page: live models showing *why* a small latent code finds lesions.

Everything the page shows is computed here (the page only reads widgets and renders), so the CLI and the tests
reach the same numbers:

* :func:`teaching_cases` -- a few clear lesion slices of the demo test split, chosen from the images alone;
* :func:`reconstruct_across_latent_sizes` -- one input through the AEs of the latent-size sweep (AE4AD,
  Cai et al., MICCAI 2024): reconstruction, squared-error map, image score and lesion contrast per ``d``;
* :func:`compare_modes` -- reconstruction, KL-gradient and combined maps of a VAE (Zimmerer et al., MICCAI 2019);
* :func:`load_sweep_summary`, :func:`sweep_lesson`, :func:`sweep_teaching_figure` -- the sweep's AUROC and
  latent entropy against ``d``, the label-free choice of ``d`` and the test-set oracle;
* :func:`rate_distortion_lesson` -- a rate-distortion AE's card numbers next to the fixed-``d`` AEs;
* :func:`load_models` -- several registry models loaded at once (threads), for the page's one-time start-up.

The page draws the results with :mod:`ae4ad_core.render` (grey images, inferno maps, colour bars).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analysis import analyze
from .assets import assets_dir
from .demo_cases import DemoCase
from .registry import LoadedModel, ModelCard
from .render import as_slice, reconstruction_in_raw_units

__all__ = [
    "SWEEP_PATH",
    "LatentSizeResult",
    "ModeMap",
    "SweepLesson",
    "RateDistortionLesson",
    "teaching_cases",
    "lesion_conspicuity",
    "latent_size_models",
    "load_models",
    "pick_vae",
    "reconstruct_across_latent_sizes",
    "shared_display_max",
    "lesion_contrast_extremes",
    "compare_modes",
    "load_sweep_summary",
    "sweep_lesson",
    "sweep_teaching_figure",
    "rate_distortion_models",
    "rate_distortion_lesson",
]

SWEEP_PATH: Path = assets_dir() / "sweep" / "sweep.json"
"""The shipped sweep summary (``ae4ad sweep`` output, see :mod:`ae4ad_core.sweep`)."""

TISSUE_LEVEL = 0.05  # input intensity (demo images are in [0, 1]) above which a pixel counts as tissue
_NATS_PER_BIT = math.log(2.0)
_KIND_WORDS = {
    "hypointense": "dark spot (hypointense)",
    "hyperintense": "bright spot (hyperintense)",
    "tumour": "tumour-like mass",
    "deformation": "local deformation",
    "noise": "patch of noise",
}


# ----------------------------------------------------------------------------------------------- cases


def lesion_conspicuity(image: np.ndarray, mask: np.ndarray, *, ring: int = 4) -> float:
    """How plainly a lesion shows in the image alone: ``|mean(lesion) - mean(ring)| * sqrt(area)``.

    The ring is the tissue within ``ring`` pixels around the lesion. Intensity contrast times the lesion's linear
    size: large, high-contrast lesions score highest. No model is involved, so the choice of teaching cases
    never depends on the models it is meant to illustrate.

    Parameters
    ----------
    image : (H, W) array
        Intensities in [0, 1] (demo images).
    mask : (H, W) bool array
        The lesion.
    """
    from scipy import ndimage

    img, m = as_slice(image), np.asarray(mask, dtype=bool)
    if img.shape != m.shape:
        raise ValueError(f"image {img.shape} and mask {m.shape} differ in shape.")
    if not m.any():
        return 0.0
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    box = (
        slice(max(rows[0] - ring, 0), rows[-1] + ring + 1),
        slice(max(cols[0] - ring, 0), cols[-1] + ring + 1),
    )
    img, m = img[box], m[box]  # the ring lies within the lesion's bounding box grown by `ring`
    around = ndimage.binary_dilation(m, iterations=ring) & ~m & (img > TISSUE_LEVEL)
    if not around.any():
        return 0.0
    return float(abs(img[m].mean() - img[around].mean()) * math.sqrt(m.sum()))


def teaching_cases(dataset=None, *, n: int = 4) -> list[DemoCase]:
    """``n`` clear lesion slices of the demo test split, chosen deterministically from the images alone.

    Every lesion slice is ranked by :func:`lesion_conspicuity`; the most conspicuous slice of each lesion kind is
    taken first (so the cases show different kinds), most conspicuous first, then the next ones overall.

    Parameters
    ----------
    dataset : Dataset, optional
        With a ``test`` split holding ``images``, ``labels``, ``masks`` and ``extra["lesion_kind"]`` (and
        optionally ``extra["difficulty"]``); default :func:`ae4ad_core.data.load_demo`.
    n : int
        How many cases.

    Returns
    -------
    list of DemoCase
        Keys ``"lesion-<test index>"``, labels such as ``"Dark spot (hypointense), easy - test slice 64"``.
    """
    if dataset is None:
        from .data import load_demo

        dataset = load_demo()
    test = dataset.test
    if test is None or test.masks is None:
        return []
    images = np.asarray(test.images, dtype=np.float32)
    labels = np.asarray(test.labels).astype(int)
    masks = np.asarray(test.masks) > 0
    extra = test.extra or {}
    kinds = [str(k) if str(k) else "lesion" for k in extra.get("lesion_kind", ["lesion"] * len(labels))]
    difficulty = extra.get("difficulty")
    lesion_idx = [int(i) for i in np.flatnonzero(labels == 1) if masks[i].any()]
    score = {i: lesion_conspicuity(images[i], masks[i]) for i in lesion_idx}
    order = sorted(lesion_idx, key=lambda i: (-score[i], i))
    chosen: list[int] = []
    seen: set[str] = set()
    for i in order:
        if kinds[i] not in seen:
            chosen.append(i)
            seen.add(kinds[i])
    chosen = (chosen + [i for i in order if i not in chosen])[: max(int(n), 0)]
    cases = []
    for i in chosen:
        words = _KIND_WORDS.get(kinds[i], kinds[i])
        level = f", {difficulty[i]}" if difficulty is not None and str(difficulty[i]) else ""
        label = f"{words[0].upper()}{words[1:]}{level} - test slice {i}"
        cases.append(DemoCase(f"lesion-{i}", label, images[i][None].copy(), masks[i].copy(), kinds[i]))
    return cases


# ------------------------------------------------------------------------------------------ latent sizes


def latent_size_models(cards: Sequence[ModelCard]) -> list[str]:
    """Names of the plain AEs of the latent-size sweep (``ae-d<k>``), smallest ``d`` first."""
    sweep = [c for c in cards if c.kind == "ae" and re.fullmatch(r"ae-d\d+", c.name)]
    return [c.name for c in sorted(sweep, key=lambda c: (c.latent_dim, c.name))]


def load_models(names: Sequence[str], *, max_workers: int = 4) -> list[LoadedModel]:
    """Load several models at once (threads: reading, checking and fusing weights mostly runs outside the GIL,
    so eight small models load about three times faster than one after another on a 2-core CPU).

    Models come from :func:`~ae4ad_core.registry.load_shared_model`, so pages share one copy of each. Returns the
    models in the order of ``names``; errors of :func:`~ae4ad_core.registry.load_model` propagate.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .registry import load_shared_model

    names = list(names)
    if len(names) <= 1 or max_workers <= 1:
        return [load_shared_model(n) for n in names]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(names))) as pool:
        return list(pool.map(load_shared_model, names))


def pick_vae(cards: Sequence[ModelCard], *, preferred: str = "vae-d16") -> str | None:
    """The VAE to compare scoring modes with: ``preferred`` if present, else the first VAE, else None."""
    vaes = [c.name for c in cards if c.kind == "vae"]
    if preferred in vaes:
        return preferred
    return vaes[0] if vaes else None


def _lesion_contrast(amap: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> float | None:
    """Mean map value inside the lesion / mean over the rest of the tissue (None without a lesion)."""
    if mask is None or not np.any(mask):
        return None
    m = np.asarray(mask, dtype=bool)
    rest = (image > TISSUE_LEVEL) & ~m
    base = float(amap[rest].mean()) if rest.any() else 0.0
    return float(amap[m].mean() / base) if base > 0 else None


@dataclass(frozen=True, eq=False)
class LatentSizeResult:
    """One input as seen by one AE of the sweep. Arrays are in the input geometry ``(H, W)``.

    Attributes
    ----------
    d : latent size
    model_name : registry name
    reconstruction : the model's output in the input's intensity units
    map : squared reconstruction error (model units), the pixel anomaly map
    score : image score (mean squared error)
    percentile : percent of the model's normal validation images scoring at most ``score``
    above_threshold : score above the model's calibrated image threshold
    threshold : that threshold
    display_max : top of the model's own fixed map scale (99.9th percentile of normal map values)
    lesion_contrast : mean map inside the lesion / mean over the rest of the tissue (None without a mask)
    """

    d: int
    model_name: str
    reconstruction: np.ndarray
    map: np.ndarray
    score: float
    percentile: float
    above_threshold: bool
    threshold: float
    display_max: float
    lesion_contrast: float | None


def reconstruct_across_latent_sizes(
    image, models: Sequence[LoadedModel], *, mask: np.ndarray | None = None
) -> list[LatentSizeResult]:
    """Reconstruct one slice with every model and measure how much each map highlights the lesion.

    Parameters
    ----------
    image : (H, W) or (1, H, W) array
        One slice in raw intensities (the models' cards do the preprocessing).
    models : sequence of LoadedModel
        E.g. the AEs named by :func:`latent_size_models`; results come back smallest ``d`` first.
    mask : (H, W) bool array, optional
        Ground-truth lesion, for :attr:`LatentSizeResult.lesion_contrast`.

    Returns
    -------
    list of LatentSizeResult
    """
    img = as_slice(image)
    out = []
    for loaded in sorted(models, key=lambda m: (m.card.latent_dim, m.name)):
        a = analyze(img[None], loaded, mode="reconstruction")
        amap = a.map_in_input_space(0)
        recon = reconstruction_in_raw_units(
            a.reconstruction_in_input_space(0), img, loaded.card.preprocessing
        )
        out.append(
            LatentSizeResult(
                d=loaded.card.latent_dim,
                model_name=loaded.name,
                reconstruction=recon,
                map=amap,
                score=float(a.scores[0]),
                percentile=float(a.score_percentiles[0]),
                above_threshold=bool(a.above_threshold[0]),
                threshold=float(a.threshold),
                display_max=float(a.display_max),
                lesion_contrast=_lesion_contrast(amap, img, mask),
            )
        )
    return out


def shared_display_max(results: Sequence[LatentSizeResult]) -> float:
    """One colour scale for a whole row of maps: the median of the models' own ``display_max``.

    Each model's ``display_max`` comes from its normal validation images; the median keeps both the smallest
    models (which redraw even normal anatomy poorly) and the largest (which redraw almost everything) on a scale
    where normal tissue stays dark and a missed lesion stays bright.
    """
    if not results:
        raise ValueError("No results to take a colour scale from.")
    return float(np.median([r.display_max for r in results]))


def lesion_contrast_extremes(results: Sequence[LatentSizeResult]) -> tuple[int, float, int, float] | None:
    """``(d_best, contrast_best, d_largest, contrast_largest)``: where the map singles the lesion out most, and
    how much is left at the largest ``d``. None without lesion contrasts."""
    rows = [r for r in results if r.lesion_contrast is not None]
    if not rows:
        return None
    best = max(rows, key=lambda r: (r.lesion_contrast, -r.d))
    last = max(rows, key=lambda r: r.d)
    return best.d, float(best.lesion_contrast), last.d, float(last.lesion_contrast)


# -------------------------------------------------------------------------------------------- VAE modes


@dataclass(frozen=True, eq=False)
class ModeMap:
    """One scoring mode of a VAE on one slice, in the input geometry.

    Attributes
    ----------
    mode : "reconstruction", "kl" or "combined"
    map : (H, W) pixel map in the mode's units
    display_max : top of the mode's fixed scale, from normal validation images
    score : image score in the mode's units
    percentile : percent of normal validation images scoring at most ``score``
    above_threshold : score above the calibrated image threshold
    lesion_contrast : mean map inside the lesion / mean over the rest of the tissue (None without a mask)
    reconstruction : (H, W) the VAE's output (decoded from ``mu``) in the input's intensity units
    """

    mode: str
    map: np.ndarray
    display_max: float
    score: float
    percentile: float
    above_threshold: bool
    lesion_contrast: float | None
    reconstruction: np.ndarray


def compare_modes(
    image,
    vae: LoadedModel,
    *,
    mask: np.ndarray | None = None,
    modes: Sequence[str] = ("reconstruction", "kl", "combined"),
) -> dict[str, ModeMap]:
    """The same slice scored by a VAE in each mode of Zimmerer et al. (MICCAI 2019).

    Raises :class:`~ae4ad_core.errors.UnsupportedModeError` for a model without a KL term (a plain AE).
    """
    img = as_slice(image)
    out: dict[str, ModeMap] = {}
    for mode in modes:
        a = analyze(img[None], vae, mode=mode)
        amap = a.map_in_input_space(0)
        recon = reconstruction_in_raw_units(a.reconstruction_in_input_space(0), img, vae.card.preprocessing)
        out[mode] = ModeMap(
            mode=mode,
            map=amap,
            display_max=float(a.display_max),
            score=float(a.scores[0]),
            percentile=float(a.score_percentiles[0]),
            above_threshold=bool(a.above_threshold[0]),
            lesion_contrast=_lesion_contrast(amap, img, mask),
            reconstruction=recon,
        )
    return out


# ------------------------------------------------------------------------------------------------ sweep


def load_sweep_summary(path: Path | str | None = None) -> dict | None:
    """The sweep summary (``sweep.json`` from ``ae4ad sweep``), or None if it is missing or unreadable.

    Parameters
    ----------
    path : path, optional
        Default :data:`SWEEP_PATH` (``assets/sweep/sweep.json``).
    """
    p = Path(path) if path is not None else SWEEP_PATH
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("per_d"), dict) or not data["per_d"]:
        return None
    return data


def _mean(per_d: Mapping, d, key: str) -> float | None:
    value = (per_d.get(str(d)) or {}).get(key)
    value = value.get("mean") if isinstance(value, Mapping) else value
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass(frozen=True)
class SweepLesson:
    """The numbers the page states about the sweep (means over seeds).

    Attributes
    ----------
    dims : latent sizes, ascending
    auroc : image AUROC per d (None where missing)
    entropy_nats : Gaussian latent entropy of normal images per d, in nats (None where missing)
    val_error : mean squared error on normal validation images per d (None where missing)
    n_runs : runs (seeds) per d
    chosen_d, oracle_d : label-free choice (normal validation error only) and best d on the test set
    chosen_auroc, oracle_auroc : their image AUROC
    gap_points : ``100 * (oracle_auroc - chosen_auroc)``, in AUROC points
    tolerance : relative slack of the label-free rule
    """

    dims: tuple[int, ...]
    auroc: tuple[float | None, ...]
    entropy_nats: tuple[float | None, ...]
    val_error: tuple[float | None, ...]
    n_runs: tuple[int, ...]
    chosen_d: int | None
    oracle_d: int | None
    chosen_auroc: float | None
    oracle_auroc: float | None
    gap_points: float | None
    tolerance: float | None

    def at(self, d: int | None, field: str) -> float | None:
        """``field`` ("auroc", "entropy_nats", "val_error") at latent size ``d`` (None if absent)."""
        if d is None or d not in self.dims:
            return None
        return getattr(self, field)[self.dims.index(d)]

    @property
    def entropy_grows(self) -> bool:
        """True when the latent entropy rises with every step up in d (where measured)."""
        values = [v for v in self.entropy_nats if v is not None]
        return len(values) >= 2 and all(b > a for a, b in zip(values, values[1:], strict=False))


def sweep_lesson(summary: Mapping) -> SweepLesson:
    """Pull the numbers of :class:`SweepLesson` out of a sweep summary."""
    per_d = summary["per_d"]
    dims = tuple(sorted(int(d) for d in per_d))

    def opt_float(key):
        v = summary.get(key)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    def opt_int(key):
        v = summary.get(key)
        return int(v) if isinstance(v, (int, float)) else None

    return SweepLesson(
        dims=dims,
        auroc=tuple(_mean(per_d, d, "image_auroc") for d in dims),
        entropy_nats=tuple(_mean(per_d, d, "entropy_gaussian_nats") for d in dims),
        val_error=tuple(_mean(per_d, d, "val_error") for d in dims),
        n_runs=tuple(int((per_d.get(str(d)) or {}).get("n_runs", 0) or 0) for d in dims),
        chosen_d=opt_int("chosen_d"),
        oracle_d=opt_int("oracle_d"),
        chosen_auroc=opt_float("chosen_auroc"),
        oracle_auroc=opt_float("oracle_auroc"),
        gap_points=opt_float("auroc_gap_points"),
        tolerance=opt_float("tolerance"),
    )


def sweep_teaching_figure(summary: Mapping):
    """:func:`ae4ad_core.sweep.sweep_figure` with the test-set oracle ``d`` marked too (dotted, red) and both
    choices marked on the entropy panel, so the reader sees where each sits on the entropy curve."""
    from .sweep import sweep_figure

    fig = sweep_figure(dict(summary))
    ax_score, ax_entropy = fig.axes[:2]
    oracle, chosen = summary.get("oracle_d"), summary.get("chosen_d")
    if oracle is not None:
        ax_score.axvline(oracle, color="tab:red", ls=":", lw=1.2, label=f"oracle d={oracle} (test labels)")
        ax_score.legend(fontsize=7)
    for d, colour, style in ((chosen, "tab:green", "--"), (oracle, "tab:red", ":")):
        if d is not None:
            ax_entropy.axvline(d, color=colour, ls=style, lw=1.0)
    return fig


# ------------------------------------------------------------------------------------- rate distortion


def rate_distortion_models(cards: Sequence[ModelCard]) -> list[ModelCard]:
    """Cards of rate-distortion AEs (kind ``rdae``), by name."""
    return [c for c in cards if c.kind == "rdae"]


@dataclass(frozen=True)
class RateDistortionLesson:
    """A rate-distortion AE's card numbers next to the fixed-``d`` AEs.

    Attributes
    ----------
    name : registry name
    max_d : latent values available (the rate penalty decides how many carry information)
    rate_weight : penalty per bit used in training (None if the card does not say)
    mean_rate_bits : mean bits per normal image under the learned entropy model
    effective_dim : participation ratio of the latent variance spectrum
    image_auroc : demo test AUROC (reconstruction score)
    ae_rows : the fixed-d AEs, ``{"d", "image_auroc", "entropy_bits", "effective_dim"}`` each, ascending d
    best_ae_d, best_ae_auroc : the best fixed-d AE on the test set (the oracle)
    chosen_ae_d, chosen_ae_auroc : the fixed-d AE picked from normal validation error alone (sweep summary only)
    """

    name: str
    max_d: int
    rate_weight: float | None
    mean_rate_bits: float | None
    effective_dim: float | None
    image_auroc: float | None
    ae_rows: tuple[dict, ...]
    best_ae_d: int | None
    best_ae_auroc: float | None
    chosen_ae_d: int | None = None
    chosen_ae_auroc: float | None = None

    @property
    def gain_over_chosen_points(self) -> float | None:
        """``100 * (image_auroc - chosen_ae_auroc)``: AUROC points gained over the label-free fixed-d choice."""
        if self.image_auroc is None or self.chosen_ae_auroc is None:
            return None
        return 100.0 * (self.image_auroc - self.chosen_ae_auroc)


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def rate_distortion_lesson(
    card: ModelCard, *, summary: Mapping | None = None, ae_cards: Sequence[ModelCard] = ()
) -> RateDistortionLesson:
    """Numbers for the rate-distortion paragraph.

    The fixed-``d`` AEs come from the sweep ``summary`` (means over seeds) when given, else from ``ae_cards``.
    """
    rows: list[dict] = []
    chosen_d = chosen_auroc = None
    if summary and summary.get("per_d"):
        chosen_d = int(summary["chosen_d"]) if isinstance(summary.get("chosen_d"), (int, float)) else None
        chosen_auroc = _num(summary.get("chosen_auroc"))
        per_d = summary["per_d"]
        for d in sorted(int(k) for k in per_d):
            ent = _mean(per_d, d, "entropy_gaussian_nats")
            rows.append(
                {
                    "d": d,
                    "image_auroc": _mean(per_d, d, "image_auroc"),
                    "entropy_bits": None if ent is None else ent / _NATS_PER_BIT,
                    "effective_dim": _mean(per_d, d, "effective_dim"),
                }
            )
    else:
        for c in sorted((c for c in ae_cards if c.kind == "ae"), key=lambda c: c.latent_dim):
            ent = _num((c.latent or {}).get("entropy_gaussian_nats"))
            rows.append(
                {
                    "d": c.latent_dim,
                    "image_auroc": _num((c.metrics or {}).get("reconstruction", {}).get("image_auroc")),
                    "entropy_bits": None if ent is None else ent / _NATS_PER_BIT,
                    "effective_dim": _num((c.latent or {}).get("effective_dim")),
                }
            )
    scored = [r for r in rows if r["image_auroc"] is not None]
    best = max(scored, key=lambda r: r["image_auroc"]) if scored else None
    config = (card.training or {}).get("config") or {}
    return RateDistortionLesson(
        name=card.name,
        max_d=card.latent_dim,
        rate_weight=_num(config.get("rate_weight")),
        mean_rate_bits=_num((card.latent or {}).get("mean_rate_bits")),
        effective_dim=_num((card.latent or {}).get("effective_dim")),
        image_auroc=_num((card.metrics or {}).get("reconstruction", {}).get("image_auroc")),
        ae_rows=tuple(rows),
        best_ae_d=None if best is None else best["d"],
        best_ae_auroc=None if best is None else best["image_auroc"],
        chosen_ae_d=chosen_d,
        chosen_ae_auroc=chosen_auroc,
    )
