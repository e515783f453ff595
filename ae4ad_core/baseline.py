"""The plain-intensity baseline as a model: the anomaly map is the standardised intensity itself.

Meissen et al. ("Challenging current semi-supervised anomaly segmentation methods for brain MRI", MICCAI
BrainLes 2021) found that thresholding the FLAIR intensity matches or beats many unsupervised models on BraTS.
Every table, picker and evaluation lists this model beside the autoencoders so anyone sees at once whether an
autoencoder beats it on their data.

As a "model" its reconstruction is one constant, ``level``: the median model-space brain intensity of the
normal training slices (fitted by :meth:`IntensityBaseline.fit`). The residual ``x - level`` is then the
intensity relative to normal brain, and the card's map scoring (positive residual, smoothing, brain only, a
high quantile per slice) applies exactly as to an autoencoder; it is calibrated on normal slices like every
model. Its ``latent`` is two numbers per slice, the mean brain intensity and the brain's share of the image,
so the latent statistics the app shows describe what this baseline "sees".
"""

from __future__ import annotations

import torch
from torch import nn

from .models import ModelConfig, ModelOutput
from .postprocess import BRAIN_LEVEL

__all__ = ["IntensityBaseline"]


class IntensityBaseline(nn.Module):
    """``forward(x)`` returns a constant reconstruction ``level`` and a 2-value latent (see the module)."""

    is_variational = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("level", torch.zeros(()))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> IntensityBaseline:
        """Set ``level`` to the median brain value of normal model-space slices ``x`` ``(N, 1, S, S)``."""
        vals = x[x > BRAIN_LEVEL]
        self.level.fill_(float(vals.median()) if vals.numel() else 0.0)
        return self

    def forward(self, x: torch.Tensor) -> ModelOutput:
        brain = (x[:, 0] > BRAIN_LEVEL).float()
        share = brain.mean(dim=(1, 2))
        mean = (x[:, 0] * brain).sum(dim=(1, 2)) / brain.sum(dim=(1, 2)).clamp_min(1.0)
        latent = torch.stack([mean, share], dim=1)
        return ModelOutput(self.level.expand_as(x).to(x.dtype), latent, latent, None)
