"""Latent entropy estimators against closed forms, the spectrum, and the surprisal statistics of the card."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ae4ad_core.entropy import (
    NATS_PER_BIT,
    LatentStatistics,
    effective_dimension,
    fit_latent_statistics,
    latent_entropy_gaussian,
    latent_entropy_knn,
    variance_spectrum,
)


def _gaussian(d: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Samples of N(0, cov) with a random full covariance; returns (z, cov, true entropy in nats)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + 0.5 * np.eye(d)
    true = 0.5 * (d * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1])
    return rng.multivariate_normal(np.zeros(d), cov, size=n), cov, float(true)


@pytest.mark.parametrize(("d", "tol"), [(1, 0.03), (4, 0.05), (16, 0.25)])
def test_gaussian_estimator_matches_the_closed_form(d, tol):
    z, _, true = _gaussian(d, 3000, seed=d)
    assert latent_entropy_gaussian(z) == pytest.approx(true, abs=tol)


def test_gaussian_estimator_of_a_known_isotropic_gaussian_in_bits():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, size=(20000, 3))
    true = 1.5 * math.log(2 * math.pi * math.e * 4.0)  # 0.5 log det(2 pi e sigma^2 I_3)
    assert latent_entropy_gaussian(z) == pytest.approx(true, abs=0.02)
    assert true / NATS_PER_BIT == pytest.approx(true / math.log(2))


@pytest.mark.parametrize(("d", "tol"), [(1, 0.05), (4, 0.15), (16, 1.2)])
def test_knn_estimator_is_close_to_the_truth_for_3000_samples(d, tol):
    # Kozachenko-Leonenko is consistent but biased upwards in high dimension at fixed N: tolerance grows with d
    z, _, true = _gaussian(d, 3000, seed=10 + d)
    assert latent_entropy_knn(z, k=3) == pytest.approx(true, abs=tol)


def test_knn_estimator_tracks_a_scale_change_exactly():
    z, _, _ = _gaussian(4, 1000, seed=3)
    # H(aZ) = H(Z) + d log a for every estimator that is scale-equivariant, as KL is
    assert latent_entropy_knn(3.0 * z) - latent_entropy_knn(z) == pytest.approx(4 * math.log(3.0), abs=1e-9)


def test_effective_dimension_is_d_for_isotropic_and_1_for_rank_one():
    assert effective_dimension(np.ones(7)) == pytest.approx(7.0)
    rng = np.random.default_rng(1)
    iso = rng.normal(size=(5000, 8))
    assert effective_dimension(variance_spectrum(iso)) == pytest.approx(8.0, rel=0.05)
    direction = rng.normal(size=8)
    rank_one = rng.normal(size=(500, 1)) * direction
    spectrum = variance_spectrum(rank_one)
    assert spectrum[0] == pytest.approx(np.var(rank_one @ direction / np.linalg.norm(direction), ddof=1))
    assert effective_dimension(spectrum) == pytest.approx(1.0, abs=1e-6)
    assert effective_dimension(np.zeros(3)) == 0.0


def test_variance_spectrum_is_sorted_and_non_negative():
    z, cov, _ = _gaussian(5, 20000, seed=4)
    s = variance_spectrum(z)
    assert np.all(np.diff(s) <= 0) and np.all(s >= 0)
    np.testing.assert_allclose(s, np.sort(np.linalg.eigvalsh(cov))[::-1], rtol=0.1)


def test_estimators_refuse_a_single_code():
    with pytest.raises(ValueError, match="N >= 2"):
        latent_entropy_gaussian(np.zeros((1, 3)))


@pytest.fixture(scope="module")
def stats() -> LatentStatistics:
    rng = np.random.default_rng(5)
    z = rng.normal(size=(800, 4)) * np.array([2.0, 1.0, 0.5, 0.25]) + np.array([1.0, -1.0, 0.0, 3.0])
    return fit_latent_statistics(z, kl=rng.uniform(1, 2, 800), max_points=100)


def test_surprisal_is_lowest_at_the_centre_and_percentiles_follow(stats):
    centre = stats.mean
    far = stats.mean + np.array([20.0, 0.0, 0.0, 0.0])
    s_centre, s_far = stats.surprisal(np.stack([centre, far]))
    assert s_centre == pytest.approx(0.5 * (stats.logdet + 4 * math.log(2 * math.pi)))
    assert s_centre < stats.normal_surprisal.min() < s_far
    assert stats.percentile(s_centre)[0] < 1.0
    assert stats.percentile(s_far)[0] == pytest.approx(100.0)
    median = np.median(stats.normal_surprisal)
    assert stats.percentile(median)[0] == pytest.approx(50.0, abs=1.0)


def test_projection_and_summary(stats):
    assert stats.pca_points.shape == (100, 2)
    assert stats.project(stats.mean).shape == (1, 2)
    np.testing.assert_allclose(stats.project(stats.mean), 0.0, atol=1e-12)
    # first principal axis = the widest latent dimension
    assert abs(stats.pca_components[0, 0]) == pytest.approx(1.0, abs=0.05)
    summary = stats.summary()
    assert summary["entropy_gaussian_bits"] == pytest.approx(summary["entropy_gaussian_nats"] / math.log(2))
    assert summary["latent_dim"] == 4 and summary["n_images"] == 800
    assert 1.0 <= summary["effective_dim"] <= 4.0
    assert summary["mean_kl_nats"] == pytest.approx(1.5, abs=0.05)


def test_latent_statistics_round_trip_through_json(stats):
    data = json.loads(json.dumps(stats.to_dict()))
    back = LatentStatistics.from_dict(data)
    for key, value in stats.__dict__.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(back, key), value)
        else:
            assert getattr(back, key) == value
    z = np.random.default_rng(6).normal(size=(5, 4))
    np.testing.assert_array_equal(back.surprisal(z), stats.surprisal(z))
