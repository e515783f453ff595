"""From a model's residual to a lesion map and an image score: the post-processing a model card records.

The AE4AD paper (Cai et al., MICCAI 2024) scores with the plain squared error ``(x - x_hat)^2`` and its mean over
the image. On brain MRI that map lights up anatomy as much as lesions: every edge the model blurs is an error,
and the mean follows how much brain a slice holds. The brain-MRI literature post-processes instead (Baur et al.,
MedIA 2021; Kascenas et al., MIDL 2022; MOOD challenge conventions): keep only the residual's sign that fits the
lesion contrast (hyperintense lesions on FLAIR), smooth, restrict to an eroded brain mask, and score a slice by
a high quantile of its map rather than its mean. :class:`MapScoring` holds these choices; a card stores them,
calibration and evaluation use them, and inference replays them. :data:`PAPER_SCORING` is the paper's protocol.

Model-space maps are ``(N, S, S)``; the brain mask is read from the model input itself: pixels above
:data:`BRAIN_LEVEL` (inputs are in [-1, 1] with the background at -1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ModelCardError, look_up_option

if TYPE_CHECKING:  # the functions import torch when called: a card (and its MapScoring) is read without it
    import torch

__all__ = [
    "RESIDUALS",
    "AGGREGATES",
    "BRAIN_LEVEL",
    "MapScoring",
    "PAPER_SCORING",
    "residual_map",
    "brain_mask",
    "finish_maps",
    "aggregate_scores",
    "fit_intensity_prior",
    "PRIOR_PERCENTILE",
]

RESIDUALS = ("squared", "positive", "absolute")
AGGREGATES = ("mean", "quantile", "squared_error")
BRAIN_LEVEL = -0.98
"""Model-space value above which a pixel counts as brain (background is exactly -1 after preprocessing; the
margin absorbs the antialiased resize at the brain's edge)."""


@dataclass(frozen=True)
class MapScoring:
    """How a residual becomes the anomaly map and the image score (stored in the card as ``scoring``).

    Attributes
    ----------
    residual : {"squared", "positive", "absolute"}
        ``(x - x_hat)^2``; ``max(x - x_hat, 0)^2`` (only where the input is brighter than its reconstruction:
        hyperintense lesions); ``|x - x_hat|``.
    smooth_sigma : float
        Gaussian smoothing of the map, in model-space pixels (0 = none).
    brain_only : bool
        Zero the map outside the brain (read from the input, see :data:`BRAIN_LEVEL`).
    brain_erosion : int
        Erode that brain mask by this many pixels first (the reconstruction is least reliable at the edge).
    aggregate : {"mean", "quantile", "squared_error"}
        Image score = mean of the map over the whole image, its ``quantile`` over the brain, or the mean squared
        reconstruction error of the whole image (the AE4AD paper's slice score) whatever the map is: the slice
        verdict and the pixel map may each use what serves it best.
    quantile : float
        In (0, 1], used when ``aggregate == "quantile"``.
    intensity_prior : float or None
        Keep the map only where the input is brighter than this model-space level (the lesion-contrast prior of
        the brain-MRI literature, e.g. Baur et al. 2021: FLAIR lesions are hyperintense); the level is a
        high percentile of NORMAL brain intensity, fitted on the training normals (:func:`fit_intensity_prior`).
    """

    residual: str = "squared"
    smooth_sigma: float = 0.0
    brain_only: bool = False
    brain_erosion: int = 0
    aggregate: str = "mean"
    quantile: float = 0.99
    intensity_prior: float | None = None

    def __post_init__(self) -> None:
        try:
            look_up_option(self.residual, RESIDUALS, what="residual")
            look_up_option(self.aggregate, AGGREGATES, what="aggregate")
        except ValueError as exc:
            raise ModelCardError(str(exc)) from None
        if self.smooth_sigma < 0 or self.brain_erosion < 0 or not 0 < self.quantile <= 1:
            raise ModelCardError(f"Invalid map scoring {self}: sigma and erosion must be >= 0, quantile in (0, 1].")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> MapScoring:
        if not data:
            return PAPER_SCORING
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelCardError(f"Unknown scoring fields {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**data)

    def describe(self) -> str:
        """One line for cards, pages and reports."""
        parts = {"squared": "squared error", "positive": "positive residual (input brighter than its "
                 "reconstruction), squared", "absolute": "absolute error"}[self.residual]
        steps = [parts]
        if self.smooth_sigma:
            steps.append(f"Gaussian smoothing (sigma {self.smooth_sigma:g} px at model size)")
        if self.brain_only:
            steps.append("brain only" + (f" (mask eroded {self.brain_erosion} px)" if self.brain_erosion else ""))
        if self.intensity_prior is not None:
            steps.append(f"only where the input is brighter than normal brain (model level {self.intensity_prior:.2f})")
        steps.append({"mean": "slice score = mean of the map",
                      "squared_error": "slice score = mean squared reconstruction error (the paper's)"}.get(
            self.aggregate, f"slice score = {self.quantile:.1%} quantile of the map inside the brain"))
        return "; ".join(steps)


PAPER_SCORING = MapScoring()
"""The AE4AD protocol: squared error over the whole image, slice score = its mean."""


def residual_map(x: torch.Tensor, reconstruction: torch.Tensor, residual: str) -> torch.Tensor:
    """``(N, S, S)`` residual of inputs and reconstructions ``(N, 1, S, S)`` (see :class:`MapScoring`)."""
    d = (x - reconstruction)[:, 0].float()
    if residual == "squared":
        return d.pow(2)
    if residual == "positive":
        return d.clamp_min(0.0).pow(2)
    return d.abs()


def brain_mask(x: torch.Tensor, erosion: int = 0) -> torch.Tensor:
    """Boolean ``(N, S, S)`` brain mask of model inputs ``(N, 1, S, S)``, eroded by ``erosion`` pixels."""
    import torch.nn.functional as F

    mask = (x[:, 0] > BRAIN_LEVEL).float()
    if erosion > 0:
        k = 2 * erosion + 1
        mask = -F.max_pool2d(-mask[:, None], k, stride=1, padding=erosion)[:, 0]
    return mask > 0.5


def finish_maps(maps: torch.Tensor, x: torch.Tensor, scoring: MapScoring) -> torch.Tensor:
    """Smooth and brain-restrict raw maps ``(N, S, S)`` of inputs ``x`` as ``scoring`` says."""
    import torch

    from .scoring import gaussian_smooth

    out = maps.float()
    if scoring.intensity_prior is not None:
        out = torch.where(x[:, 0] > scoring.intensity_prior, out, torch.zeros_like(out))
    if scoring.smooth_sigma > 0:
        out = gaussian_smooth(out, scoring.smooth_sigma)
    if scoring.brain_only:
        out = torch.where(brain_mask(x, scoring.brain_erosion), out, torch.zeros_like(out))
    return out


PRIOR_PERCENTILE = 95.0
"""Normal brain pixels above this percentile count as "brighter than normal brain" for the intensity prior."""


def fit_intensity_prior(x_normal: torch.Tensor, percentile: float = PRIOR_PERCENTILE) -> float:
    """The model-space level of :attr:`MapScoring.intensity_prior`: the ``percentile`` of brain pixels of NORMAL
    model inputs ``(N, 1, S, S)``."""
    import torch

    vals = x_normal[:, 0][brain_mask(x_normal)].float()
    return float(torch.quantile(vals[:: max(1, vals.numel() // 1_000_000)], percentile / 100.0))


def aggregate_scores(maps: torch.Tensor, x: torch.Tensor, scoring: MapScoring,
                     reconstruction: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Image scores ``(N,)`` of finished maps ``(N, S, S)`` (``reconstruction`` ``(N, 1, S, S)`` is needed by
    the ``squared_error`` aggregate)."""
    import torch

    if scoring.aggregate == "mean":
        return maps.mean(dim=(1, 2))
    if scoring.aggregate == "squared_error":
        if reconstruction is None:
            raise ValueError("The squared_error slice score needs the reconstruction.")
        return (x - reconstruction).float().pow(2).mean(dim=(1, 2, 3))
    inside = brain_mask(x, scoring.brain_erosion if scoring.brain_only else 0)
    scores = []
    for m, b in zip(maps, inside, strict=True):
        vals = m[b] if bool(b.any()) else m.reshape(-1)
        scores.append(torch.quantile(vals.float(), scoring.quantile))
    return torch.stack(scores) if scores else maps.new_zeros(0)
