"""Choosing the latent size d from normal data only.

AE4AD (Cai et al. 2024) picks the best d on the test set, which a real tool cannot do. The rule here uses only
the reconstruction error of NORMAL validation images, following the paper's own argument: the latent should
carry as little information as possible while normal images are still reconstructed. So: take the smallest
``d`` whose normal validation error is within a relative ``tolerance`` of the best error of the sweep (the
plateau reached by large ``d``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["choose_latent_dim", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 0.10


def choose_latent_dim(dims: Sequence[int], val_errors: Sequence[float], *, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Smallest ``d`` with ``error(d) <= (1 + tolerance) * min(error)``.

    Parameters
    ----------
    dims : sequence of int
        Latent sizes of the sweep (any order; repeated values = seeds, averaged).
    val_errors : sequence of float
        Mean squared reconstruction error of normal validation images for each entry of ``dims``.
    tolerance : float
        Relative slack above the plateau (0.10 = within 10% of the best error).

    Returns
    -------
    int
        The chosen latent size.

    Examples
    --------
    >>> choose_latent_dim([1, 2, 4, 8, 16, 32], [0.2, 0.1, 0.05, 0.03, 0.021, 0.02])
    16
    """
    dims_arr = np.asarray(dims, dtype=np.int64)
    errs = np.asarray(val_errors, dtype=np.float64)
    if dims_arr.shape != errs.shape or dims_arr.size == 0:
        raise ValueError("dims and val_errors must be non-empty and of the same length.")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    if not np.all(np.isfinite(errs)):
        raise ValueError("val_errors must be finite.")
    unique = np.unique(dims_arr)
    mean_err = np.array([errs[dims_arr == d].mean() for d in unique])
    limit = (1.0 + tolerance) * mean_err.min()
    return int(unique[np.argmax(mean_err <= limit)])
