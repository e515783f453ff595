"""One path from image slices to a verdict: :func:`analyze` returns an :class:`Analysis` that every consumer
(the app's pages, the CLI, batch screening, reports, tests) reads; nobody re-implements a step.

``slices --preprocess--> model input --model--> reconstruction, latent --scoring--> map + score
--calibration--> verdict --entropy--> surprisal, percentile, 2D position``
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .calibration import Calibration, input_statistics
from .preprocess import SliceGeometry, prepare_slices, restore_map
from .registry import LoadedModel
from .scoring import check_mode, require_calibrated_mode, score_in_batches

__all__ = [
    "Analysis",
    "ImageAnalysis",
    "analyze",
    "analyze_image",
    "calibration_of",
    "outline_in_input_space",
    "verdict_sentence",
]

def calibration_of(loaded: LoadedModel) -> Calibration:
    """The model's :class:`Calibration` (parsed once per loaded model, see ``LoadedModel.calibration``)."""
    return loaded.calibration


def _ordinal(p: float) -> str:
    n = int(round(p))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def verdict_sentence(above: bool, percentile: float, fpr: float) -> str:
    """The one sentence a clinician reads first."""
    where = "Above the normal range" if above else "Within the normal range"
    return (
        f"{where}: score at the {_ordinal(min(percentile, 100.0))} percentile of normal validation images "
        f"(threshold set for {fpr:.0%} false positives)."
    )


@dataclass(frozen=True)
class Analysis:
    """Results for N slices of one input, scored by one model in one mode. Arrays are indexed by slice.

    Model-space arrays are ``(N, S, S)``: ``inputs`` and ``reconstructions`` in [-1, 1], ``maps`` in the mode's
    units (see :mod:`ae4ad_core.scoring`). Use :meth:`map_in_input_space` to overlay a map on the original slice.
    """

    model_name: str
    mode: str
    slice_indices: list[int]
    inputs: np.ndarray
    reconstructions: np.ndarray
    maps: np.ndarray
    scores: np.ndarray
    threshold: float
    fpr: float
    above_threshold: np.ndarray
    score_percentiles: np.ndarray
    pixel_threshold: float
    display_max: float
    reconstruction_errors: np.ndarray
    kl: np.ndarray | None
    latent: np.ndarray
    surprisal: np.ndarray
    surprisal_percentiles: np.ndarray
    projection: np.ndarray
    geometries: list[SliceGeometry]
    warnings: list[list[str]] = field(default_factory=list)
    brain: np.ndarray | None = None
    """``(N, H, W)`` bool brain mask of the scored slices in the input geometry (:func:`analyze_image`), or
    ``None``; maps and outlines in the input geometry are zero outside it."""

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def volume_score(self) -> float:
        """Maximum slice score (the usual volume-level aggregate, MOOD/DKFZ baselines)."""
        return float(np.max(self.scores))

    @property
    def volume_above_threshold(self) -> bool:
        return bool(np.any(self.above_threshold))

    def verdict(self, i: int = 0) -> str:
        return verdict_sentence(bool(self.above_threshold[i]), float(self.score_percentiles[i]), self.fpr)

    def map_in_input_space(self, i: int = 0) -> np.ndarray:
        """Slice ``i``'s anomaly map resized back to the input slice's geometry ``(H, W)`` (zero outside
        :attr:`brain` when there is one)."""
        values = restore_map(self.maps[i], self.geometries[i], fill=0.0)
        return values if self.brain is None else np.where(self.brain[i], values, np.float32(0.0))

    def reconstruction_in_input_space(self, i: int = 0) -> np.ndarray:
        """Slice ``i``'s reconstruction resized back to the input geometry, in model intensity units."""
        return restore_map(self.reconstructions[i], self.geometries[i], fill=-1.0)

    def outline_mask(self, i: int = 0) -> np.ndarray:
        """Pixels of slice ``i`` above the calibrated pixel threshold, in model space ``(S, S)``."""
        return self.maps[i] > self.pixel_threshold

    def outline_in_input_space(self, i: int = 0) -> np.ndarray:
        """:meth:`outline_mask` of slice ``i`` mapped back to the input geometry ``(H, W)``."""
        return outline_in_input_space(self, i)

    def anomalous_fraction(self, i: int = 0) -> float:
        """Share of slice ``i`` above the calibrated pixel threshold: of the extracted brain's pixels in the input
        geometry when there is a brain mask (:attr:`brain`), else of the model-space image."""
        if self.brain is None:
            return float(np.mean(self.outline_mask(i)))
        inside = self.brain[i]
        return float(self.outline_in_input_space(i)[inside].mean()) if inside.any() else 0.0

    def records(self) -> list[dict]:
        """One JSON-ready row per slice (no pixel data, no identifiers)."""
        rows = []
        for i, idx in enumerate(self.slice_indices):
            row = {
                "slice": int(idx),
                "model": self.model_name,
                "mode": self.mode,
                "score": float(self.scores[i]),
                "threshold": self.threshold,
                "above_threshold": bool(self.above_threshold[i]),
                "score_percentile": float(self.score_percentiles[i]),
                "false_positive_rate": self.fpr,
                "reconstruction_error": float(self.reconstruction_errors[i]),
                "latent_surprisal_nats": float(self.surprisal[i]),
                "latent_surprisal_percentile": float(self.surprisal_percentiles[i]),
                "anomalous_pixel_fraction": self.anomalous_fraction(i),
                "warnings": "; ".join(self.warnings[i]) if self.warnings else "",
            }
            if self.kl is not None:
                row["kl_nats"] = float(self.kl[i])
            rows.append(row)
        return rows

    def to_json(self, *, extra: dict | None = None) -> str:
        """The result as JSON: per-slice records plus the volume aggregate."""
        payload = {
            "model": self.model_name,
            "mode": self.mode,
            "volume_score": self.volume_score,
            "volume_above_threshold": self.volume_above_threshold,
            "threshold": self.threshold,
            "false_positive_rate": self.fpr,
            "pixel_threshold": self.pixel_threshold,
            "slices": self.records(),
        }
        if extra:
            payload.update(extra)
        return json.dumps(payload, indent=1)


def outline_in_input_space(analysis, i: int) -> np.ndarray:
    """Pixels of slice ``i`` above the calibrated pixel threshold, in the input geometry ``(H, W)``.

    Works on anything with ``outline_mask(i)`` and ``geometries`` (an :class:`Analysis`)."""
    mask = analysis.outline_mask(i).astype(np.float32)
    outline = restore_map(mask, analysis.geometries[i], fill=0.0) >= 0.5
    brain = getattr(analysis, "brain", None)
    return outline if brain is None else outline & brain[i]


# Out-of-distribution checks of one input slice against the normal images the model was calibrated on
# (:func:`_input_warnings`). These are heuristics chosen by hand on the demo normal images, not values from a
# paper; the ranges they widen are those of the calibration's normal images (0.5th-99.5th percentiles,
# ``Calibration.input_stats``), so they follow each model's own training data.
FOREGROUND_FRACTION_MARGIN: tuple[float, float] = (0.8, 1.2)
"""Share of tissue pixels accepted: from 0.8 x the normal images' lower bound to 1.2 x their upper bound
(capped at 1). Outside, the input is likely cropped, padded or of another body part."""

FOREGROUND_MEAN_MARGIN = 0.15
"""Mean tissue intensity accepted: the normal range widened by 0.15 model units (inputs scaled to [-1, 1])
on each side. Outside, the input likely has another contrast or comes from another scanner."""

FAR_SURPRISAL_SPREAD = 1.0
"""A latent code is "far" when its surprisal exceeds the largest normal surprisal by more than this many times
that maximum's distance from the normal median (a robust, label-free spread)."""


def _input_warnings(x: torch.Tensor, surprisal: np.ndarray, cal: Calibration) -> list[list[str]]:
    """Plain-language reasons why each slice of ``x`` (model inputs ``(N, 1, S, S)``) may lie outside what the
    model was trained on: tissue share, tissue intensity and latent surprisal (nats) checked against the
    calibration's normal images with the heuristic margins above."""
    stats = input_statistics(x)
    out: list[list[str]] = [[] for _ in range(len(x))]
    fr = cal.input_stats.get("foreground_fraction")
    mean = cal.input_stats.get("foreground_mean")
    ns = cal.latent.normal_surprisal
    far = float(ns[-1] + FAR_SURPRISAL_SPREAD * (ns[-1] - np.median(ns)))
    low, high = FOREGROUND_FRACTION_MARGIN
    for i in range(len(x)):
        f = float(stats["foreground_fraction"][i])
        if fr and not (low * fr[0] <= f <= min(1.0, high * fr[1])):
            out[i].append(
                f"tissue covers {f:.0%} of the image, outside the training range ({fr[0]:.0%}-{fr[1]:.0%})"
            )
        m = float(stats["foreground_mean"][i])
        if mean and not (mean[0] - FOREGROUND_MEAN_MARGIN <= m <= mean[1] + FOREGROUND_MEAN_MARGIN):
            out[i].append("its intensity distribution differs from the training images (other contrast or scanner?)")
        if surprisal[i] > far:
            out[i].append("its latent code lies far outside those of every normal training image")
    return out


def analyze(
    slices,
    loaded: LoadedModel,
    *,
    mode: str = "reconstruction",
    slice_indices: list[int] | None = None,
    batch_size: int = 64,
) -> Analysis:
    """Score slices with a loaded, calibrated model.

    Parameters
    ----------
    slices : (N, H, W) array or sequence of (H, W) arrays
        Raw intensities (e.g. ``Image.pixels``); preprocessing is the model card's.
    loaded : LoadedModel
    mode : {"reconstruction", "kl", "combined"}
    slice_indices : list of int, optional
        Which slices of ``slices`` to score (default: all).
    """
    card = loaded.card
    check_mode(loaded.inference, mode, model_name=f"model {card.name!r}")
    cal = calibration_of(loaded)
    mc = require_calibrated_mode(cal.modes, mode, model_name=card.name)
    n_total = len(slices)
    indices = list(range(n_total)) if slice_indices is None else [int(i) for i in slice_indices]
    for i in indices:
        if not 0 <= i < n_total:
            raise IndexError(f"Slice {i} does not exist; the input has {n_total} slice(s).")
    x, geoms = prepare_slices([slices[i] for i in indices], card.preprocessing, device=loaded.device)
    res = score_in_batches(loaded.inference, x, mode=mode, kl_gradient_scale=cal.kl_gradient_scale,
                           scoring=card.map_scoring, batch_size=batch_size)

    def cat(attr):
        value = getattr(res, attr)
        return None if value is None else value.numpy()

    scores = cat("scores").astype(np.float64)
    latent = cat("mu")
    surprisal = cal.latent.surprisal(latent)
    return Analysis(
        model_name=card.name,
        mode=mode,
        slice_indices=indices,
        inputs=x[:, 0].float().cpu().numpy(),
        reconstructions=cat("reconstruction")[:, 0],
        maps=cat("maps"),
        scores=scores,
        threshold=mc.threshold,
        fpr=cal.fpr,
        above_threshold=scores > mc.threshold,
        score_percentiles=mc.percentile(scores),
        pixel_threshold=mc.pixel_threshold,
        display_max=mc.display_max,
        reconstruction_errors=cat("reconstruction_error"),
        kl=cat("kl"),
        latent=latent,
        surprisal=surprisal,
        surprisal_percentiles=cal.latent.percentile(surprisal),
        projection=cal.latent.project(latent),
        geometries=geoms,
        warnings=_input_warnings(x, surprisal, cal),
    )


@dataclass(frozen=True)
class ImageAnalysis:
    """One image taken the whole way (:func:`analyze_image`): which scan it is, which model fits, what brain
    extraction and standardisation did, and the :class:`Analysis` (``None`` when no model fits).

    Attributes
    ----------
    guess : SequenceGuess
        What the scan appears to be (:func:`ae4ad_core.sequence.detect_sequence`).
    choice : ModelChoice
        The model that fits it, or ``model=None`` and the plain reason none does.
    analysis : Analysis or None
        ``None`` when no model fits and none was given.
    preparation : dict or None
        The record of :func:`ae4ad_core.standardise.prepare_whole_head` (``None`` without an analysis).
    brain : (N, H, W) bool array or None
        The brain mask the model's slices were standardised in.
    warning : str or None
        :func:`ae4ad_core.model_choice.override_warning` when the model used does not fit the scan.
    slices : (N, H, W) float32 array or None
        What the model was given: the standardised slices (z inside the brain) for a patient model, the
        pixels for a teaching model. Show the reconstruction against these, the input against the pixels.
    """

    guess: object
    choice: object
    analysis: Analysis | None = None
    preparation: dict | None = None
    brain: np.ndarray | None = None
    warning: str | None = None
    slices: np.ndarray | None = None

    @property
    def fits(self) -> bool:
        """True when a model trained on this kind of scan produced the analysis."""
        return self.analysis is not None and self.warning is None

    def to_record(self) -> dict:
        """JSON-ready ``{"model_choice", "preparation", "override_warning"}`` for the JSON/CSV/PDF exports."""
        record = {"model_choice": self.choice.to_record(), "preparation": self.preparation}
        if self.warning:
            record["override_warning"] = self.warning
        return record


def analyze_image(
    image,
    loaded: LoadedModel | None = None,
    *,
    cards=None,
    mode: str = "reconstruction",
    guess=None,
    slice_indices: list[int] | None = None,
    brain_mask: np.ndarray | None = None,
) -> ImageAnalysis:
    """Detect -> choose -> prepare -> :func:`analyze`: the one path from a whole-head upload to a verdict.

    Parameters
    ----------
    image : Image
        As :func:`ae4ad_core.io.read_image` returns it (scanner units, skull included or not).
    loaded : LoadedModel, optional
        The model to use; by default the one :func:`ae4ad_core.model_choice.choose_model` picks (loaded from
        the process-wide cache). A given model that does not fit the scan is used anyway, with
        :attr:`ImageAnalysis.warning` saying why its map needs care.
    cards : sequence of cards, optional
        The registered models to choose from (:func:`ae4ad_core.cards.list_card_summaries` by default).
    mode : {"reconstruction", "kl", "combined"}
    guess : SequenceGuess, optional
        A detection already made (e.g. a demo case whose sequence is known).
    slice_indices : list of int, optional
        Which slices to score (default: all).
    brain_mask : (N, H, W) bool array, optional
        Passed to :func:`ae4ad_core.standardise.prepare_whole_head` instead of extracting the brain.

    Returns
    -------
    ImageAnalysis
        ``analysis`` is ``None`` (and ``choice.reason`` says why) when no model fits and none was given.
    """
    from .model_choice import choose_model, override_warning
    from .registry import load_shared_model
    from .sequence import detect_sequence
    from .standardise import prepare_whole_head

    guess = detect_sequence(image) if guess is None else guess
    choice = choose_model(guess, cards)
    if loaded is None:
        if choice.model is None:
            return ImageAnalysis(guess=guess, choice=choice)
        loaded = load_shared_model(choice.model)
    from .errors import DataError
    from .model_choice import is_patient_model

    warning = override_warning(guess, loaded.card)
    try:
        slices, brain, record = prepare_whole_head(image, loaded.card, guess=guess, brain_mask=brain_mask)
    except DataError as exc:
        if is_patient_model(loaded.card):
            raise
        # A teaching model reads the pixels as they are; without a brain its map is not restricted.
        slices, brain = np.asarray(image.pixels), None
        record = {"model": loaded.card.name, "sequence": guess.to_record(), "brain_extraction": None,
                  "brain_fraction": None, "notes": [f"no brain mask, the map covers the whole image: {exc}"]}
    result = analyze(slices, loaded, mode=mode, slice_indices=slice_indices)
    if brain is not None:
        # Maps and outlines stop at the extracted brain (the resized model-space map bleeds past its edge).
        result = replace(result, brain=brain[result.slice_indices])
    return ImageAnalysis(guess, choice, result, record, brain, warning, np.asarray(slices, dtype=np.float32))
