"""On-device, batched data augmentation for normal training slices (torch only, no per-item CPU work).

With a handful of real brains (see :mod:`ae4ad_core.demo_build`), an autoencoder memorises its training slices
unless they vary: :func:`augment_batch` draws, per sample, a random affine transform with optional left-right
flip, a smooth elastic deformation (both resampled in one ``grid_sample`` call), a smooth multiplicative bias
field, a gamma change, a Gaussian blur and additive Gaussian noise, in that order. The AE4AD reference training
used no augmentation (Cai et al., MICCAI 2024); it is on by default here because the demo set is tiny, and
``AugmentConfig(enabled=False)`` reproduces the paper's setting.

Every random number comes from one ``torch.Generator`` (on the images' device or on the CPU), drawn in a fixed
order whatever the probabilities, so a batch is augmented identically for the same generator state.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from ae4ad_core.errors import look_up_option

__all__ = ["AugmentConfig", "augment_batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of :func:`augment_batch`; sizes are fractions of the image side unless stated.

    Attributes
    ----------
    enabled : bool, default True
        ``False`` returns the batch unchanged (the AE4AD paper's setting).
    p : float, default 0.8
        Probability that a sample is augmented at all; the other samples pass through unchanged.
    rotation_deg : float, default 12.0
        Rotation drawn uniformly in ``[-rotation_deg, rotation_deg]`` degrees.
    scale : tuple of float, default (0.9, 1.1)
        Isotropic zoom factor range (> 1 enlarges the anatomy).
    translate : float, default 0.06
        Shift drawn uniformly in ``[-translate, translate]`` of the image side, per axis.
    flip : bool, default True
        Mirror left-right with probability 0.5 (brains are roughly symmetric).
    elastic_alpha : float, default 0.015
        Standard deviation of the elastic displacement at the control points, as a fraction of the image side
        (about 2 px at 128 px).
    elastic_sigma : float, default 0.125
        Spacing of the elastic control points as a fraction of the image side (0.125: an 8 x 8 grid, upsampled
        bicubically, so the field is smooth at the scale of gyri, not of pixels).
    elastic_p : float, default 0.5
        Probability of the elastic deformation for an augmented sample.
    bias_field : float, default 0.3
        Largest amplitude of the log of a smooth multiplicative bias field (a 3 x 3 grid upsampled
        bicubically): 0.3 means gains between about 0.74 and 1.35, like MRI coil inhomogeneity.
    gamma : tuple of float, default (0.7, 1.5)
        Range of the gamma exponent, drawn log-uniformly; ``x -> x ** gamma`` keeps 0 and 1 fixed.
    noise_std : float, default 0.03
        Largest standard deviation of additive Gaussian noise (intensity units, images in [0, 1]); the
        standard deviation is drawn uniformly in ``[0, noise_std]``. Noise is added on the foreground only
        (the brain mask when given, else pixels above 0.02), so the background stays 0.
    blur_sigma : tuple of float, default (0.0, 1.0)
        Range of the Gaussian blur standard deviation, in pixels.
    intensity_p : float, default 0.5
        Probability of each intensity transform (bias field, gamma, blur, noise), independently, for an
        augmented sample.
    """

    enabled: bool = True
    p: float = 0.8
    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.06
    flip: bool = True
    elastic_alpha: float = 0.015
    elastic_sigma: float = 0.125
    elastic_p: float = 0.5
    bias_field: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_std: float = 0.03
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    intensity_p: float = 0.5

    def __post_init__(self) -> None:
        for name in ("p", "elastic_p", "intensity_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {value!r}.")
        for name in ("rotation_deg", "translate", "elastic_alpha", "bias_field", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)!r}.")
        if not 0.0 < self.elastic_sigma <= 1.0:
            raise ValueError(f"AugmentConfig.elastic_sigma must be in (0, 1], got {self.elastic_sigma!r}.")
        for name, minimum in (("scale", 1e-6), ("gamma", 1e-6), ("blur_sigma", 0.0)):
            low, high = getattr(self, name)
            if not minimum <= low <= high:
                raise ValueError(
                    f"AugmentConfig.{name} must be (low, high) with {minimum} <= low <= high, got {(low, high)!r}."
                )

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``ValueError`` naming the valid ones."""
        names = [f.name for f in fields(cls)]
        for key in data:
            look_up_option(key, names, what="augmentation setting")
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**values)


def augment_batch(
    images: torch.Tensor,
    *,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    brain: torch.Tensor | None = None,
) -> torch.Tensor:
    """Randomly augment a batch of slices, each sample independently.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` floating-point images in [0, 1] (``C`` is 1 for the demo), on any device.
    config : AugmentConfig
        What to draw (see its attributes).
    generator : torch.Generator, optional
        Source of randomness; it may live on the images' device or on the CPU (numbers are then drawn on the
        CPU and moved). Without one, the default generator of the images' device is used.
    brain : torch.Tensor, optional
        ``(N, 1, H, W)`` foreground masks; warped with the images and used to confine the noise. Without it
        the foreground is ``image > 0.02`` after the spatial transform.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``images``, values clipped to [0, 1].

    Raises
    ------
    ValueError
        If ``images`` is not a 4D floating-point tensor or ``brain`` does not match it.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"augment_batch needs a (N, C, H, W) float tensor, got {tuple(images.shape)} {images.dtype}."
        )
    if not config.enabled or images.shape[0] == 0:
        return images
    count, _, height, width = images.shape
    device = images.device
    if brain is not None and (brain.shape[0] != count or brain.shape[-2:] != images.shape[-2:]):
        raise ValueError(f"brain must be (N, 1, H, W) like the images; got {tuple(brain.shape)}.")
    draw_device = generator.device if generator is not None else device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=draw_device).to(device)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=draw_device).to(device)

    # Draw the per-sample parameters first, in a fixed order, so the result depends only on the generator.
    chosen = uniform(count) < config.p
    angle_draw, scale_draw, shift_draw, flip_draw = (
        uniform(count),
        uniform(count),
        uniform(count, 2),
        uniform(count),
    )
    elastic_gate = uniform(count) < config.elastic_p
    gates = uniform(4, count) < config.intensity_p  # bias, gamma, blur, noise
    bias_amplitude, gamma_draw, blur_draw, noise_level = uniform(4, count)
    grid_side = max(2, int(round(1.0 / config.elastic_sigma)))
    elastic_draw = normal(count, 2, grid_side, grid_side)
    bias_draw = uniform(count, 1, 3, 3)

    x = images.float()
    gate = chosen[:, None, None, None]

    # Spatial: affine (+ flip) and elastic displacement in one sampling grid, one resampling.
    if (
        config.rotation_deg > 0
        or config.scale != (1.0, 1.0)
        or config.translate > 0
        or config.flip
        or config.elastic_alpha > 0
    ):
        angle = torch.deg2rad((2.0 * angle_draw - 1.0) * config.rotation_deg)
        low, high = config.scale
        zoom = low + (high - low) * scale_draw
        shift = (2.0 * shift_draw - 1.0) * (2.0 * config.translate)  # grid units: 2 per image side
        mirror = torch.where((flip_draw < 0.5) & config.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        aspect = width / height
        theta = torch.stack(
            [
                torch.stack([cos * mirror, -sin / aspect, shift[:, 0]], dim=1),
                torch.stack([sin * aspect * mirror, cos, shift[:, 1]], dim=1),
            ],
            dim=1,
        )  # (N, 2, 3): output grid coordinates -> input grid coordinates
        elastic = elastic_draw * ((2.0 * config.elastic_alpha) * elastic_gate.float())[:, None, None, None]
        grid = _sampling_grid(theta, elastic, height, width)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = torch.where(gate, warped, x)
        if brain is not None:
            mask = brain.float().to(device)
            moved = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            brain = torch.where(gate, moved, mask)
    foreground = x > 0.02 if brain is None else brain > 0.5

    # Intensity: bias field, gamma, blur, noise; each with probability intensity_p.
    bias_on, gamma_on, blur_on, noise_on = (row & chosen for row in gates)
    if config.bias_field > 0 and bool(bias_on.any()):
        amplitude = config.bias_field * bias_amplitude * bias_on.float()
        gain = torch.exp(amplitude[:, None, None, None] * (2.0 * bias_draw - 1.0))  # exactly 1 where off
        x = x * _upsample_cubic(gain, height, width)
    x = x.clamp(0.0, 1.0)
    gamma_index = torch.nonzero(gamma_on).flatten()
    if len(gamma_index):
        low, high = config.gamma
        exponent = torch.exp(math.log(low) + (math.log(high) - math.log(low)) * gamma_draw[gamma_index])
        x = x.index_copy(0, gamma_index, x[gamma_index] ** exponent[:, None, None, None])
    low, high = config.blur_sigma
    blur_index = torch.nonzero(blur_on).flatten()
    if high > 0 and len(blur_index):
        sigma = low + (high - low) * blur_draw[blur_index]
        blurred = _gaussian_blur(x[blur_index], sigma, radius=int(math.ceil(3.0 * high)))
        x = x.index_copy(0, blur_index, blurred)
    noise_index = torch.nonzero(noise_on).flatten()
    if config.noise_std > 0 and len(noise_index):
        level = config.noise_std * noise_level[noise_index]
        noise = normal(
            len(noise_index), x.shape[1], height, width
        )  # drawn last: its size depends on the gates
        x = x.index_add(0, noise_index, level[:, None, None, None] * noise * foreground[noise_index])
    return x.clamp(0.0, 1.0).to(images.dtype)


def _keys_weights(distance: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel with a = -0.5 (reproduces polynomials up to degree 2 exactly)."""
    a = -0.5
    near = ((a + 2) * distance - (a + 3)) * distance**2 + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    return torch.where(distance <= 1, near, torch.where(distance < 2, far, torch.zeros_like(distance)))


@functools.lru_cache(maxsize=64)
def _cached_matrix(points: int, size: int, device: str, extended: bool) -> torch.Tensor:
    return _build_interpolation_matrix(points, size, device=torch.device(device), extended=extended)


def _interpolation_matrix(points: int, size: int, *, device: torch.device, extended: bool) -> torch.Tensor:
    """Cached :func:`_build_interpolation_matrix` (read-only: never modify the returned tensor)."""
    return _cached_matrix(points, size, str(device), extended)


def _build_interpolation_matrix(
    points: int, size: int, *, device: torch.device, extended: bool
) -> torch.Tensor:
    """``(size, points)`` cubic interpolation weights from ``points`` control points to ``size`` pixels.

    Without ``extended``, the control points span the pixel centres (``align_corners=True`` semantics, edge
    indices clamped). With ``extended``, one more control point lies beyond each end, so every pixel has its
    four neighbours and linear functions are reproduced exactly (used to fold the affine map into the grid).
    """
    inner = points - 2 if extended else points
    position = torch.linspace(0.0, inner - 1.0, size, device=device, dtype=torch.float32)
    if extended:
        position = position + 1.0
    base = torch.floor(position).clamp(max=points - 2)
    fraction = position - base
    matrix = torch.zeros(size, points, device=device, dtype=torch.float32)
    rows = torch.arange(size, device=device)
    for offset in (-1, 0, 1, 2):
        columns = (base + offset).clamp(0, points - 1).long()
        matrix.index_put_((rows, columns), _keys_weights((fraction - offset).abs()), accumulate=True)
    return matrix


def _upsample_cubic(coarse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic upsampling of ``(N, C, g, g)`` to ``(N, C, height, width)`` as two small matrix products."""
    rows = _interpolation_matrix(coarse.shape[-2], height, device=coarse.device, extended=False)
    columns = _interpolation_matrix(coarse.shape[-1], width, device=coarse.device, extended=False)
    return rows @ coarse @ columns.T


def _sampling_grid(theta: torch.Tensor, elastic: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, H, W, 2)`` grid for ``grid_sample``: affine map ``theta`` plus a smooth elastic displacement.

    Both live on a coarse control grid (the affine part evaluated exactly there) that is upsampled once with a
    kernel that reproduces linear maps, so the affine part is exact and only one full-size grid is written.
    """
    count, _, points, _ = elastic.shape
    points_ext = points + 2
    rows = _interpolation_matrix(points_ext, height, device=theta.device, extended=True)
    columns = _interpolation_matrix(points_ext, width, device=theta.device, extended=True)

    # Normalised coordinates (align_corners=False) of the control points, including the two outer ones.
    def control(size: int) -> torch.Tensor:
        first, last = -1.0 + 1.0 / size, 1.0 - 1.0 / size
        step = (last - first) / (points - 1)
        return first + step * torch.arange(-1, points + 1, device=theta.device, dtype=torch.float32)

    cy, cx = control(height), control(width)
    base = torch.stack(
        [
            cx[None, :].expand(points_ext, points_ext),
            cy[:, None].expand(points_ext, points_ext),
            torch.ones(points_ext, points_ext, device=theta.device),
        ],
        dim=-1,
    )  # (P, P, 3)
    coarse = torch.einsum("pqk,nck->ncpq", base, theta)  # (N, 2, P, P)
    coarse = coarse + F.pad(elastic, (1, 1, 1, 1), mode="replicate")
    # (P, P) -> (H, W) per channel by two small matrix products; grid_sample accepts the permuted view.
    return (rows @ coarse @ columns.T).permute(0, 2, 3, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, *, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one standard deviation per sample (0 = unchanged), grouped convolution."""
    count, channels, height, width = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    safe = sigma.clamp_min(1e-3)[:, None]
    kernel = torch.exp(-(offsets[None, :] ** 2) / (2.0 * safe**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (N*C, K)
    flat = x.reshape(1, count * channels, height, width)
    flat = F.conv2d(flat, kernel[:, None, :, None], padding=(radius, 0), groups=count * channels)
    flat = F.conv2d(flat, kernel[:, None, None, :], padding=(0, radius), groups=count * channels)
    return flat.reshape(count, channels, height, width)
