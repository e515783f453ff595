"""The counting fast path of the percentile scaling gives bit-identical results to ``numpy.partition``.

Training and inference share :func:`ae4ad_core.preprocess.scale_intensity`, so a model must see exactly the
same inputs whichever path computed the percentiles.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ae4ad_core.preprocess import (
    PreprocessConfig,
    _integer_order_stats,
    _percentile_pair,
    _ranks,
    restore_intensity,
    scale_intensity,
)


def _reference_pair(flat: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """The implementation before the fast path: one ``numpy.partition`` pass over each row."""
    n = flat.shape[1]
    k_lo, k_hi = _ranks(n, low), _ranks(n, high)
    part = np.partition(flat, [k_lo, k_hi], axis=1)
    return part[:, k_lo].copy(), part[:, k_hi].copy()


def _reference_scale(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """The scaling as torch computed it before preprocessing moved to NumPy (same IEEE operations)."""
    x = torch.nan_to_num(images.float(), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (torch.from_numpy(v) for v in _reference_pair(x.reshape(x.shape[0], -1).numpy(), config.low,
                                                             config.high))
    shape = (-1,) + (1,) * (x.ndim - 1)
    span = (hi - lo).clamp_min(1e-6).view(shape)
    return ((x - lo.view(shape)) / span).clamp(0.0, 1.0) * 2.0 - 1.0


def _bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).view(np.uint32)


def _slices(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ct = np.clip(rng.normal(40, 300, (3, 96, 80)), -1024, 3071).round()
    mr = np.where(rng.random((2, 64, 64)) < 0.4, 0, rng.integers(0, 4096, (2, 64, 64)))  # many background zeros
    return {
        "ct": ct.astype(np.float32),
        "mr": mr.astype(np.float32),
        "uint16 full range": rng.integers(0, 65536, (2, 128, 128)).astype(np.float32),
        "wide int range (falls back)": rng.integers(-(10**7), 10**7, (2, 32, 32)).astype(np.float32),
        "beyond 2**24 (falls back)": (rng.integers(0, 1000, (1, 32, 32)) * 64 + 2**25).astype(np.float32),
        "constant": np.full((2, 16, 16), 7.0, np.float32),
        "float": rng.normal(0, 1, (3, 96, 80)).astype(np.float32),
        "float, a few non-integers": np.where(
            rng.random((2, 64, 64)) < 0.001, 0.5, rng.integers(0, 100, (2, 64, 64))
        ).astype(np.float32),
        "halves": (rng.integers(0, 400, (2, 64, 64)) / 2).astype(np.float32),
        "negative zeros": np.where(rng.random((2, 64, 64)) < 0.5, -0.0, rng.integers(0, 9, (2, 64, 64))).astype(
            np.float32
        ),
        "one pixel": np.array([[[3.0]]], np.float32),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("low, high", [(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (2.5, 97.5)])
def test_percentiles_and_scaling_are_bit_identical(seed, low, high):
    config = PreprocessConfig(low=low, high=high)
    for kind, slices in _slices(seed).items():
        images = torch.from_numpy(slices)
        flat = np.nan_to_num(slices).reshape(len(slices), -1)
        for new, old in zip(_percentile_pair(flat, low, high), _reference_pair(flat, low, high), strict=True):
            assert np.array_equal(_bits(new), _bits(old)), kind
        assert np.array_equal(_bits(scale_intensity(images, config)), _bits(_reference_scale(images, config))), kind
        restored = restore_intensity(np.zeros((4, 4), np.float32), slices[0], config)
        lo, hi = _reference_pair(flat[:1], low, high)
        span = max(float(hi[0]) - float(lo[0]), 1e-6)
        assert np.array_equal(restored, (np.zeros((4, 4), np.float32) + 1.0) / 2.0 * span + float(lo[0])), kind


def test_a_batch_mixing_integer_and_float_slices():
    rng = np.random.default_rng(5)
    batch = np.stack(
        [rng.integers(-1024, 3000, (64, 64)), rng.normal(0, 50, (64, 64)), rng.integers(0, 255, (64, 64))]
    ).astype(np.float32)
    config = PreprocessConfig()
    images = torch.from_numpy(batch)[:, None]  # (N, 1, H, W)
    assert np.array_equal(_bits(scale_intensity(images, config)), _bits(_reference_scale(images, config)))


def test_the_fast_path_takes_integer_slices_and_only_them():
    rng = np.random.default_rng(3)
    ints = rng.integers(-1024, 3071, 512 * 512).astype(np.float32)
    assert _integer_order_stats(ints, (10, 1000)) is not None
    assert _integer_order_stats(ints + 0.25, (10, 1000)) is None
    assert _integer_order_stats(np.array([1.0, np.inf], np.float32), (0, 1)) is None
    assert _integer_order_stats(np.array([1.0, np.nan], np.float32), (0, 1)) is None


def test_float64_rows_keep_the_general_path_and_their_dtype():
    lo, hi = _percentile_pair(np.array([[3.0, 1.0, 2.0, 5.0]]), 0.0, 100.0)
    assert lo.dtype == np.float64 and float(lo[0]) == 1.0 and float(hi[0]) == 5.0
