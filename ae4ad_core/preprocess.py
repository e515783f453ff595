"""The transform from image slices to model input, and back from model-space maps to image geometry.

A model's card records a :class:`PreprocessConfig`; training and inference both call
:func:`prepare_batch` (same-size batches already on a device) or :func:`prepare_slices` (arbitrary slices, with
the geometry kept to map results back), which share one implementation, so the transform a model was trained
with is replayed identically at inference.

Steps, in order:

1. intensity: ``"percentile"`` (robust scaling: the ``low``/``high`` percentiles of the slice map to -1/1) or
   ``"window"`` (a fixed ``center``/``width`` window, e.g. Hounsfield units for CT), clipped to [-1, 1];
2. optional foreground crop: the bounding box of pixels above ``foreground_threshold`` (in the [0, 1] scale of
   step 1) plus a margin;
3. pad to a square with the background value (-1), centred;
4. resize to ``size`` x ``size`` (bilinear with antialiasing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ModelCardError, look_up_option

__all__ = [
    "PreprocessConfig",
    "SliceGeometry",
    "scale_intensity",
    "prepare_batch",
    "prepare_slices",
    "restore_map",
    "restore_intensity",
]

INTENSITY_METHODS = ("percentile", "window")


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become model input (stored in the model card).

    Attributes
    ----------
    size : int
        Model input side in pixels.
    intensity : {"percentile", "window"}
    low, high : float
        Percentiles (0-100) mapped to -1 and 1 when ``intensity == "percentile"``.
    center, width : float
        Window mapped to [-1, 1] when ``intensity == "window"``.
    crop_foreground : bool
        Crop to the foreground bounding box before padding/resizing.
    foreground_threshold : float
        Foreground = scaled intensity (in [0, 1]) above this value.
    margin : float
        Extra border around the foreground box, as a fraction of its larger side.
    """

    size: int = 64
    intensity: str = "percentile"
    low: float = 0.5
    high: float = 99.5
    center: float = 40.0
    width: float = 80.0
    crop_foreground: bool = False
    foreground_threshold: float = 0.05
    margin: float = 0.05

    def __post_init__(self) -> None:
        look_up_option(self.intensity, INTENSITY_METHODS, what="intensity method")
        if not 0 <= self.low < self.high <= 100:
            raise ModelCardError(f"Percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}.")
        if self.width <= 0:
            raise ModelCardError(f"Window width must be > 0, got {self.width}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelCardError(f"Unknown preprocessing fields {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**data)


@dataclass(frozen=True)
class SliceGeometry:
    """Where a model-space image came from in its slice, to map maps back: ``crop`` box in the original
    slice (top, left, height, width) and the square ``side`` it was padded to before resizing."""

    shape: tuple[int, int]
    crop: tuple[int, int, int, int]
    side: int


def _ranks(n: int, q: float) -> int:
    """0-based nearest-rank index of percentile ``q`` among ``n`` values."""
    return min(max(int(round(q / 100.0 * (n - 1))), 0), n - 1)


_COUNTING_MIN_SPAN = 1 << 16  # integer ranges up to max(this, 4 * pixels) are counted, not partitioned
_EXACT_FLOAT32_INTEGERS = 1 << 24  # every integer of magnitude below this is exact in float32


def _integer_order_stats(row: np.ndarray, ranks: tuple[int, ...]) -> np.ndarray | None:
    """The order statistics ``ranks`` (0-based) of a 1-D float32 ``row`` by counting, when every value is an
    integer within a small range (CT Hounsfield units, MR stored values); ``None`` otherwise.

    ``bincount`` + ``cumsum`` over the range (about 0.7 ms instead of 2.5 ms for ``numpy.partition`` on a
    512 x 512 CT slice): the value of rank ``k`` is the first ``v`` whose cumulative count
    exceeds ``k``, the very element ``numpy.partition`` puts at ``k``. The result is ``min + offset``, an
    integer of magnitude below 2**24, so exactly the float32 of that element (a zero picked from a row holding
    -0.0 is left to ``numpy.partition``, whose choice between the two zeros is its own).
    """
    n = row.shape[0]
    if n == 0:
        return None
    low, high = float(row.min()), float(row.max())
    if not (-_EXACT_FLOAT32_INTEGERS < low and high < _EXACT_FLOAT32_INTEGERS):  # also refuses NaN and inf
        return None
    span = int(high - low) if high - low == int(high - low) else -1
    if span < 0 or span > max(_COUNTING_MIN_SPAN, 4 * n):
        return None
    sample = row[:: max(1, n // 1024)]
    if not np.array_equal(np.trunc(sample), sample):  # float data: refused after a few hundred values
        return None
    if not np.array_equal(np.trunc(row), row):
        return None
    # exact: integers below 2**24 in magnitude; torch's int32 bincount is faster than numpy's (which casts to intp)
    ints = torch.from_numpy(row if row.flags.writeable else row.copy()).to(torch.int32)
    ints -= int(low)
    cumulative = torch.bincount(ints, minlength=span + 1).cumsum(0).numpy()
    values = (low + np.searchsorted(cumulative, np.asarray(ranks), side="right")).astype(np.float32)
    if (values == 0).any() and np.signbit(row[row == 0]).any():
        return None  # which of +0.0 and -0.0 partition picks is its own affair: let it pick
    return values


def _percentile_pair(flat: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row percentiles ``low`` and ``high`` (nearest rank, like ``numpy.percentile(method='nearest')``) of
    ``(N, P)``. On the CPU, rows of integer values in a small range (CT, MR stored values) are counted
    (:func:`_integer_order_stats`, about 3.5x faster on 512 x 512 slices) and other rows go through one
    ``numpy.partition`` pass (several times faster than two ``kthvalue`` calls); elsewhere ``kthvalue`` runs
    on the device. All give the exact same order statistics, bit for bit."""
    n = flat.shape[1]
    k_lo, k_hi = _ranks(n, low), _ranks(n, high)
    if flat.device.type == "cpu" and not flat.requires_grad:
        rows = flat.numpy()
        out = np.empty((rows.shape[0], 2), dtype=rows.dtype)
        for i, row in enumerate(rows):
            counted = _integer_order_stats(row, (k_lo, k_hi)) if row.dtype == np.float32 else None
            if counted is None:
                part = np.partition(row, [k_lo, k_hi])
                counted = part[[k_lo, k_hi]]
            out[i] = counted
        return torch.from_numpy(out[:, 0].copy()), torch.from_numpy(out[:, 1].copy())
    return flat.kthvalue(k_lo + 1, dim=1).values, flat.kthvalue(k_hi + 1, dim=1).values


def scale_intensity(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Map intensities to [-1, 1] per image. ``images`` is ``(N, H, W)`` or ``(N, 1, H, W)``, any float dtype."""
    x = torch.nan_to_num(images.float(), nan=0.0, posinf=0.0, neginf=0.0)
    if config.intensity == "window":
        lo = torch.full((x.shape[0],), config.center - config.width / 2, device=x.device)
        hi = lo + config.width
    else:
        lo, hi = _percentile_pair(x.reshape(x.shape[0], -1), config.low, config.high)
    shape = (-1,) + (1,) * (x.ndim - 1)
    span = (hi - lo).clamp_min(1e-6).view(shape)
    unit = ((x - lo.view(shape)) / span).clamp(0.0, 1.0)
    return unit * 2.0 - 1.0


def _resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    size = (size, size) if isinstance(size, int) else size
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def prepare_batch(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Preprocess a same-size batch ``(N, 1, H, W)`` (or ``(N, H, W)``) on its device to ``(N, 1, S, S)``.

    Used by training on already-square data; without foreground cropping it is exactly what
    :func:`prepare_slices` does to each slice.
    """
    if images.ndim == 3:
        images = images[:, None]
    if config.crop_foreground or images.shape[-1] != images.shape[-2]:
        tensors, _ = prepare_slices(list(images[:, 0]), config, device=images.device)
        return tensors
    return _resize(scale_intensity(images, config), config.size)


def _foreground_box(unit: torch.Tensor, config: PreprocessConfig) -> tuple[int, int, int, int]:
    h, w = unit.shape
    fg = unit > config.foreground_threshold
    if not config.crop_foreground or not bool(fg.any()):
        return 0, 0, h, w
    rows = torch.nonzero(fg.any(dim=1)).flatten()
    cols = torch.nonzero(fg.any(dim=0)).flatten()
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    pad = int(round(config.margin * max(bottom - top, right - left)))
    top, left = max(0, top - pad), max(0, left - pad)
    bottom, right = min(h, bottom + pad), min(w, right + pad)
    return top, left, bottom - top, right - left


def prepare_slices(
    slices, config: PreprocessConfig, *, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, list[SliceGeometry]]:
    """Preprocess slices of any sizes into one model-input batch.

    Parameters
    ----------
    slices : sequence of (H, W) arrays or tensors, or an (N, H, W) array
    config : PreprocessConfig
    device : torch device for the output

    Returns
    -------
    batch : torch.Tensor
        ``(N, 1, S, S)`` float32 in [-1, 1].
    geometries : list of SliceGeometry
        One per slice, for :func:`restore_map`.
    """
    out, geoms = [], []
    for s in slices:
        t = torch.as_tensor(np.array(s, dtype=np.float32, copy=True) if not torch.is_tensor(s) else s)
        t = t.to(device=device, dtype=torch.float32)
        if t.ndim != 2:
            raise ValueError(f"Expected a 2D slice, got shape {tuple(t.shape)}.")
        scaled = scale_intensity(t[None], config)[0]
        top, left, h, w = _foreground_box((scaled + 1) / 2, config)
        crop = scaled[top: top + h, left: left + w]
        side = max(h, w)
        padded = torch.full((side, side), -1.0, device=t.device)
        oy, ox = (side - h) // 2, (side - w) // 2
        padded[oy: oy + h, ox: ox + w] = crop
        out.append(_resize(padded[None, None], config.size)[0])
        geoms.append(SliceGeometry(shape=(int(t.shape[0]), int(t.shape[1])), crop=(top, left, h, w), side=side))
    if not out:
        return torch.empty(0, 1, config.size, config.size, device=device), []
    return torch.stack(out), geoms


def restore_map(values: np.ndarray | torch.Tensor, geometry: SliceGeometry, *, fill: float = 0.0) -> np.ndarray:
    """Map a model-space map ``(S, S)`` back onto the original slice ``(H, W)`` (inverse of the resize, the
    padding and the crop); pixels outside the crop get ``fill``."""
    t = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    up = F.interpolate(t[None, None], size=(geometry.side, geometry.side), mode="bilinear",
                       align_corners=False)[0, 0]
    top, left, h, w = geometry.crop
    oy, ox = (geometry.side - h) // 2, (geometry.side - w) // 2
    out = np.full(geometry.shape, fill, dtype=np.float32)
    out[top: top + h, left: left + w] = up[oy: oy + h, ox: ox + w].numpy()
    return out


def restore_intensity(values, raw_slice, config: PreprocessConfig) -> np.ndarray:
    """Undo step 1 (the intensity scaling) on model-unit ``values`` in [-1, 1] (e.g. a reconstruction mapped
    back with :func:`restore_map`): the inverse of :func:`scale_intensity` for the slice ``raw_slice`` it came
    from, using the very same window or percentiles, so a reconstruction can be shown with the input's window."""
    if config.intensity == "window":
        lo = config.center - config.width / 2.0
        hi = lo + config.width
    else:
        raw = torch.nan_to_num(torch.as_tensor(np.asarray(raw_slice, dtype=np.float32)), nan=0.0, posinf=0.0,
                               neginf=0.0)
        lo_t, hi_t = _percentile_pair(raw.reshape(1, -1), config.low, config.high)
        lo, hi = float(lo_t[0]), float(hi_t[0])
    span = max(hi - lo, 1e-6)
    return (np.asarray(values, dtype=np.float32) + 1.0) / 2.0 * span + lo
