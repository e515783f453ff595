"""Training and inference feed a model the very same tensor for the same slice (one transform)."""

import numpy as np
import pytest
import torch

import ae4ad_core.training as training
from ae4ad_core.augment import AugmentConfig
from ae4ad_core.preprocess import PreprocessConfig, prepare_slices
from ae4ad_core.training import TrainConfig, model_inputs, train, training_batch

CONFIGS = {
    "percentile": PreprocessConfig(size=32),
    "window (CT)": PreprocessConfig(size=32, intensity="window", center=40.0, width=400.0),
}


def _slices(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    disc = ((yy - 24) ** 2 + (xx - 24) ** 2 < 18**2).astype(np.float32)
    return np.stack([disc * rng.uniform(-100, 300) + rng.normal(0, 20, (48, 48)) for _ in range(n)]).astype(np.float32)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_inputs_are_the_inference_transform(name):
    prep = CONFIGS[name]
    images = _slices()
    expected, _ = prepare_slices(list(images), prep)
    assert torch.equal(model_inputs(images, prep), expected)
    assert torch.equal(training_batch(expected, AugmentConfig(enabled=False), None), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_batches_training_feeds_the_model_equal_inference_inputs(name, monkeypatch):
    prep = CONFIGS[name]
    images = _slices(8, seed=3)
    seen: list[torch.Tensor] = []
    real_loss = training._loss

    def spy(model, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return real_loss(model, x, *args, **kwargs)

    monkeypatch.setattr(training, "_loss", spy)
    config = TrainConfig(kind="ae", latent_dim=2, image_size=32, epochs=1, batch_size=8, augment=False)
    train(config, images, preprocessing=prep, device="cpu", progress=False)
    expected, _ = prepare_slices(list(images), prep)
    (batch,) = seen
    # the batch is a permutation of the inference inputs: match rows exactly
    key = lambda t: sorted(t.reshape(len(t), -1).sum(1).tolist())  # noqa: E731
    assert key(batch) == key(expected)
    for row in batch:
        assert any(torch.equal(row, e) for e in expected)
    if prep.intensity == "window":  # the old double scaling squeezed CT inputs into a sliver near -1
        assert float(batch.max()) > 0.0


def test_augmented_batches_stay_in_model_space():
    x, _ = prepare_slices(list(_slices()), CONFIGS["percentile"])
    out = training_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x)
