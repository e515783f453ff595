"""The demo cases the Analyze page offers: a few normal and lesion slices of the demo test split.

The choice is deterministic and made from the data alone (no model involved).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["DemoCase", "demo_cases"]


@dataclass(frozen=True, eq=False)
class DemoCase:
    """One slice of the demo test split, with its ground truth.

    Attributes
    ----------
    key : stable identifier (used as a cache key)
    label : what a picker shows, e.g. ``"Lesion 2: tumour"``
    pixels : ``(1, H, W)`` float32 in [0, 1]
    mask : ``(H, W)`` bool ground-truth lesion mask, or None for a normal slice
    lesion_kind : e.g. ``"tumour"``, or None for a normal slice
    """

    key: str
    label: str
    pixels: np.ndarray
    mask: np.ndarray | None
    lesion_kind: str | None

    @property
    def is_normal(self) -> bool:
        return self.mask is None


def demo_cases(dataset=None, *, n_normal: int = 3, n_lesion: int = 5) -> list[DemoCase]:
    """A few normal and lesion slices of the demo test split (deterministic choice).

    Normals are spread evenly over the normal test slices; lesions cover as many lesion kinds as possible,
    preferring the largest lesion of each kind (the clearest teaching example).

    Parameters
    ----------
    dataset : Dataset, optional
        Anything with a ``test`` split holding ``images`` (N, H, W), ``labels`` (N,), ``masks`` (N, H, W) and
        optionally ``names`` and ``extra["lesion_kind"]``; default :func:`ae4ad_core.data.load_demo`.
    """
    if dataset is None:
        from .data import load_demo

        dataset = load_demo()
    test = dataset.test
    images = np.asarray(test.images, dtype=np.float32)
    labels = np.asarray(test.labels).astype(int)
    masks = getattr(test, "masks", None)
    extra = getattr(test, "extra", None) or {}
    kinds = extra.get("lesion_kind") if isinstance(extra, Mapping) else None
    kinds = (
        [None if k in (None, "", "none") else str(k) for k in kinds]
        if kinds is not None
        else [None] * len(labels)
    )
    difficulty = extra.get("difficulty") if isinstance(extra, Mapping) else None
    cases: list[DemoCase] = []
    normal_idx = np.flatnonzero(labels == 0)
    if len(normal_idx):
        # Mid-brain slices (the upper half by tissue area), spread evenly over the split.
        area = (images[normal_idx] > 0.05).reshape(len(normal_idx), -1).sum(1)
        central = normal_idx[area >= np.median(area)]
        picks = central[np.linspace(0, len(central) - 1, min(n_normal, len(central))).astype(int)]
        for j, i in enumerate(dict.fromkeys(picks.tolist()), start=1):
            cases.append(DemoCase(f"normal-{i}", f"Normal {j}", images[i][None], None, None))
    lesion_idx = np.flatnonzero(labels == 1)
    if len(lesion_idx):
        area = (
            (np.asarray(masks)[lesion_idx].reshape(len(lesion_idx), -1) > 0).sum(1)
            if masks is not None
            else np.zeros(len(lesion_idx))
        )
        order = lesion_idx[np.argsort(-area, kind="stable")]
        chosen: list[int] = []
        seen: set = set()
        for i in order:  # the largest lesion of each kind first, then the next largest overall
            if kinds[i] not in seen:
                chosen.append(int(i))
                seen.add(kinds[i])
        chosen += [int(i) for i in order if int(i) not in chosen]
        for j, i in enumerate(chosen[:n_lesion], start=1):
            mask = np.asarray(masks[i]) > 0 if masks is not None else None
            kind = kinds[i] or "lesion"
            level = f" ({difficulty[i]})" if difficulty is not None and str(difficulty[i]) else ""
            cases.append(DemoCase(f"lesion-{i}", f"Lesion {j}: {kind}{level}", images[i][None], mask, kind))
    return cases
