"""The denoising autoencoder of Kascenas et al. ("Denoising autoencoders for unsupervised anomaly detection in
brain MRI", MIDL 2022): a small U-Net trained to remove coarse noise from healthy slices.

Training adds noise drawn on a coarse grid (``noise_resolution`` x ``noise_resolution``) and upsampled, so it
looks like blotches the size of lesions rather than pixel noise; the network learns to map such blotches back
to healthy tissue. At inference the clean input goes in and the residual ``x - f(x)`` is the anomaly map. The
MedIAnomaly benchmark found this the strongest AE-family model on BraTS (pixel AP 75.5 on BraTS 2021).

A U-Net has skip connections, so it has no information bottleneck: the ``latent`` it reports (for the entropy
statistics every model shows) is the global average of its deepest feature map, a summary, not a code the
decoder works from. The card says so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import ModelConfig, ModelOutput

__all__ = ["DenoisingUNet", "coarse_noise"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class DenoisingUNet(nn.Module):
    """U-Net with ``len(config.channels)`` levels (channels per level from ``config.channels``), max-pool down,
    bilinear up, 1-channel linear output. ``forward(x)`` takes ``(N, 1, S, S)`` images in [-1, 1]."""

    is_variational = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        chans = list(config.channels)
        self.down = nn.ModuleList()
        c_in = 1
        for c in chans:
            self.down.append(_block(c_in, c))
            c_in = c
        self.up = nn.ModuleList()
        for c_skip in reversed(chans[:-1]):
            self.up.append(_block(c_in + c_skip, c_skip))
            c_in = c_skip
        self.head = nn.Conv2d(c_in, 1, 1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h)
            if i < len(self.down) - 1:
                skips.append(h)
                h = F.max_pool2d(h, 2)
        latent = h.mean(dim=(2, 3))
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        return ModelOutput(self.head(h), latent, latent, None)


def coarse_noise(shape: torch.Size | tuple, *, std: float, resolution: int,
                 generator: torch.Generator | None = None, device=None) -> torch.Tensor:  # fmt: skip
    """Gaussian noise of standard deviation ``std`` drawn on a ``resolution`` x ``resolution`` grid per image and
    upsampled bilinearly to ``shape`` ``(N, 1, H, W)`` (Kascenas et al. 2022's coarse noise)."""
    n, c, h, w = shape
    small = torch.randn((n, c, resolution, resolution), generator=generator) * std
    return F.interpolate(small.to(device), size=(h, w), mode="bilinear", align_corners=False)
