"""Scoring modes (Zimmerer et al. 2019): KL-gradient maps against finite differences, the combined map's
definition, batch independence, no autograd for reconstruction, mode errors, smoothing, fused == unfused."""

from __future__ import annotations

import copy

import pytest
import torch

from ae4ad_core.errors import UnsupportedModeError
from ae4ad_core.models import ModelConfig, build_model, fuse_for_inference, kl_divergence
from ae4ad_core.registry import load_model
from ae4ad_core.scoring import (
    SCORING_MODES,
    check_mode,
    gaussian_smooth,
    kl_input_gradient,
    modes_for,
    score_batch,
    smoothing_sigma,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _inputs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    body = (xx**2 + yy**2 < 0.7).float()
    return (body * 1.4 - 1.0 + 0.2 * torch.rand(n, 1, size, size, generator=g)).clamp(-1, 1)


def _kl_of(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        mu, logvar = model.encode(x)
        return kl_divergence(mu, logvar)


@pytest.mark.parametrize("which", ["model", "inference"])
def test_kl_gradient_matches_central_finite_differences(vae, which):
    model = copy.deepcopy(getattr(vae, which)).double().eval()
    x = _inputs(1).double()
    grad, kl, _ = kl_input_gradient(model, x)
    assert grad.dtype == torch.float64 and grad.shape == (1, 32, 32)
    torch.testing.assert_close(kl, _kl_of(model, x))
    eps = 1e-4
    pixels = [tuple(int(v) for v in divmod(int(grad[0].argmax()), 32)), (16, 16), (10, 21), (25, 7), (3, 3)]
    scale = float(grad.max())
    assert scale > 0
    for i, j in pixels:
        up, down = x.clone(), x.clone()
        up[0, 0, i, j] += eps
        down[0, 0, i, j] -= eps
        fd = (_kl_of(model, up) - _kl_of(model, down)) / (2 * eps)
        torch.testing.assert_close(grad[0, i, j], fd.abs()[0], rtol=1e-3, atol=1e-6 * scale)


def test_combined_is_smoothed_kl_over_scale_times_reconstruction_map(vae):
    model, x, scale = vae.inference, _inputs(3), 0.0123
    kl = score_batch(model, x, mode="kl")
    rec = score_batch(model, x, mode="reconstruction")
    comb = score_batch(model, x, mode="combined", kl_gradient_scale=scale)
    own_rec_map = (x - comb.reconstruction).pow(2)[:, 0]
    assert torch.equal(comb.maps, kl.maps / scale * own_rec_map)
    torch.testing.assert_close(comb.maps, kl.maps / scale * rec.maps, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(comb.scores, comb.maps.mean(dim=(1, 2)))
    torch.testing.assert_close(kl.scores, kl.kl)
    torch.testing.assert_close(rec.scores, rec.maps.mean(dim=(1, 2)))


def test_kl_map_is_the_smoothed_absolute_gradient(vae):
    x = _inputs(2)
    grad, _, _ = kl_input_gradient(vae.inference, x)
    res = score_batch(vae.inference, x, mode="kl")
    torch.testing.assert_close(res.maps, gaussian_smooth(grad, smoothing_sigma(32)))
    assert bool((grad >= 0).all())


@pytest.mark.parametrize("mode", SCORING_MODES)
def test_batch_and_single_image_results_agree(vae, mode):
    x = _inputs(5, seed=3)
    batch = score_batch(vae.inference, x, mode=mode, kl_gradient_scale=0.05)
    for i in range(len(x)):
        single = score_batch(vae.inference, x[i : i + 1], mode=mode, kl_gradient_scale=0.05)
        torch.testing.assert_close(single.maps[0], batch.maps[i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(single.scores[0], batch.scores[i], atol=1e-5, rtol=1e-4)


def test_reconstruction_mode_builds_no_autograd_graph(vae):
    x = _inputs(2).requires_grad_(False)
    res = score_batch(vae.inference, x, mode="reconstruction")
    for t in (res.maps, res.scores, res.reconstruction, res.mu, res.kl):
        assert t.is_inference() and t.grad_fn is None and not t.requires_grad
    assert not any(p.requires_grad for p in vae.inference.parameters())


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_kl_modes_work_inside_the_callers_no_grad_blocks(vae, context):
    x = _inputs(2)
    ref = score_batch(vae.inference, x, mode="combined", kl_gradient_scale=0.05)
    with context():
        res = score_batch(vae.inference, x, mode="combined", kl_gradient_scale=0.05)
    assert float(res.maps.abs().sum()) > 0
    torch.testing.assert_close(res.maps, ref.maps)
    assert res.maps.grad_fn is None


@pytest.mark.parametrize("mode", ["kl", "combined"])
def test_autoencoder_refuses_kl_modes_naming_the_mode(ae, mode):
    assert modes_for(ae.inference)[mode] is not None
    with pytest.raises(UnsupportedModeError, match=f"Mode '{mode}' is not available.*VAE"):
        score_batch(ae.inference, _inputs(1), mode=mode)


def test_unknown_mode_lists_the_valid_modes(vae):
    with pytest.raises(ValueError, match="reconstruction, kl, combined.*Did you mean 'combined'"):
        check_mode(vae.inference, "combind")


def test_combined_needs_a_kl_gradient_scale(vae):
    with pytest.raises(ValueError, match="kl_gradient_scale"):
        score_batch(vae.inference, _inputs(1), mode="combined")


def test_training_mode_model_is_refused():
    model = build_model(ModelConfig(kind="ae", image_size=32, hidden=32)).train()
    with pytest.raises(ValueError, match="eval mode"):
        score_batch(model, _inputs(1))


def test_gaussian_smoothing_keeps_constants_and_mass():
    const = torch.full((2, 40, 40), 0.37)
    torch.testing.assert_close(gaussian_smooth(const, 3.0), const)
    delta = torch.zeros(1, 64, 64)
    delta[0, 32, 32] = 1.0
    out = gaussian_smooth(delta, smoothing_sigma(64))
    assert abs(float(out.sum()) - 1.0) < 1e-6
    rows, cols = torch.nonzero(out[0] > 0, as_tuple=True)
    support = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
    assert support == (7, 7)  # kernel 7 at sigma 3, as in Zimmerer et al.
    assert int(out[0].argmax()) == 32 * 64 + 32
    four_d = gaussian_smooth(delta[:, None], 3.0)
    torch.testing.assert_close(four_d[:, 0], out)


def test_smoothing_sigma_scales_with_the_image_side():
    assert smoothing_sigma(64) == 3.0
    assert smoothing_sigma(128) == 6.0
    assert smoothing_sigma(32) == 1.5


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_fused_model_equals_the_unfused_eval_model(kind, tiny_ae_dir, tiny_vae_dir):
    loaded = load_model(tiny_vae_dir if kind == "vae" else tiny_ae_dir, device="cpu")
    x = _inputs(4, seed=5)
    with torch.no_grad():
        ref, fused = loaded.model(x), loaded.inference(x)
    torch.testing.assert_close(fused.reconstruction, ref.reconstruction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.mu, ref.mu, atol=1e-5, rtol=1e-5)
    modes = [m for m, reason in modes_for(loaded.model).items() if reason is None]
    assert modes == (list(SCORING_MODES) if kind == "vae" else ["reconstruction", "mse"])
    for mode in modes:
        a = score_batch(loaded.model, x, mode=mode, kl_gradient_scale=0.05)
        b = score_batch(loaded.inference, x, mode=mode, kl_gradient_scale=0.05)
        torch.testing.assert_close(b.maps, a.maps, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.scores, a.scores, atol=1e-5, rtol=1e-4)


def test_fused_model_at_reference_size_equals_unfused_with_trained_batchnorm():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", latent_dim=16, image_size=64))
    model.train()
    with torch.no_grad():  # move BatchNorm statistics away from their initial values
        for _ in range(3):
            model(torch.rand(16, 1, 64, 64) * 2 - 1)
    model.eval()
    fused = fuse_for_inference(model)
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    for mode in SCORING_MODES:
        a = score_batch(model, x, mode=mode, kl_gradient_scale=1e-4)
        b = score_batch(fused, x, mode=mode, kl_gradient_scale=1e-4)
        torch.testing.assert_close(b.reconstruction, a.reconstruction, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.maps, a.maps, atol=1e-5, rtol=1e-4)
