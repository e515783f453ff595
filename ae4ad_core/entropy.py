"""Latent-space statistics: how much information a model's latent codes of normal images carry.

AE4AD (Cai et al., MICCAI 2024) argues that an autoencoder detects anomalies well when the entropy of its latent
vectors is minimal while normal images are still reconstructed; the paper never measures it. These estimators do,
from the latent codes ``Z`` ``(N, d)`` of a set of normal images. All entropies are differential entropies in
**nats** (divide by ``ln 2`` for bits). Differential entropy depends on the scale of the codes, so compare models
with the same architecture family and read it together with the effective dimension, which is scale-free.

* :func:`latent_entropy_gaussian` -- ``0.5 * log det(2 * pi * e * Sigma)`` with a Ledoit-Wolf shrunk covariance
  (an upper bound on the true entropy for a given covariance).
* :func:`latent_entropy_knn` -- the Kozachenko-Leonenko k-nearest-neighbour estimator (non-parametric).
* :func:`variance_spectrum`, :func:`effective_dimension` -- eigenvalues of the covariance and their
  participation ratio ``(sum l)^2 / sum l^2``.
* :class:`LatentStatistics` -- a Gaussian fit of normal latents for the surprisal ``-log p(z)`` of a new image
  and its percentile among normal images, plus a 2D PCA projection for plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "latent_entropy_gaussian",
    "latent_entropy_knn",
    "variance_spectrum",
    "effective_dimension",
    "LatentStatistics",
    "fit_latent_statistics",
    "NATS_PER_BIT",
]

NATS_PER_BIT = math.log(2.0)


def _as_codes(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"Expected latent codes of shape (N >= 2, d), got {z.shape}.")
    return z


def _shrunk_covariance(z: np.ndarray) -> np.ndarray:
    from sklearn.covariance import LedoitWolf

    if z.shape[1] == 1:
        return np.atleast_2d(np.var(z, axis=0, ddof=1))
    return LedoitWolf().fit(z).covariance_


def latent_entropy_gaussian(z) -> float:
    """Gaussian entropy estimate ``0.5 * log det(2 pi e Sigma)`` of codes ``z`` ``(N, d)``, in nats."""
    z = _as_codes(z)
    cov = _shrunk_covariance(z)
    d = cov.shape[0]
    sign, logdet = np.linalg.slogdet(cov + 1e-12 * np.eye(d))
    if sign <= 0:
        return float("-inf")
    return float(0.5 * (d * math.log(2 * math.pi * math.e) + logdet))


def latent_entropy_knn(z, *, k: int = 3) -> float:
    """Kozachenko-Leonenko estimate of the differential entropy of ``z`` ``(N, d)``, in nats.

    ``H = psi(N) - psi(k) + log V_d + (d / N) * sum_i log eps_i`` where ``eps_i`` is the Euclidean distance from
    ``z_i`` to its k-th nearest neighbour and ``V_d`` the volume of the unit d-ball (Kozachenko & Leonenko 1987;
    Kraskov et al. 2004, eq. 20).
    """
    from scipy.special import digamma, gammaln  # here, not at import: scoring never needs scipy
    from sklearn.neighbors import NearestNeighbors

    z = _as_codes(z)
    n, d = z.shape
    k = int(min(max(1, k), n - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    eps = np.maximum(dist[:, k], 1e-12)
    log_vd = (d / 2) * math.log(math.pi) - gammaln(d / 2 + 1)
    return float(digamma(n) - digamma(k) + log_vd + d * np.mean(np.log(eps)))


def variance_spectrum(z) -> np.ndarray:
    """Eigenvalues of the sample covariance of ``z``, largest first, shape ``(d,)``."""
    z = _as_codes(z)
    if z.shape[1] == 1:
        return np.array([float(np.var(z, ddof=1))])
    vals = np.linalg.eigvalsh(np.cov(z, rowvar=False))
    return np.clip(vals[::-1], 0.0, None)


def effective_dimension(spectrum) -> float:
    """Participation ratio ``(sum l)^2 / sum l^2`` of a variance spectrum: between 1 and d, scale-free."""
    s = np.asarray(spectrum, dtype=np.float64)
    denom = float(np.sum(s**2))
    return float(np.sum(s) ** 2 / denom) if denom > 0 else 0.0


@dataclass(frozen=True)
class LatentStatistics:
    """Statistics of normal latent codes, stored in the model card.

    Attributes
    ----------
    n : number of normal images used
    dim : latent size d
    entropy_gaussian_nats, entropy_knn_nats : entropy estimates (nats)
    spectrum : variance spectrum, largest first
    effective_dim : participation ratio of the spectrum
    mean, precision, logdet : Gaussian fit (shrunk covariance) for surprisal
    normal_surprisal : sorted surprisals (nats) of the normal images, for percentiles
    pca_mean, pca_components : 2D projection (``(z - mean) @ components.T``)
    pca_points : projected normal codes ``(M, 2)`` (a subsample), for plots
    mean_kl_nats : mean KL rate of a VAE on normal images, else None
    mean_rate_bits : mean rate of a rate-distortion AE's quantised latents on normal images (bits), else None
    """

    n: int
    dim: int
    entropy_gaussian_nats: float
    entropy_knn_nats: float
    spectrum: np.ndarray
    effective_dim: float
    mean: np.ndarray
    precision: np.ndarray
    logdet: float
    normal_surprisal: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    pca_points: np.ndarray
    mean_kl_nats: float | None = None
    mean_rate_bits: float | None = None

    def surprisal(self, z) -> np.ndarray:
        """Negative log-density ``-log N(z; mean, Sigma)`` of codes ``z`` ``(M, d)`` in nats, shape ``(M,)``."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        diff = z - self.mean
        maha = np.einsum("ij,jk,ik->i", diff, self.precision, diff)
        return 0.5 * (maha + self.logdet + self.dim * math.log(2 * math.pi))

    def percentile(self, surprisal) -> np.ndarray:
        """Percent (0-100) of normal images whose surprisal is <= the given value(s)."""
        s = np.atleast_1d(np.asarray(surprisal, dtype=np.float64))
        return 100.0 * np.searchsorted(self.normal_surprisal, s, side="right") / len(self.normal_surprisal)

    def project(self, z) -> np.ndarray:
        """2D PCA coordinates ``(M, 2)`` of codes ``z``."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        return (z - self.pca_mean) @ self.pca_components.T

    def summary(self) -> dict:
        """The headline numbers, JSON-ready (nats and bits)."""
        out = {
            "n_images": self.n,
            "latent_dim": self.dim,
            "entropy_gaussian_nats": self.entropy_gaussian_nats,
            "entropy_gaussian_bits": self.entropy_gaussian_nats / NATS_PER_BIT,
            "entropy_knn_nats": self.entropy_knn_nats,
            "entropy_knn_bits": self.entropy_knn_nats / NATS_PER_BIT,
            "effective_dim": self.effective_dim,
        }
        if self.mean_kl_nats is not None:
            out["mean_kl_nats"] = self.mean_kl_nats
        if self.mean_rate_bits is not None:
            out["mean_rate_bits"] = self.mean_rate_bits
        return out

    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> LatentStatistics:
        arrays = {"spectrum", "mean", "precision", "normal_surprisal", "pca_mean", "pca_components", "pca_points"}
        kwargs = {k: (np.asarray(v, dtype=np.float64) if k in arrays else v) for k, v in data.items()}
        return cls(**kwargs)


def fit_latent_statistics(z, *, kl=None, rate_bits=None, k: int = 3, max_points: int = 400, seed: int = 0) -> LatentStatistics:
    """Fit :class:`LatentStatistics` to normal latent codes ``z`` ``(N, d)`` (and per-image KL for a VAE, or
    rate in bits for a rate-distortion AE)."""
    z = _as_codes(z)
    n, d = z.shape
    cov = _shrunk_covariance(z)
    cov = cov + 1e-9 * np.trace(cov) / d * np.eye(d)
    sign, logdet = np.linalg.slogdet(cov)
    precision = np.linalg.inv(cov)
    mean = z.mean(axis=0)
    spectrum = variance_spectrum(z)
    if d >= 2:
        vals, vecs = np.linalg.eigh(np.cov(z, rowvar=False))
        components = vecs[:, ::-1][:, :2].T
    else:
        components = np.array([[1.0], [0.0]])
    stats = LatentStatistics(
        n=n,
        dim=d,
        entropy_gaussian_nats=latent_entropy_gaussian(z),
        entropy_knn_nats=latent_entropy_knn(z, k=k),
        spectrum=spectrum,
        effective_dim=effective_dimension(spectrum),
        mean=mean,
        precision=precision,
        logdet=float(logdet),
        normal_surprisal=np.zeros(1),
        pca_mean=mean,
        pca_components=components,
        pca_points=np.zeros((0, 2)),
        mean_kl_nats=None if kl is None else float(np.mean(np.asarray(kl, dtype=np.float64))),
        mean_rate_bits=None if rate_bits is None else float(np.mean(np.asarray(rate_bits, dtype=np.float64))),
    )
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    return LatentStatistics(
        **{**stats.__dict__, "normal_surprisal": np.sort(stats.surprisal(z)), "pca_points": stats.project(z[idx])}
    )
