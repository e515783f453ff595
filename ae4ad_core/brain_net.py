"""A small 2D U-Net that outlines the brain in whole-head MR slices, trained here on synthetic heads.

The network follows the SynthStrip idea (Hoopes et al., "SynthStrip: skull-stripping for any brain image",
NeuroImage 260:119474, 2022): it never saw a real head during training, only label maps of heads whose every
tissue got a random intensity, blur, bias field, noise and slice thickness (``ae4ad_core.brain_net_training``),
so it learns the shape of the brain inside a head rather than one sequence's contrast.

Inference, one slice at a time (a volume is a stack of axial slices):

1. :func:`normalise_slices` -- per slice, intensities mapped so that the 0.5th percentile is 0 and the
   99.5th is 1, clipped to ``[0, 1]``. The training code calls this same function on every synthetic slice.
2. :func:`prepare_slices` -- each slice padded to a square (centred, zeros) and resized to
   ``config.size`` pixels (bilinear, antialiased).
3. The U-Net gives a brain probability per pixel; it is resized back onto the padded square, cropped and
   thresholded at ``config.threshold``.
4. Post-processing: holes filled slice by slice, then the largest connected component kept (3D for a
   volume, slices linked through their neighbours).

The weights (``assets/brain_extractor/model.safetensors``) load with safetensors only; ``card.json`` beside
them holds the architecture, the normalisation, the training data and the measured figures. torch is imported
inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = [
    "BrainNetConfig",
    "NET_METHOD",
    "WEIGHTS_FILE",
    "CARD_FILE",
    "brain_net_dir",
    "brain_net_available",
    "build_brain_net",
    "load_brain_net",
    "load_brain_net_card",
    "normalise_slices",
    "prepare_slices",
    "square_resize",
    "predict_brain_probability",
    "postprocess_brain_mask",
    "extract_brain_net",
]

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
NET_METHOD = "net: 2D U-Net trained on synthetic heads (SynthStrip-style, ae4ad brain_extractor)"


@dataclass(frozen=True)
class BrainNetConfig:
    """Architecture and input of the brain extraction U-Net (stored in its card).

    Attributes
    ----------
    size : int
        Side of the square input in pixels (each slice is padded to a square and resized to it).
    channels : tuple of int
        Feature maps per level, finest first; each level halves the resolution.
    threshold : float
        Probability above which a pixel is brain.
    """

    size: int = 112
    channels: tuple = (8, 16, 32, 64, 96)
    threshold: float = 0.5

    @classmethod
    def from_dict(cls, data: dict) -> BrainNetConfig:
        return cls(
            size=int(data["size"]),
            channels=tuple(int(c) for c in data["channels"]),
            threshold=float(data.get("threshold", 0.5)),
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out


def brain_net_dir() -> Path:
    """The folder holding the shipped weights and card (``<assets>/brain_extractor``)."""
    from .assets import assets_dir

    return assets_dir() / "brain_extractor"


def brain_net_available(folder: Path | None = None) -> bool:
    """True when the weights and card are there and torch and safetensors can be imported."""
    import importlib.util

    folder = Path(folder) if folder else brain_net_dir()
    files = (folder / WEIGHTS_FILE).is_file() and (folder / CARD_FILE).is_file()
    return files and all(importlib.util.find_spec(m) is not None for m in ("torch", "safetensors"))


def build_brain_net(config: BrainNetConfig):
    """A U-Net (``torch.nn.Module``): ``(N, 1, S, S)`` normalised slices -> ``(N, 1, S, S)`` brain logits.

    Each level: two 3x3 convolutions with batch normalisation and ReLU; max-pooling down, bilinear upsampling
    and concatenation with the skip connection up; a 1x1 convolution to one logit. ``S`` must be divisible by
    ``2 ** (len(channels) - 1)``.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self, channels: tuple):
            super().__init__()
            self.down = nn.ModuleList()
            c_prev = 1
            for c in channels:
                self.down.append(block(c_prev, c))
                c_prev = c
            self.up = nn.ModuleList(
                block(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(len(channels) - 1))
            )
            self.head = nn.Conv2d(channels[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, level in enumerate(self.down):
                if i:
                    x = F.max_pool2d(x, 2)
                x = level(x)
                skips.append(x)
            skips.pop()
            for level in self.up:
                skip = skips.pop()
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = level(torch.cat([x, skip], dim=1))
            return self.head(x)

    return UNet(tuple(config.channels))


def load_brain_net_card(folder: Path | None = None) -> dict:
    """The card (``card.json``) of the shipped brain extractor."""
    folder = Path(folder) if folder else brain_net_dir()
    path = folder / CARD_FILE
    if not path.is_file():
        raise DataError(
            f"No brain extractor card at {path}; retrain with `python -m ae4ad_core.brain_net_training`."
        )
    return json.loads(path.read_text())


_LOADED: dict[bytes, tuple] = {}


def load_brain_net(folder: str | None = None):
    """The U-Net in eval mode on the CPU and its :class:`BrainNetConfig` (shared: never mutate).

    Weights are read with ``safetensors`` (no unpickling). A loaded net is kept per *content* of its card and
    weights (read and hashed on every call, about 1.5 MB), so retrained weights in the same folder are picked up.
    """
    from safetensors.torch import load

    path = Path(folder) if folder else brain_net_dir()
    if not brain_net_available(path):
        raise DataError(
            f"The brain extractor weights are missing in {path} (or torch/safetensors is not installed); "
            "reinstall the package or retrain with `python -m ae4ad_core.brain_net_training`."
        )
    card, weights = (path / CARD_FILE).read_bytes(), (path / WEIGHTS_FILE).read_bytes()
    key = hashlib.blake2b(card + hashlib.blake2b(weights).digest(), digest_size=16).digest()
    if key not in _LOADED:
        config = BrainNetConfig.from_dict(json.loads(card)["config"])
        model = build_brain_net(config)
        model.load_state_dict(load(weights))
        model.eval()
        _LOADED.clear()  # one brain extractor at a time
        _LOADED[key] = (model, config)
    return _LOADED[key]


def normalise_slices(slices: np.ndarray) -> np.ndarray:
    """Per-slice intensity normalisation shared by training and inference.

    ``(N, H, W)`` (or ``(H, W)``) in any unit -> float32 of the same shape with each slice's 0.5th percentile
    at 0 and its 99.5th at 1, clipped to ``[0, 1]``; a constant slice becomes zeros. NaN and infinities
    count as 0.
    """
    x = np.nan_to_num(np.asarray(slices, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape((-1, x.shape[-2] * x.shape[-1]))
    lo, hi = np.percentile(flat, [0.5, 99.5], axis=1)
    scale = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * 2
    out = (x.reshape((-1, *x.shape[-2:])) - lo.reshape(shape).astype(np.float32)) / scale.reshape(shape)
    out[(hi <= lo)] = 0.0
    return np.clip(out, 0.0, 1.0).reshape(x.shape)


def prepare_slices(slices: np.ndarray, size: int):
    """``(N, H, W)`` raw slices -> ``(N, 1, size, size)`` float32 tensor for the network, and the padding.

    Slices are normalised by :func:`normalise_slices`, padded with zeros to a centred square of side
    ``max(H, W)`` and resized to ``size`` (bilinear with antialiasing). Returns ``(tensor, (side, top,
    left))`` for :func:`predict_brain_probability` to undo the geometry.
    """
    return square_resize(normalise_slices(slices), size)


def square_resize(slices: np.ndarray, size: int):
    """``(N, H, W)`` -> ``(N, 1, size, size)`` float32 tensor: zero-padded to a centred square, resized
    (bilinear, antialiased when shrinking). Returns ``(tensor, (side, top, left))``. The training code resizes
    its target masks with it too."""
    import torch
    from torch.nn import functional as F

    x = np.asarray(slices, dtype=np.float32)
    x = x[None] if x.ndim == 2 else x
    n, h, w = x.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.zeros((n, side, side), np.float32)
    square[:, top : top + h, left : left + w] = x
    t = torch.from_numpy(square)[:, None]
    if side != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    return t.contiguous(), (side, top, left)


def predict_brain_probability(
    slices: np.ndarray, model=None, config: BrainNetConfig | None = None, *, batch: int = 16
) -> np.ndarray:
    """Brain probability ``(N, H, W)`` float32 of raw slices ``(N, H, W)`` (or one ``(H, W)``)."""
    import torch
    from torch.nn import functional as F

    if model is None:
        model, config = load_brain_net()
    x = np.asarray(slices)
    x = x[None] if x.ndim == 2 else x
    n, h, w = x.shape
    out = np.empty((n, h, w), np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch):
            t, (side, top, left) = prepare_slices(x[start : start + batch], config.size)
            logits = model(t)
            if side != config.size:
                logits = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)
            prob = torch.sigmoid(logits)[:, 0, top : top + h, left : left + w]
            out[start : start + batch] = prob.numpy()
    return out


def postprocess_brain_mask(mask: np.ndarray) -> np.ndarray:
    """Holes filled slice by slice, then the largest connected component (3D across slices) kept: the
    classical method's own steps (:mod:`ae4ad_core.brain_extraction`)."""
    from .brain_extraction import _fill_slices, _largest_component

    return _largest_component(_fill_slices(np.asarray(mask, bool)))


def extract_brain_net(
    volume: np.ndarray,
    *,
    spacing: tuple[float, float] | None = None,
    slice_thickness: float | None = None,
    folder: str | None = None,
):
    """Brain mask of a whole-head slice ``(H, W)`` or stack ``(N, H, W)`` of axial slices from the U-Net.

    ``spacing`` and ``slice_thickness`` are recorded only: the network sees each slice padded to a square and
    resized to its input size, whatever the pixel size. Returns a
    :class:`~ae4ad_core.brain_extraction.BrainMask`.

    Raises
    ------
    DataError
        If the weights are missing or the input is not 2D/3D or is constant.
    """
    from .brain_extraction import BrainMask, head_stack

    t0 = time.perf_counter()
    v = head_stack(volume)
    model, config = load_brain_net(folder)
    prob = predict_brain_probability(v, model, config)
    mask = postprocess_brain_mask(prob > config.threshold)
    sp = [float(s) for s in (spacing or (1.0, 1.0))]
    return BrainMask(
        mask=mask,
        method=NET_METHOD,
        parameters={
            "input_size": config.size,
            "threshold": config.threshold,
            "spacing_mm": sp,
            "slice_thickness_mm": float(slice_thickness) if slice_thickness else None,
        },
        seconds=time.perf_counter() - t0,
        notes=[],
    )
