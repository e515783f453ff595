"""Calibration on NORMAL validation images: what "normal" looks like for a model, stored in its card.

For each scoring mode the model supports:

* an image threshold = the ``(1 - fpr)`` quantile of normal image scores, so a stated share ``fpr`` of normal
  images (default 5%) is flagged;
* a pixel threshold = the ``(1 - pixel_fpr)`` quantile of normal map values over foreground pixels (default 1%);
* a display maximum = the 99.9th percentile of normal foreground map values: maps are always shown on
  ``[0, display_max]``, never stretched per image;
* the sorted normal scores (for percentiles and the histogram shown next to a verdict).

For a VAE, ``kl_gradient_scale`` (99th percentile of the smoothed KL gradient over normal foreground pixels)
normalises the KL map inside the ``combined`` mode. Input statistics (foreground fraction and mean intensity in
model space) tell when an input does not look like the training data. The latent statistics of
:mod:`ae4ad_core.entropy` are fitted on the same normal images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .entropy import LatentStatistics, fit_latent_statistics
from .models import AutoEncoder
from .postprocess import PAPER_SCORING, MapScoring
from .scoring import FOREGROUND_LEVEL, modes_for, score_in_batches

__all__ = ["Calibration", "ModeCalibration", "calibrate", "calibrated_modes", "input_statistics", "score_all"]


@dataclass(frozen=True)
class ModeCalibration:
    """Calibration of one scoring mode (see the module docstring)."""

    threshold: float
    pixel_threshold: float
    display_max: float
    normal_scores: np.ndarray  # sorted

    def percentile(self, score) -> np.ndarray:
        """Percent (0-100) of normal validation images scoring <= ``score``."""
        s = np.atleast_1d(np.asarray(score, dtype=np.float64))
        return 100.0 * np.searchsorted(self.normal_scores, s, side="right") / len(self.normal_scores)

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "display_max": self.display_max,
            "normal_scores": [float(v) for v in self.normal_scores],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModeCalibration:
        return cls(
            threshold=float(data["threshold"]),
            pixel_threshold=float(data["pixel_threshold"]),
            display_max=float(data["display_max"]),
            normal_scores=np.sort(np.asarray(data["normal_scores"], dtype=np.float64)),
        )


@dataclass(frozen=True)
class Calibration:
    """All calibration results of a model (``card.calibration`` plus ``card.latent``)."""

    fpr: float
    pixel_fpr: float
    n_images: int
    modes: dict[str, ModeCalibration]
    kl_gradient_scale: float | None
    input_stats: dict
    latent: LatentStatistics

    def to_card_fields(self) -> tuple[dict, dict]:
        """``(calibration, latent)`` dicts for the model card."""
        cal = {
            "fpr": self.fpr,
            "pixel_fpr": self.pixel_fpr,
            "n_images": self.n_images,
            "kl_gradient_scale": self.kl_gradient_scale,
            "input_stats": self.input_stats,
            "modes": {m: c.to_dict() for m, c in self.modes.items()},
        }
        return cal, self.latent.to_dict()

    @classmethod
    def from_card(cls, card) -> Calibration:
        from .errors import ModelCardError

        cal = card.calibration
        if not cal or not card.latent:
            raise ModelCardError(f"{card.name}: the model is not calibrated (no calibration in its card).")
        return cls(
            fpr=float(cal["fpr"]),
            pixel_fpr=float(cal["pixel_fpr"]),
            n_images=int(cal["n_images"]),
            modes={m: ModeCalibration.from_dict(c) for m, c in cal["modes"].items()},
            kl_gradient_scale=cal.get("kl_gradient_scale"),
            input_stats=dict(cal.get("input_stats", {})),
            latent=LatentStatistics.from_dict(card.latent),
        )


def input_statistics(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image foreground fraction and foreground mean intensity of model-space inputs ``(N, 1, S, S)``."""
    fg = x[:, 0] > FOREGROUND_LEVEL
    frac = fg.float().mean(dim=(1, 2))
    mean = torch.where(fg, x[:, 0], torch.zeros_like(x[:, 0])).sum(dim=(1, 2)) / fg.sum(dim=(1, 2)).clamp_min(1)
    return {"foreground_fraction": frac.cpu().numpy(), "foreground_mean": mean.cpu().numpy()}


def score_all(
    model: AutoEncoder, x: torch.Tensor, *, mode: str, kl_gradient_scale: float | None = None,
    scoring: MapScoring = PAPER_SCORING, batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """:func:`ae4ad_core.scoring.score_in_batches` as numpy: ``maps``, ``scores``, ``mu``, ``kl`` (or None)
    and ``rec``."""
    r = score_in_batches(model, x, mode=mode, kl_gradient_scale=kl_gradient_scale, scoring=scoring,
                         batch_size=batch_size)
    return {"maps": r.maps.numpy(), "scores": r.scores.numpy(), "mu": r.mu.numpy(),
            "kl": None if r.kl is None else r.kl.numpy(), "rec": r.reconstruction.numpy()}


def calibrated_modes(model: AutoEncoder, scoring: MapScoring) -> list[str]:
    """The modes calibration covers: those the model supports, plus the paper's ``mse`` when the card's
    scoring differs from it (otherwise ``mse`` would repeat ``reconstruction``)."""
    supported = [m for m, reason in modes_for(model).items() if reason is None]
    order = ["reconstruction", "kl", "combined"] + (["mse"] if scoring != PAPER_SCORING else [])
    return [m for m in order if m in supported]


def _foreground_values(maps: np.ndarray, x: torch.Tensor) -> np.ndarray:
    fg = (x[:, 0] > FOREGROUND_LEVEL).cpu().numpy()
    vals = maps[fg]
    return vals if vals.size else maps.ravel()


def _rates(model: AutoEncoder, x: torch.Tensor, batch_size: int) -> np.ndarray | None:
    """Bits per image of a rate-distortion AE's quantised latents (None for other models)."""
    if not hasattr(model, "rate_bits"):
        return None
    device = next(model.parameters()).device
    with torch.inference_mode():
        return torch.cat([model(x[i: i + batch_size].to(device)).rate.float().cpu()
                          for i in range(0, len(x), batch_size)]).numpy()


def calibrate(
    model: AutoEncoder,
    x_normal: torch.Tensor,
    *,
    fpr: float = 0.05,
    pixel_fpr: float = 0.01,
    batch_size: int = 256,
    max_scores: int = 2000,
    scoring: MapScoring = PAPER_SCORING,
) -> Calibration:
    """Calibrate ``model`` (eval mode) on normal preprocessed images ``x_normal`` ``(N, 1, S, S)``.

    Parameters
    ----------
    fpr : float
        Share of normal images allowed above the image threshold (false-positive rate).
    pixel_fpr : float
        Share of normal foreground pixels allowed above the pixel threshold.
    scoring : MapScoring
        The card's map post-processing, replayed exactly as inference will.
    """
    if not 0 < fpr < 1 or not 0 < pixel_fpr < 1:
        raise ValueError(f"fpr and pixel_fpr must be in (0, 1), got {fpr}, {pixel_fpr}.")
    if len(x_normal) < 10:
        raise ValueError(f"Calibration needs at least 10 normal images, got {len(x_normal)}.")
    modes: dict[str, ModeCalibration] = {}
    kl_scale = None
    rec = score_all(model, x_normal, mode="reconstruction", scoring=scoring, batch_size=batch_size)
    for mode in calibrated_modes(model, scoring):
        res = rec if mode == "reconstruction" else score_all(
            model, x_normal, mode=mode, kl_gradient_scale=kl_scale, scoring=scoring, batch_size=batch_size
        )
        vals = _foreground_values(res["maps"], x_normal)
        if mode == "kl":
            kl_scale = float(np.quantile(vals, 0.99)) or 1e-12
        scores = np.sort(res["scores"].astype(np.float64))
        sample = scores if len(scores) <= max_scores else scores[np.linspace(0, len(scores) - 1, max_scores).astype(int)]
        modes[mode] = ModeCalibration(
            threshold=float(np.quantile(scores, 1.0 - fpr)),
            pixel_threshold=float(np.quantile(vals, 1.0 - pixel_fpr)),
            display_max=float(np.quantile(vals, 0.999)),
            normal_scores=sample,
        )
    stats = input_statistics(x_normal)
    input_stats = {
        k: [float(np.quantile(v, 0.005)), float(np.quantile(v, 0.995))] for k, v in stats.items()
    }
    latent = fit_latent_statistics(rec["mu"], kl=rec["kl"], rate_bits=_rates(model, x_normal, batch_size))
    return Calibration(
        fpr=fpr, pixel_fpr=pixel_fpr, n_images=len(x_normal), modes=modes, kl_gradient_scale=kl_scale,
        input_stats=input_stats, latent=latent,
    )
