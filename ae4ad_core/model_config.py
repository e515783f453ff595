"""What a model's architecture is, as its card stores it: :class:`ModelConfig` (no torch needed to read a card;
the networks themselves are in :mod:`ae4ad_core.models`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import ModelCardError, look_up_option

__all__ = ["MODEL_KINDS", "ModelConfig"]

MODEL_KINDS = ("ae", "vae", "rdae", "dae", "intensity")
"""``ae``/``vae``/``rdae``: the reference AE family (this module); ``dae``: the denoising U-Net
(:mod:`ae4ad_core.denoising`); ``intensity``: the plain-intensity baseline (:mod:`ae4ad_core.baseline`)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (stored in the model card).

    Attributes
    ----------
    kind : {"ae", "vae", "rdae", "dae", "intensity"}
        ``rdae`` = rate-distortion AE: quantised latents with a learned entropy model (see
        :class:`ae4ad_core.models.RateDistortionAutoEncoder`); ``dae`` = denoising U-Net (``channels`` per level, ``latent_dim``
        = the last of them); ``intensity`` = the plain-intensity baseline (``latent_dim`` = 2).
    latent_dim : int
        ``d``, the number of latent values per image (for ``rdae`` the maximum; the rate penalty decides how
        many carry information).
    image_size : int
        Input side in pixels (power of two, >= 16).
    channels : tuple of int
        Encoder channels of the first four blocks; further blocks repeat the last.
    hidden : int
        Width of the fully-connected bottleneck layers.
    """

    kind: str = "ae"
    latent_dim: int = 16
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    hidden: int = 1024

    def __post_init__(self) -> None:
        try:
            look_up_option(self.kind, MODEL_KINDS, what="model kind")
        except ValueError as exc:
            raise ModelCardError(str(exc)) from None
        if self.latent_dim < 1:
            raise ModelCardError(f"latent_dim must be >= 1, got {self.latent_dim}.")
        s = self.image_size
        if s < 16 or s & (s - 1):
            raise ModelCardError(f"image_size must be a power of two >= 16, got {s}.")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @property
    def n_blocks(self) -> int:
        return int(math.log2(self.image_size)) - 2

    @property
    def block_channels(self) -> tuple[int, ...]:
        chans = list(self.channels[: self.n_blocks])
        while len(chans) < self.n_blocks:
            chans.append(self.channels[-1])
        return tuple(chans)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelCardError(f"Unknown architecture fields {sorted(unknown)}; known: {sorted(known)}.")
        try:
            return cls(**{k: (tuple(v) if k == "channels" else v) for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise ModelCardError(f"Invalid architecture in model card: {exc}") from None
