"""On-device batched augmentation: deterministic, shape/device/dtype preserving, background kept at 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ae4ad_core.augment import AugmentConfig, augment_batch
from ae4ad_core.data import load_demo


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    train = load_demo().train
    index = np.linspace(0, len(train) - 1, 16).astype(int)
    return torch.from_numpy(train.images[index].copy())[:, None]


@pytest.fixture(scope="module")
def brain() -> torch.Tensor:
    train = load_demo().train
    index = np.linspace(0, len(train) - 1, 16).astype(int)
    return torch.from_numpy(train.brain[index].astype(np.float32))[:, None]


def test_same_seed_same_result_other_seed_other_result(batch):
    config = AugmentConfig()
    first = augment_batch(batch, config=config, generator=torch.Generator().manual_seed(3))
    second = augment_batch(batch, config=config, generator=torch.Generator().manual_seed(3))
    third = augment_batch(batch, config=config, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_shape_dtype_device_and_range_are_preserved(batch):
    for dtype in (torch.float32, torch.float64, torch.float16):
        images = batch.to(dtype)
        out = augment_batch(images, config=AugmentConfig(p=1.0), generator=torch.Generator().manual_seed(0))
        assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
        assert torch.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_input_is_not_modified(batch):
    before = batch.clone()
    augment_batch(batch, config=AugmentConfig(p=1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(batch, before)


def test_disabled_or_zero_probability_returns_the_batch_unchanged(batch):
    assert augment_batch(batch, config=AugmentConfig(enabled=False)) is batch
    out = augment_batch(batch, config=AugmentConfig(p=0.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, batch)


def test_every_sample_changes_when_always_on(batch):
    out = augment_batch(batch, config=AugmentConfig(p=1.0), generator=torch.Generator().manual_seed(1))
    changed = (out - batch).abs().flatten(1).amax(dim=1) > 1e-4
    assert bool(changed.all())


def test_background_stays_near_zero(batch):
    out = augment_batch(batch, config=AugmentConfig(p=1.0), generator=torch.Generator().manual_seed(2))
    assert float(out[batch == 0].mean()) < 0.05
    intensity_only = AugmentConfig(p=1.0, rotation_deg=0.0, scale=(1.0, 1.0), translate=0.0, flip=False,
                                   elastic_alpha=0.0, blur_sigma=(0.0, 0.0), intensity_p=1.0)  # fmt: skip
    out = augment_batch(batch, config=intensity_only, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out[batch == 0], batch[batch == 0])  # bias, gamma and noise keep 0 at 0


def test_noise_stays_inside_the_given_brain_mask(batch, brain):
    config = AugmentConfig(p=1.0, rotation_deg=0.0, scale=(1.0, 1.0), translate=0.0, flip=False, elastic_alpha=0.0,
                           bias_field=0.0, gamma=(1.0, 1.0), blur_sigma=(0.0, 0.0), noise_std=0.2, intensity_p=1.0)  # fmt: skip
    out = augment_batch(batch, config=config, generator=torch.Generator().manual_seed(0), brain=brain)
    assert torch.equal(out[brain == 0], batch[brain == 0])
    assert float((out - batch)[brain == 1].abs().mean()) > 0.02


def test_flip_only_mirrors_left_right():
    images = torch.zeros(8, 1, 16, 16)
    images[:, :, 4:12, 2:5] = 0.8
    config = AugmentConfig(p=1.0, rotation_deg=0.0, scale=(1.0, 1.0), translate=0.0, elastic_alpha=0.0,
                           bias_field=0.0, gamma=(1.0, 1.0), blur_sigma=(0.0, 0.0), noise_std=0.0)  # fmt: skip
    out = augment_batch(images, config=config, generator=torch.Generator().manual_seed(0))
    for sample in out:
        assert torch.allclose(sample, images[0], atol=1e-5) or torch.allclose(
            sample, images[0].flip(-1), atol=1e-5
        )
    assert any(torch.allclose(s, images[0].flip(-1), atol=1e-5) for s in out)


def test_non_square_images_are_supported():
    images = torch.rand(4, 1, 32, 48)
    out = augment_batch(images, config=AugmentConfig(p=1.0), generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and torch.isfinite(out).all()


def test_config_round_trips_and_validates():
    config = AugmentConfig(rotation_deg=5.0, scale=(0.95, 1.05))
    data = config.to_dict()
    assert data["scale"] == [0.95, 1.05]
    assert AugmentConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="Did you mean 'rotation_deg'"):
        AugmentConfig.from_dict({"rotation_degs": 3.0})
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(p=1.5)
    with pytest.raises(ValueError, match="gamma"):
        AugmentConfig(gamma=(1.5, 0.7))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="N, C, H, W"):
        augment_batch(torch.rand(4, 16, 16), config=AugmentConfig())
    with pytest.raises(ValueError, match="brain"):
        augment_batch(torch.rand(4, 1, 16, 16), config=AugmentConfig(), brain=torch.ones(3, 1, 16, 16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_with_cpu_or_cuda_generator(batch):
    images = batch.cuda()
    config = AugmentConfig()
    for make in (
        lambda: torch.Generator().manual_seed(5),
        lambda: torch.Generator(device="cuda").manual_seed(5),
    ):
        first = augment_batch(images, config=config, generator=make())
        second = augment_batch(images, config=config, generator=make())
        assert first.device == images.device and torch.equal(first, second)
        assert torch.isfinite(first).all()
    cpu = augment_batch(batch, config=config, generator=torch.Generator().manual_seed(5))
    from_cpu_generator = augment_batch(images, config=config, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(cpu, from_cpu_generator.cpu(), atol=1e-4)
