"""Synthetic lesions for 2D brain slices, with exact pixel masks.

The kinds follow the synthetic anomalies of the MOOD challenge (Zimmerer et al., MICCAI 2020-2023):
blobs of uniform intensity shift, added noise, sink/source deformation, plus a
simple tumour model (dark core, bright rim, oedema halo) close to what brain-tumour sets such as BraTS show.

Every lesion is confined to its mask: pixels outside the returned mask are bit-for-bit unchanged, and the mask
lies inside the brain mask. Sizes are given as fractions of the image side, so a lesion looks the same at any
resolution; at 128 x 128 the radii are roughly easy 9-14 px, medium 6-9 px and hard 3.5-6 px, and they
shrink where the brain is too thin to hold them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ae4ad_core.errors import DataError, look_up_option

__all__ = ["LESION_KINDS", "DIFFICULTIES", "add_lesion"]

LESION_KINDS: tuple[str, ...] = ("hyperintense", "hypointense", "noise", "deformation", "tumour")
"""The lesion kinds :func:`add_lesion` can draw."""

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
"""Difficulty levels: larger and higher-contrast lesions are easier to detect."""


@dataclass(frozen=True)
class _Level:
    """Size and strength ranges of one difficulty level.

    ``radius`` is a fraction of the image side; ``contrast`` is an intensity shift on the [0, 1] scale (for
    ``noise`` the standard deviation of the added noise); ``displacement`` is the peak displacement of a
    deformation as a fraction of its radius.
    """

    radius: tuple[float, float]
    contrast: tuple[float, float]
    noise_std: tuple[float, float]
    displacement: tuple[float, float]


_LEVELS: dict[str, _Level] = {
    "easy": _Level(
        radius=(0.07, 0.11), contrast=(0.40, 0.55), noise_std=(0.22, 0.30), displacement=(0.35, 0.45)
    ),
    "medium": _Level(
        radius=(0.045, 0.07), contrast=(0.22, 0.35), noise_std=(0.13, 0.20), displacement=(0.25, 0.32)
    ),
    "hard": _Level(
        radius=(0.027, 0.045), contrast=(0.10, 0.18), noise_std=(0.06, 0.11), displacement=(0.16, 0.22)
    ),
}

_MASK_LEVEL = 0.25  # soft-weight level above which a pixel belongs to a lesion's mask
_MIN_MASK_PIXELS = 4
_ATTEMPTS = 12


def add_lesion(
    image: np.ndarray,
    brain: np.ndarray,
    *,
    kind: str,
    rng: np.random.Generator,
    difficulty: str = "medium",
) -> tuple[np.ndarray, np.ndarray]:
    """Add one synthetic lesion at a random position inside the brain.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` slice with intensities in [0, 1] (background 0).
    brain : numpy.ndarray
        ``(H, W)`` brain mask (non-zero inside). The lesion and its mask stay inside it.
    kind : str
        One of :data:`LESION_KINDS`:

        - ``"hyperintense"`` / ``"hypointense"``: an irregular blob (an ellipse whose border is perturbed by
          smoothed noise) with a soft edge, shifted up / down in intensity;
        - ``"noise"``: Gaussian noise added inside an irregular blob;
        - ``"deformation"``: a local sink or source warp (pixels pulled toward or pushed away from a centre);
          the mask is where the displacement exceeds ``max(0.5 px, 20 % of its peak)``, holes filled;
        - ``"tumour"``: a dark (necrotic) core, a bright enhancing rim and a mildly dark oedema halo, as in a
          contrast-enhanced T1 scan; the mask is the whole tumour (core + rim + halo), like the BraTS "whole
          tumour" label.
    rng : numpy.random.Generator
        Source of randomness (position, size, shape, strength); the result is deterministic given its state.
    difficulty : str, default "medium"
        One of :data:`DIFFICULTIES`; scales size and contrast (see the module docstring).

    Returns
    -------
    lesioned : numpy.ndarray
        ``(H, W)`` float32 copy of ``image`` with the lesion, clipped to [0, 1].
    mask : numpy.ndarray
        ``(H, W)`` uint8 mask, 1 on the lesion. Pixels where ``lesioned`` differs from ``image`` all have
        ``mask == 1``; the mask is non-empty and inside ``brain``.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or ``difficulty`` (the message lists the valid names).
    DataError
        If the image is not 2D, the shapes differ, or the brain mask is too small to hold a lesion.
    """
    kind = look_up_option(kind, LESION_KINDS, what="lesion kind")
    difficulty = look_up_option(difficulty, DIFFICULTIES, what="difficulty")
    image = np.asarray(image, dtype=np.float32)
    brain = np.asarray(brain).astype(bool)
    if image.ndim != 2 or image.shape != brain.shape:
        raise DataError(
            f"add_lesion needs a 2D image and a brain mask of the same shape; got {image.shape} and "
            f"{brain.shape}. Pass one (H, W) slice at a time."
        )
    if int(brain.sum()) < 16:
        raise DataError(
            f"The brain mask has {int(brain.sum())} pixels; at least 16 are needed to place a lesion. "
            "Skip slices with (almost) no brain."
        )
    level = _LEVELS[difficulty]
    distance = ndimage.distance_transform_edt(brain)
    for _ in range(_ATTEMPTS):
        lesioned, mask = _draw(image, brain, distance, kind=kind, level=level, rng=rng)
        if int(mask.sum()) >= _MIN_MASK_PIXELS:
            return lesioned, mask
    raise DataError(
        f"Could not place a {difficulty} {kind!r} lesion in this slice after {_ATTEMPTS} attempts "
        f"(brain area {int(brain.sum())} px); use a slice with more brain."
    )


def _draw(
    image: np.ndarray,
    brain: np.ndarray,
    distance: np.ndarray,
    *,
    kind: str,
    level: _Level,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    side = float(min(image.shape))
    radius = rng.uniform(*level.radius) * side
    if kind == "deformation":
        radius *= 1.5  # a warp needs room around the structure it moves
    if kind == "tumour":
        radius *= 1.3  # the halo makes a tumour larger than a plain blob
    # The lesion must fit inside the brain: shrink it on thin slices.
    radius = float(min(radius, 0.9 * distance.max()))
    radius = max(radius, 1.5)
    centre = _pick_centre(image, brain, distance, radius=radius, kind=kind, rng=rng)
    if kind == "deformation":
        changed, mask = _deformation(image, centre, radius, level=level, rng=rng)
    elif kind == "tumour":
        changed, mask = _tumour(image, centre, radius, level=level, rng=rng)
    else:
        weight = _soft_blob(image.shape, centre, radius, rng=rng)
        mask = weight > _MASK_LEVEL
        if kind == "hyperintense":
            texture = 1.0 + 0.15 * _smooth_noise(image.shape, sigma=max(1.0, radius / 3.0), rng=rng)
            changed = image + rng.uniform(*level.contrast) * weight * texture
        elif kind == "hypointense":
            texture = 1.0 + 0.15 * _smooth_noise(image.shape, sigma=max(1.0, radius / 3.0), rng=rng)
            changed = image - rng.uniform(*level.contrast) * weight * texture
        else:  # noise
            noise = ndimage.gaussian_filter(rng.standard_normal(image.shape), sigma=0.6)
            noise /= max(float(noise.std()), 1e-6)
            changed = image + rng.uniform(*level.noise_std) * np.clip(weight * 1.5, 0.0, 1.0) * noise
    mask = mask & brain
    changed = np.clip(changed, 0.0, 1.0).astype(np.float32)
    lesioned = np.where(mask, changed, image).astype(np.float32)
    return lesioned, mask.astype(np.uint8)


def _pick_centre(
    image: np.ndarray,
    brain: np.ndarray,
    distance: np.ndarray,
    *,
    radius: float,
    kind: str,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """A random brain pixel far enough from the brain's edge, preferring tissue the lesion shows up on."""
    inside = distance >= min(radius + 1.0, distance.max())
    local_mean = ndimage.uniform_filter(image, size=max(3, int(radius)))
    preference = np.ones_like(image, dtype=bool)
    if kind in ("hypointense", "tumour"):
        preference = local_mean > 0.35  # darkening needs bright tissue, not ventricles
    elif kind == "hyperintense":
        preference = local_mean < 0.85  # brightening needs room below 1
    elif kind == "deformation":
        gradient = ndimage.gaussian_gradient_magnitude(image, sigma=1.5)
        energy = ndimage.uniform_filter(gradient, size=max(3, int(radius)))
        threshold = np.quantile(energy[inside], 0.5) if inside.any() else 0.0
        preference = energy >= threshold  # a warp of flat tissue would be invisible
    candidates = inside & preference
    if not candidates.any():
        candidates = inside if inside.any() else brain
    rows, cols = np.nonzero(candidates)
    pick = int(rng.integers(len(rows)))
    return float(rows[pick]), float(cols[pick])


def _smooth_noise(shape: tuple[int, ...], *, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma)
    return noise / max(float(noise.std()), 1e-6)


def _irregular_region(
    shape: tuple[int, ...], centre: tuple[float, float], radius: float, *, rng: np.random.Generator
) -> np.ndarray:
    """A connected blob: an ellipse of mean radius ``radius`` whose border is perturbed by smooth noise."""
    rows, cols = np.indices(shape, dtype=np.float64)
    angle = rng.uniform(0.0, np.pi)
    elongation = rng.uniform(0.7, 1.0)
    axis_a = radius / np.sqrt(elongation)
    axis_b = radius * np.sqrt(elongation)
    dy, dx = rows - centre[0], cols - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    ellipse = np.sqrt((u / axis_a) ** 2 + (v / axis_b) ** 2)
    perturbation = _smooth_noise(shape, sigma=max(1.0, radius / 2.5), rng=rng)
    region = ellipse + 0.25 * perturbation < 1.0
    centre_pixel = (int(round(centre[0])), int(round(centre[1])))
    region[centre_pixel] = True
    labels, _ = ndimage.label(region)
    return labels == labels[centre_pixel]


def _soft_blob(
    shape: tuple[int, ...], centre: tuple[float, float], radius: float, *, rng: np.random.Generator
) -> np.ndarray:
    """Soft weight in [0, 1]: an irregular region with a Gaussian-blurred border."""
    region = _irregular_region(shape, centre, radius, rng=rng).astype(np.float64)
    return ndimage.gaussian_filter(region, sigma=max(0.7, 0.15 * radius))


def _deformation(
    image: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    *,
    level: _Level,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Radial sink/source warp with compact support (zero displacement beyond ``radius``)."""
    rows, cols = np.indices(image.shape, dtype=np.float64)
    dy, dx = rows - centre[0], cols - centre[1]
    r = np.hypot(dy, dx)
    t = np.clip(r / radius, 0.0, 1.0)
    profile = t * (1.0 - t**2) ** 2  # 0 at the centre and at the border, peak at t = 1/sqrt(5)
    profile /= (1.0 / np.sqrt(5.0)) * (1.0 - 0.2) ** 2
    peak = rng.uniform(*level.displacement) * radius
    sign = 1.0 if rng.random() < 0.5 else -1.0  # +1 source (pushes outward), -1 sink (pulls inward)
    magnitude = sign * peak * profile
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_y = np.where(r > 0, dy / r, 0.0)
        unit_x = np.where(r > 0, dx / r, 0.0)
    warped = ndimage.map_coordinates(
        image, [rows - magnitude * unit_y, cols - magnitude * unit_x], order=1, mode="nearest"
    )
    mask = np.abs(magnitude) > max(0.5, 0.2 * peak)
    mask = ndimage.binary_fill_holes(mask)
    return warped, mask


def _tumour(
    image: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    *,
    level: _Level,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Dark core, bright rim and a dark oedema halo; returns the image and the whole-tumour mask."""
    contrast = rng.uniform(*level.contrast)
    halo = _soft_blob(image.shape, centre, radius, rng=rng)
    core_radius = max(1.0, radius * rng.uniform(0.35, 0.5))
    core_region = _irregular_region(image.shape, centre, core_radius, rng=rng)
    rim_width = max(1, int(round(core_radius * 0.35)))
    rim_region = ndimage.binary_dilation(core_region, iterations=rim_width) & ~core_region
    core = ndimage.gaussian_filter(core_region.astype(np.float64), sigma=0.7)
    rim = ndimage.gaussian_filter(rim_region.astype(np.float64), sigma=0.7)
    changed = image - 0.5 * contrast * halo  # oedema: mildly hypointense on T1
    changed = changed + 1.2 * contrast * rim  # enhancing rim
    changed = changed * (1.0 - 0.8 * core) + 0.8 * core * 0.08  # necrotic core, nearly dark
    mask = (halo > _MASK_LEVEL) | ndimage.binary_dilation(core_region | rim_region)
    return changed, mask
