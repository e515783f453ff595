"""Pixel anomaly maps and image scores: reconstruction error, KL gradient and their combination.

Pure tensor functions; nothing here loads files or knows about pages.

Modes (Zimmerer et al., MICCAI 2019, §2; AE4AD, Cai et al., MICCAI 2024):

``reconstruction``
    map = the residual post-processed as the model card's :class:`~ae4ad_core.postprocess.MapScoring` says
    (e.g. positive residual, smoothed, brain only; image score = a high quantile inside the brain); for a card
    without one, the paper's ``(x - x_hat)^2`` with the mean as image score.
``mse``
    the AE4AD paper's protocol whatever the card says: map = ``(x - x_hat)^2``, image score = its mean (kept for
    reproducing the paper beside the product's scoring).
``kl`` (VAE only)
    map = Gaussian-smoothed ``|dKL(q(z|x) || N(0, I)) / dx|`` at ``z = mu``, computed with autograd
    (sigma = 3 px at 64 px, scaled with the input size); image score = the KL value in nats.
``combined`` (VAE only)
    map = ``(smoothed |dKL/dx| / kl_gradient_scale) * (x - x_hat)^2``, where ``kl_gradient_scale`` is the
    99th percentile of the smoothed KL-gradient over foreground pixels of NORMAL validation images (stored in
    the model card), so one image's map never depends on the others scored with it; image score = mean of the
    combined map (in units of squared error, like the reconstruction score). The card's map scoring chooses the
    residual, smoothing, brain restriction and aggregation here too.

Reconstruction-only scoring runs under ``torch.inference_mode`` (no autograd graph is built).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ModelCardError, UnsupportedModeError, look_up_option
from .models import AutoEncoder, kl_divergence
from .postprocess import PAPER_SCORING, MapScoring, aggregate_scores, brain_mask, finish_maps, residual_map

__all__ = [
    "SCORING_MODES",
    "ScoreResult",
    "modes_for",
    "check_mode",
    "gaussian_smooth",
    "smoothing_sigma",
    "kl_input_gradient",
    "score_batch",
    "score_in_batches",
    "require_calibrated_mode",
]

SCORING_MODES = ("reconstruction", "kl", "combined", "mse")
FOREGROUND_LEVEL = -0.9  # model-space value above which a pixel counts as foreground (inputs are in [-1, 1])


@dataclass(frozen=True)
class ScoreResult:
    """Scores of a batch, all in model space.

    Attributes
    ----------
    mode : str
    maps : (N, S, S) float32 pixel anomaly map (unnormalised, in the mode's own units)
    scores : (N,) image scores
    reconstruction : (N, 1, S, S) model output
    mu : (N, d) latent code used for decoding (``mu`` for a VAE)
    reconstruction_error : (N,) mean squared error per image
    kl : (N,) KL divergence in nats (VAE) or None
    """

    mode: str
    maps: torch.Tensor
    scores: torch.Tensor
    reconstruction: torch.Tensor
    mu: torch.Tensor
    reconstruction_error: torch.Tensor
    kl: torch.Tensor | None


def modes_for(model: AutoEncoder) -> dict[str, str | None]:
    """Map each scoring mode to ``None`` if the model supports it, else the reason it does not."""
    reason = None if getattr(model, "is_variational", False) else "needs a VAE: this model has no KL term"
    return {"reconstruction": None, "kl": reason, "combined": reason, "mse": None}


def require_calibrated_mode(calibrated, mode: str, *, model_name: str):
    """The calibration of ``mode`` from ``calibrated`` (a mapping mode -> calibration); the one error for a
    mode the model's card has no calibration for."""
    if mode not in calibrated:
        raise ModelCardError(
            f"{model_name}: mode {mode!r} was not calibrated for this model; calibrated modes: "
            f"{', '.join(sorted(calibrated)) or 'none'}."
        )
    return calibrated[mode]


def check_mode(model: AutoEncoder, mode: str, *, model_name: str = "this model") -> str:
    """Validate ``mode`` for ``model``; raise :class:`UnsupportedModeError` with the reason otherwise."""
    look_up_option(mode, SCORING_MODES, what="scoring mode")
    reason = modes_for(model)[mode]
    if reason is not None:
        raise UnsupportedModeError(
            f"Mode {mode!r} is not available for {model_name}: it {reason}. "
            "Choose a VAE model or the 'reconstruction' mode."
        )
    return mode


def smoothing_sigma(size: int) -> float:
    """Gaussian sigma for KL-gradient maps: 3 px at 64 px, proportional to the input side."""
    return 3.0 * size / 64.0


_KERNELS: dict[tuple[float, str, str], torch.Tensor] = {}


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (sigma, str(device), str(dtype))
    if key not in _KERNELS:
        radius = max(1, int(math.ceil(sigma)))  # kernel 7 at sigma 3, as in Zimmerer et al.
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        _KERNELS[key] = (k / k.sum()).to(device=device, dtype=dtype)
    return _KERNELS[key]


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(N, H, W)`` or ``(N, 1, H, W)`` maps (reflect padding)."""
    squeeze = maps.ndim == 3
    x = maps[:, None] if squeeze else maps
    k = _gaussian_kernel(float(sigma), x.device, x.dtype)
    r = k.numel() // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0] if squeeze else x


def kl_input_gradient(model: AutoEncoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``|dKL/dx|`` for each image of ``x`` ``(N, 1, S, S)``, with ``z = mu``.

    Returns ``(gradient (N, S, S), kl (N,), mu (N, d))``. Images are independent in eval mode, so the
    gradient of the summed KL gives each image's own gradient. Works inside ``torch.no_grad()`` and
    ``torch.inference_mode()`` blocks of the caller (autograd is switched back on locally) and with model
    parameters that do not require gradients (only the input's gradient is computed).
    """
    with torch.inference_mode(False), torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        mu, logvar = model.encode(xi)
        kl = kl_divergence(mu, logvar)
        (grad,) = torch.autograd.grad(kl.sum(), xi)
    return grad.abs()[:, 0], kl.detach(), mu.detach()


def score_batch(
    model: AutoEncoder,
    x: torch.Tensor,
    *,
    mode: str = "reconstruction",
    kl_gradient_scale: float | None = None,
    scoring: MapScoring = PAPER_SCORING,
) -> ScoreResult:
    """Score a batch of preprocessed images.

    Parameters
    ----------
    model : AutoEncoder
        In eval mode (e.g. from :func:`ae4ad_core.models.fuse_for_inference`), on ``x``'s device.
    x : torch.Tensor
        ``(N, 1, S, S)`` images in [-1, 1].
    mode : {"reconstruction", "kl", "combined", "mse"}
    kl_gradient_scale : float
        Normal reference scale of the smoothed KL gradient (from calibration); required for ``combined``.
    scoring : MapScoring
        The card's map post-processing (ignored by ``mse``, which is the paper's protocol).

    Returns
    -------
    ScoreResult
    """
    check_mode(model, mode)
    if model.training:
        raise ValueError("score_batch needs a model in eval mode (call model.eval()).")
    if mode in ("reconstruction", "mse"):
        rule = PAPER_SCORING if mode == "mse" else scoring
        with torch.inference_mode():
            out = model(x)
            rec_err = (x - out.reconstruction).pow(2)[:, 0].mean(dim=(1, 2))
            maps = finish_maps(residual_map(x, out.reconstruction, rule.residual), x, rule)
            scores = aggregate_scores(maps, x, rule, out.reconstruction)
            kl = kl_divergence(out.mu, out.logvar) if out.logvar is not None else None
        return ScoreResult(mode, maps, scores, out.reconstruction, out.mu, rec_err, kl)

    grad, kl, mu = kl_input_gradient(model, x)
    with torch.inference_mode():
        recon = model.decode(mu)
        rec_err = (x - recon).pow(2)[:, 0].mean(dim=(1, 2))
        kl_map = gaussian_smooth(grad, smoothing_sigma(x.shape[-1]))
        if mode == "kl":
            if scoring.brain_only:
                kl_map = torch.where(brain_mask(x, scoring.brain_erosion), kl_map, torch.zeros_like(kl_map))
            return ScoreResult(mode, kl_map, kl, recon, mu, rec_err, kl)
        if kl_gradient_scale is None or not kl_gradient_scale > 0:
            raise ValueError("The combined mode needs kl_gradient_scale from the model's calibration.")
        combined = finish_maps(kl_map / kl_gradient_scale * residual_map(x, recon, scoring.residual), x, scoring)
        return ScoreResult(mode, combined, aggregate_scores(combined, x, scoring, recon), recon, mu, rec_err, kl)


def score_in_batches(
    model: AutoEncoder,
    x: torch.Tensor,
    *,
    mode: str = "reconstruction",
    kl_gradient_scale: float | None = None,
    scoring: MapScoring = PAPER_SCORING,
    batch_size: int = 256,
) -> ScoreResult:
    """:func:`score_batch` over ``x`` ``(N, 1, S, S)`` in batches of ``batch_size`` on the model's device; the
    one scoring loop of analysis, calibration, evaluation, screening and the CLI. Returns one
    :class:`ScoreResult` with float32 CPU tensors."""
    device = next(iter(model.parameters()), next(iter(model.buffers()), torch.empty(0))).device
    parts = [
        score_batch(model, x[i: i + batch_size].to(device), mode=mode, kl_gradient_scale=kl_gradient_scale,
                    scoring=scoring)
        for i in range(0, len(x), batch_size)
    ]

    def cat(attr: str) -> torch.Tensor | None:
        vals = [getattr(p, attr) for p in parts]
        if not vals or any(v is None for v in vals):
            return None
        return torch.cat(vals).float().cpu()

    if not parts:
        empty = torch.zeros(0)
        return ScoreResult(mode, empty, empty, empty, empty, empty, None)
    return ScoreResult(mode, cat("maps"), cat("scores"), cat("reconstruction"), cat("mu"),
                       cat("reconstruction_error"), cat("kl"))
