"""The NumPy preprocessing (:func:`ae4ad_core.preprocess.prepare_arrays`) resizes as torch's antialiased
bilinear ``interpolate`` does, so the models trained when the resize was torch's see the same inputs, and
:func:`prepare_slices` is the same batch as a tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ae4ad_core.preprocess import PreprocessConfig, _resize, prepare_arrays, prepare_slices, scale_intensity


@pytest.mark.parametrize("shape", [(512, 512), (240, 240), (100, 37), (30, 50), (65, 63), (64, 64), (1000, 700)])
@pytest.mark.parametrize("size", [64, 128])
def test_resize_matches_torch_antialiased_bilinear(shape, size):
    image = np.random.default_rng(sum(shape)).normal(0, 1, shape).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(image)[None, None], size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)[0, 0].numpy()
    got = _resize(image, size)
    assert got.shape == (size, size) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_a_constant_image_stays_constant_and_the_weights_sum_to_one():
    for shape in [(512, 512), (17, 90)]:
        np.testing.assert_allclose(_resize(np.full(shape, 0.25, np.float32), 64), 0.25, atol=1e-6)


@pytest.mark.parametrize("config", [PreprocessConfig(), PreprocessConfig(intensity="window", center=40, width=400),
                                    PreprocessConfig(crop_foreground=True, size=32)])
def test_prepare_slices_is_prepare_arrays_as_a_tensor(config):
    rng = np.random.default_rng(0)
    slices = [rng.integers(0, 4000, (80, 60)).astype(np.int16), rng.normal(100, 30, (64, 64)).astype(np.float32)]
    slices[0][:20] = 0
    arrays, geoms_a = prepare_arrays(slices, config)
    tensors, geoms_t = prepare_slices([torch.from_numpy(s) for s in slices], config)
    assert np.array_equal(tensors.numpy(), arrays) and geoms_a == geoms_t
    assert arrays.shape == (2, 1, config.size, config.size) and arrays.min() >= -1 and arrays.max() <= 1
    # the first step is scale_intensity, bit for bit
    square = prepare_arrays([slices[1]], PreprocessConfig(size=64))[0][0, 0]
    assert np.array_equal(square, scale_intensity(slices[1][None], PreprocessConfig(size=64))[0])
