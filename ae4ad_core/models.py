"""The reference autoencoder of AE4AD and its variational variant.

Architecture (Cai et al., MICCAI 2024, and their MedIAnomaly benchmark code), for an input of
``S x S`` pixels with ``S`` a power of two >= 16:

* encoder: ``log2(S) - 2`` blocks of ``Conv2d(k4, s2, p1, no bias) -> BatchNorm2d -> ReLU`` with channels
  1 -> 16 -> 32 -> 64 -> 64 (-> 64 ...), down to 4 x 4;
* bottleneck: flatten -> Linear -> BN1d -> ReLU -> Linear -> ``z`` (``d`` values; ``2d`` = (mu, logvar) for a
  VAE), then Linear -> BN1d -> ReLU -> Linear -> reshape;
* decoder: the mirror with ``ConvTranspose2d``; the last layer has no BN, no ReLU and no output activation.

At ``d = 16`` and 64 px the AE has 2,351,185 parameters (the reference's "about 2.35 M").
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn

from .model_config import MODEL_KINDS, ModelConfig

__all__ = [
    "ModelConfig",
    "ModelOutput",
    "AutoEncoder",
    "VariationalAutoEncoder",
    "RateDistortionAutoEncoder",
    "FactorizedDensity",
    "build_model",
    "fuse_for_inference",
    "kl_divergence",
    "MODEL_KINDS",
]

class ModelOutput(NamedTuple):
    """What a forward pass returns.

    reconstruction : (N, 1, S, S); latent : (N, d) (the sample used for decoding); mu, logvar : (N, d) for a VAE
    (``mu`` is ``latent`` and ``logvar`` is None for an AE); rate : (N,) bits per image under the learned
    entropy model (rate-distortion AE only).
    """

    reconstruction: torch.Tensor
    latent: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor | None
    rate: torch.Tensor | None = None


def _encoder_convs(chans: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 1
    for c in chans:
        layers += [nn.Conv2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        c_in = c
    return nn.Sequential(*layers)


def _decoder_convs(chans: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    rev = list(reversed(chans))  # e.g. 64, 64, 32, 16
    for i, c_in in enumerate(rev):
        last = i == len(rev) - 1
        c_out = 1 if last else rev[i + 1]
        if last:
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=True))
        else:
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    """The reference AE. ``forward(x)`` takes ``(N, 1, S, S)`` images in [-1, 1]."""

    is_variational = False

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        chans = self.config.block_channels
        flat = chans[-1] * 4 * 4
        self._flat_shape = (chans[-1], 4, 4)
        h, d = self.config.hidden, self.config.latent_dim
        out = 2 * d if self.is_variational else d
        self.encoder = _encoder_convs(chans)
        self.to_latent = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Linear(h, out)
        )
        self.from_latent = nn.Sequential(
            nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Linear(h, flat)
        )
        self.decoder = _decoder_convs(chans)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(mu, logvar)``; for an AE ``(z, None)``."""
        return self.to_latent(self.encoder(x)), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent codes ``(N, d)`` to images ``(N, 1, S, S)``."""
        h = self.from_latent(z).view(z.shape[0], *self._flat_shape)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.encode(x)
        z = mu
        return ModelOutput(self.decode(z), z, mu, logvar)


class VariationalAutoEncoder(AutoEncoder):
    """The VAE variant: the encoder's last linear layer outputs ``(mu, logvar)``; ``z = mu`` in eval mode."""

    is_variational = True

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.to_latent(self.encoder(x))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.encode(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return ModelOutput(self.decode(z), z, mu, logvar)


class FactorizedDensity(nn.Module):
    """A learned density per latent dimension: a mixture of ``k`` logistic components, used as the entropy model
    of quantised latents (as in learned image compression, Ballé et al., ICLR 2017/2018, with a simpler
    per-dimension mixture instead of their monotone-MLP CDF)."""

    def __init__(self, dim: int, components: int = 3) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.linspace(-1.0, 1.0, components).repeat(dim, 1))
        self.log_scale = nn.Parameter(torch.zeros(dim, components))
        self.logits = nn.Parameter(torch.zeros(dim, components))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit bin centred on each value of ``y`` ``(N, d)``."""
        w = torch.softmax(self.logits, dim=-1)
        scale = torch.exp(self.log_scale).clamp_min(1e-3)
        z = y.unsqueeze(-1)
        upper = torch.sigmoid((z + 0.5 - self.loc) / scale)
        lower = torch.sigmoid((z - 0.5 - self.loc) / scale)
        return ((upper - lower) * w).sum(-1).clamp_min(1e-9)


class RateDistortionAutoEncoder(AutoEncoder):
    """AE with an entropy bottleneck: latents are quantised (``round``; uniform noise while training) and a
    learned density gives their rate ``-log2 p(y)`` in bits. Trained with ``MSE + rate_weight * rate`` it
    minimises the latent entropy directly, instead of fixing a small ``d`` (AE4AD's "self-adaptive entropy
    control", left as future work in Cai et al. 2024)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__(config)
        self.density = FactorizedDensity(self.config.latent_dim)

    def quantise(self, y: torch.Tensor) -> torch.Tensor:
        if self.training:
            return y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return torch.round(y)

    def rate_bits(self, y_quantised: torch.Tensor) -> torch.Tensor:
        """Bits per image of quantised latents ``(N, d)`` under the learned density, shape ``(N,)``."""
        return -torch.log2(self.density.likelihood(y_quantised)).sum(dim=1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        y, _ = self.encode(x)
        y_q = self.quantise(y)
        return ModelOutput(self.decode(y_q), y_q, y, None, self.rate_bits(y_q))


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image, in nats: ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``. Shape (N,)."""
    return 0.5 * torch.sum(mu.pow(2) + logvar.exp() - 1.0 - logvar, dim=1)


def build_model(config: ModelConfig) -> AutoEncoder:
    """Instantiate the architecture described by ``config`` (weights freshly initialised)."""
    if config.kind == "dae":
        from .denoising import DenoisingUNet

        return DenoisingUNet(config)
    if config.kind == "intensity":
        from .baseline import IntensityBaseline

        return IntensityBaseline(config)
    if config.kind == "vae":
        return VariationalAutoEncoder(config)
    if config.kind == "rdae":
        return RateDistortionAutoEncoder(config)
    return AutoEncoder(config)


def _fuse_sequential(seq: nn.Sequential) -> nn.Sequential:
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    mods = list(seq)
    out: list[nn.Module] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if isinstance(m, nn.ConvTranspose2d):
                out.append(fuse_conv_bn_eval(m, nxt, transpose=True))
            elif isinstance(m, nn.Conv2d):
                out.append(fuse_conv_bn_eval(m, nxt))
            elif isinstance(m, nn.Linear):
                out.append(fuse_linear_bn_eval(m, nxt))
            else:  # pragma: no cover - architecture never puts BN elsewhere
                out += [m, nxt]
            i += 2
            continue
        out.append(m)
        i += 1
    return nn.Sequential(*out)


class _SubPixelConvTranspose2d(nn.Module):
    """``ConvTranspose2d(k=4, s=2, p=1)`` rewritten as one ``Conv2d(k=2, p=1)`` with ``4 * C_out`` outputs followed
    by a sub-pixel interleave (the same arithmetic, regrouped; inference only).

    Output pixel ``(2m + a, 2n + b)`` of the transposed convolution only sees the input pixels
    ``{m - 1 + a, m + a} x {n - 1 + b, n + b}`` through the kernel taps ``(3 - a - 2i, 3 - b - 2j)``, so each
    parity ``(a, b)`` is a 2 x 2 convolution; evaluating the four as one convolution (channel groups ``a, b``)
    and interleaving the results gives the same values. On CPU this runs on oneDNN's direct convolution, about
    3x faster than PyTorch's transposed convolution for the 1-channel output layer.
    """

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        w = layer.weight.detach()  # (C_in, C_out, 4, 4)
        c_in, c_out = w.shape[:2]
        taps = ((3, 1), (2, 0))  # kernel rows/cols used by even (0) and odd (1) output positions
        groups = [w[:, :, taps[a]][:, :, :, taps[b]].transpose(0, 1) for a in (0, 1) for b in (0, 1)]
        self.conv = nn.Conv2d(c_in, 4 * c_out, 2, padding=1, bias=True, device=w.device, dtype=w.dtype)
        bias = layer.bias.detach() if layer.bias is not None else w.new_zeros(c_out)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat(groups, dim=0))
            self.conv.bias.copy_(bias.repeat(4))
        self.out_channels = int(c_out)

    @staticmethod
    def applies_to(layer: nn.Module) -> bool:
        return (
            isinstance(layer, nn.ConvTranspose2d)
            and tuple(layer.kernel_size) == (4, 4)
            and tuple(layer.stride) == (2, 2)
            and tuple(layer.padding) == (1, 1)
            and tuple(layer.output_padding) == (0, 0)
            and tuple(layer.dilation) == (1, 1)
            and layer.groups == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], self.out_channels
        h, w = x.shape[-2:]
        y = self.conv(x).view(n, 2, 2, c, h + 1, w + 1)
        parity = [y[:, a, b, :, a : a + h, b : b + w] for a in (0, 1) for b in (0, 1)]
        out = torch.stack(parity, dim=-1).view(n, c, h, w, 2, 2)
        return out.permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


def fuse_for_inference(model: AutoEncoder, *, in_place: bool = False) -> AutoEncoder:
    """Return an eval-mode copy of ``model`` rearranged for fast inference; the original is not modified
    (with ``in_place=True`` the model itself is rearranged and returned: for a caller that drops the original).

    The copy computes the same function as ``model.eval()`` (up to float rounding, ~1e-6) with fewer and faster
    kernels (figures from ``benchmarks/score_latency.py``):

    * every BatchNorm is folded into the preceding conv/linear layer;
    * the output layer (a ``ConvTranspose2d`` with one output channel) is replaced by an equivalent 2 x 2
      convolution plus sub-pixel interleave (see :class:`_SubPixelConvTranspose2d`);
    * weights are stored in ``channels_last`` layout, which routes the (transposed) convolutions to oneDNN's
      NHWC kernels on CPU (inputs may be given in either layout).

    Parameters have ``requires_grad=False``; gradients with respect to the input still flow (the ``kl`` scoring
    mode needs them). With no BatchNorm left and a changed state dict, the copy cannot be trained or saved as
    a model: keep the original for that.
    """
    fused = (model if in_place else copy.deepcopy(model)).eval()
    if not isinstance(fused, AutoEncoder):  # the U-Net and the baseline: eval copy, channels-last, frozen
        fused = fused.to(memory_format=torch.channels_last)
        for p in fused.parameters():
            p.requires_grad_(False)
        return fused
    for name in ("encoder", "to_latent", "from_latent", "decoder"):
        setattr(fused, name, _fuse_sequential(getattr(fused, name)))
    layers = list(fused.decoder)
    last = layers[-1]
    if _SubPixelConvTranspose2d.applies_to(last) and last.out_channels == 1:
        fused.decoder = nn.Sequential(*layers[:-1], _SubPixelConvTranspose2d(last))
    fused = fused.to(memory_format=torch.channels_last)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


def count_parameters(model: nn.Module) -> int:
    """Number of trainable-shape parameters (BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


__all__.append("count_parameters")
