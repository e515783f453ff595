"""The reference architecture (AE4AD benchmark code, Cai et al. 2024): size, shapes, VAE behaviour, config
validation, and the inference rewrite of :func:`fuse_for_inference`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ae4ad_core.errors import ModelCardError
from ae4ad_core.models import (
    ModelConfig,
    build_model,
    count_parameters,
    fuse_for_inference,
    kl_divergence,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_reference_autoencoder_has_2_35_million_parameters():
    n = count_parameters(build_model(ModelConfig(kind="ae", latent_dim=16, image_size=64)))
    assert n == 2_351_185  # counted from the authors' layer list: convs, 2x2 linears 1024x1024, BN affine
    assert abs(n - 2.35e6) / 2.35e6 < 0.01  # "about 2.35 M" (Cai et al. 2024 benchmark code)


def test_vae_doubles_only_the_last_encoder_linear():
    ae = count_parameters(build_model(ModelConfig(kind="ae", latent_dim=16)))
    vae = count_parameters(build_model(ModelConfig(kind="vae", latent_dim=16)))
    assert vae - ae == 1024 * 16 + 16


@pytest.mark.parametrize("kind", ["ae", "vae", "rdae"])
@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("d", [1, 16, 128])
def test_output_shapes(kind, size, d):
    model = build_model(ModelConfig(kind=kind, latent_dim=d, image_size=size, hidden=64)).eval()
    x = torch.rand(2, 1, size, size) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.reconstruction.shape == (2, 1, size, size)
    assert out.latent.shape == out.mu.shape == (2, d)
    if kind == "vae":
        assert out.logvar.shape == (2, d)
    else:
        assert out.logvar is None
    if kind == "rdae":
        assert out.rate.shape == (2,)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.encoder)
    assert n_convs == {32: 3, 64: 4, 128: 5}[size]  # 4 x 4 at the bottleneck


def test_vae_decodes_mu_in_eval_and_a_sample_in_training():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", latent_dim=8, image_size=32, hidden=64))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    model.eval()
    with torch.no_grad():
        out = model(x)
        again = model(x)
    assert torch.equal(out.latent, out.mu)
    assert torch.equal(out.reconstruction, again.reconstruction)
    model.train()
    with torch.no_grad():
        train_out = model(x)
    assert not torch.allclose(train_out.latent, train_out.mu)


def test_kl_divergence_closed_form():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    expected = torch.tensor([0.0, 0.5 * (1.0 + (4.0 + torch.e - 1.0 - 1.0))])
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


@pytest.mark.parametrize("size", [8, 48, 100, 0])
def test_config_rejects_sizes_that_are_not_powers_of_two_from_16(size):
    with pytest.raises(ModelCardError, match="power of two"):
        ModelConfig(image_size=size)


def test_config_rejects_unknown_kinds_suggesting_the_closest():
    with pytest.raises(ValueError, match="Unknown model kind 'vea'.*Did you mean 'vae'"):
        ModelConfig(kind="vea")


def test_config_rejects_unknown_fields_and_bad_latent_sizes():
    with pytest.raises(ModelCardError, match="Unknown architecture fields.*'dropout'"):
        ModelConfig.from_dict({"kind": "ae", "dropout": 0.1})
    with pytest.raises(ModelCardError, match="latent_dim"):
        ModelConfig(latent_dim=0)


def test_config_round_trips_through_a_dict():
    cfg = ModelConfig(kind="vae", latent_dim=8, image_size=128, channels=(8, 16, 32, 32), hidden=256)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.block_channels == (8, 16, 32, 32, 32)


def _trained_bn(model: nn.Module, size: int) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 1, size, size) * 2 - 1)
    return model.eval()


@pytest.mark.parametrize("kind", ["ae", "vae", "rdae"])
@pytest.mark.parametrize("size", [32, 128])
def test_fuse_for_inference_keeps_the_function_and_leaves_the_original_alone(kind, size):
    torch.manual_seed(1)
    model = _trained_bn(build_model(ModelConfig(kind=kind, latent_dim=8, image_size=size, hidden=128)), size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    x = torch.rand(3, 1, size, size) * 2 - 1
    with torch.no_grad():
        ref, out = model(x), fused(x)
    torch.testing.assert_close(out.reconstruction, ref.reconstruction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mu, ref.mu, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in fused.modules())
    assert not any(p.requires_grad for p in fused.parameters())
    assert not fused.training and model.training is False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", ["ae", "vae", "rdae", "dae", "intensity"])
def test_fusing_in_place_gives_the_copys_function(kind):
    """``in_place=True`` (the loader's choice when the trainable model is not kept) rearranges the model itself
    and computes bit for bit what the fused copy computes."""
    torch.manual_seed(3)
    size = 32
    config = ModelConfig(kind=kind, latent_dim=8, image_size=size, hidden=64, channels=(4, 8, 16))
    model = _trained_bn(build_model(config), size)
    copied = fuse_for_inference(model)
    fused = fuse_for_inference(model, in_place=True)
    assert fused is model
    x = torch.rand(3, 1, size, size) * 2 - 1
    with torch.no_grad():
        a, b = copied(x), fused(x)
    for u, v in zip(a, b, strict=True):
        assert (u is None and v is None) or torch.equal(u, v)


@pytest.mark.parametrize(
    ("c_in", "c_out", "side", "bias"), [(16, 1, 32, True), (8, 3, 5, False), (4, 2, 1, True)]
)
def test_sub_pixel_rewrite_equals_the_transposed_convolution(c_in, c_out, side, bias):
    from ae4ad_core.models import _SubPixelConvTranspose2d

    torch.manual_seed(2)
    layer = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias).double()
    rewritten = _SubPixelConvTranspose2d(layer)
    assert rewritten.conv.weight.dtype == torch.float64
    x = torch.randn(2, c_in, side, side + 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), layer(x), atol=1e-12, rtol=1e-12)
    assert _SubPixelConvTranspose2d.applies_to(layer)
    assert not _SubPixelConvTranspose2d.applies_to(nn.ConvTranspose2d(4, 1, 3, 2, 1))
