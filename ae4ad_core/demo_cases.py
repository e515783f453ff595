"""The demo cases the Analyze page offers: real glioma patients first, then the template-brain demo split.

* :func:`real_demo_cases`: tumour slices (with the experts' outline) and two normal slices of the held-out demo
  patient of the shipped BraTS asset, per sequence (FLAIR, T1c), in standardised intensity (what the
  real-patient models expect); licence CC BY-NC-SA 3.0 CH, non-commercial.
* :func:`demo_cases`: a few normal and synthetic-lesion slices of the template-brain demo test split.
* :func:`all_demo_cases`: both, real first; a missing asset leaves its cases out.

The choice is deterministic and made from the data alone (no model involved).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEMO_PATIENT",
    "REAL_CASE_LICENCE",
    "REAL_CASE_WINDOW",
    "DemoCase",
    "demo_cases",
    "real_demo_cases",
    "all_demo_cases",
    "case_caption",
]

DEMO_PATIENT = "brats_2013_pat0006_1"
"""The BraTS patient no shipped real-patient model saw in training or calibration (its cards'
``training_data.demo_patient``)."""
REAL_CASE_LICENCE = "CC BY-NC-SA 3.0 CH — non-commercial"
"""The licence line every real-patient demo case shows (see assets/ATTRIBUTION.md)."""
REAL_CASE_WINDOW = (1.0, 9.0)
"""Display window ``(center, width)`` of standardised intensities: z in [-3.5, 5.5], the window the real-patient
models apply (:data:`ae4ad_core.brats.Z_WINDOW`)."""
_SEQUENCE_WORDS = {"flair": "FLAIR", "t1c": "T1c", "t1": "T1", "t2": "T2"}


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
    sequence : MRI sequence of a real-patient case (``"flair"``, ``"t1c"``), None for the template brains
    licence : the data licence line of a real-patient case, None for the template brains
    source : where the slice comes from (patient and slice of a real case)
    window : display window ``(center, width)`` suited to the pixels, or None for the image's own
    truth_label : what the green outline is called in the legend
    """

    key: str
    label: str
    pixels: np.ndarray
    mask: np.ndarray | None
    lesion_kind: str | None
    sequence: str | None = None
    licence: str | None = None
    source: str | None = None
    window: tuple[float, float] | None = None
    truth_label: str = "ground truth"

    @property
    def is_normal(self) -> bool:
        return self.mask is None

    @property
    def is_real(self) -> bool:
        """A slice of a real patient (it carries a sequence and a licence)."""
        return self.sequence is not None


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
            cases.append(DemoCase(f"normal-{i}", f"Normal {j}", images[i][None].copy(), None, None))
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
            cases.append(DemoCase(f"lesion-{i}", f"Lesion {j}: {kind}{level}", images[i][None].copy(), mask, kind))
    return cases


def _spread_picks(order: np.ndarray, position: np.ndarray, n: int, gap: float) -> list[int]:
    """Up to ``n`` entries of ``order`` (best first), each at least ``gap`` away in ``position`` from those
    already taken; when too few are that far apart, the best remaining ones fill up."""
    chosen: list[int] = []
    for i in order:
        if len(chosen) == n:
            break
        if all(abs(int(position[i]) - int(position[j])) >= gap for j in chosen):
            chosen.append(int(i))
    chosen += [int(i) for i in order if int(i) not in chosen][: n - len(chosen)]
    return chosen


def _pixels_out(image: np.ndarray) -> np.ndarray:
    """A case's own ``(1, H, W)`` float32 copy of one slice (a view would keep the patient's whole volume)."""
    return np.array(image[None], dtype=np.float32)


def real_demo_cases(
    path=None,
    *,
    sequences: tuple[str, ...] = ("flair", "t1c"),
    patient: str = DEMO_PATIENT,
    n_tumour: int = 3,
    n_normal: int = 2,
) -> list[DemoCase]:
    """Demo cases of the held-out real patient: per sequence, ``n_tumour`` tumour slices (the largest tumour
    areas, spread over the volume, largest first) with the experts' outline, then ``n_normal`` tumour-free
    slices (the most brain, spread apart).

    Pixels are the standardised intensities of :func:`ae4ad_core.brats.load_real_slices` (z inside the brain,
    background -3.5), shown through :data:`REAL_CASE_WINDOW`.

    Parameters
    ----------
    path : str or Path, optional
        The real-patient asset; default ``assets/real/brats2013.npz``.

    Raises
    ------
    DataError
        If the asset is missing, lacks a sequence, or does not hold ``patient``.
    """
    from .assets import assets_dir
    from .brats import load_real_slices
    from .errors import DataError

    path = assets_dir() / "real" / "brats2013.npz" if path is None else path
    cases: list[DemoCase] = []
    for seq in sequences:
        by_name = {p.patient: p for p in load_real_slices(path, seq, patients=(patient,))}
        if patient not in by_name:
            held = ", ".join(p.patient for p in load_real_slices(path, seq))
            raise DataError(f"{path}: no patient {patient!r} (has {held}).")
        p = by_name[patient]
        word = _SEQUENCE_WORDS.get(seq, seq.upper())
        short = patient.replace("brats_2013_", "").replace("_1", "")
        labels = p.labels.astype(bool)
        tumour_idx = np.flatnonzero(labels)
        normal_idx = np.flatnonzero(~labels)
        if len(tumour_idx):
            area = p.tumour[tumour_idx].reshape(len(tumour_idx), -1).sum(1)
            order = tumour_idx[np.argsort(-area, kind="stable")]
            extent = int(p.slice_index[tumour_idx].max() - p.slice_index[tumour_idx].min()) + 1
            for i in _spread_picks(order, p.slice_index, n_tumour, max(3, extent // (n_tumour + 1))):
                z = int(p.slice_index[i])
                cases.append(DemoCase(
                    key=f"real-{seq}-{patient}-{z}",
                    label=f"Real patient (BraTS), {word}, slice {z}: glioma",
                    pixels=_pixels_out(p.images[i]), mask=np.array(p.tumour[i], dtype=bool), lesion_kind="glioma",
                    sequence=seq, licence=REAL_CASE_LICENCE, source=f"BraTS 2013 {short}, axial slice {z}",
                    window=REAL_CASE_WINDOW, truth_label="expert outline (tumour)",
                ))
        if len(normal_idx):
            area = p.brain[normal_idx].reshape(len(normal_idx), -1).sum(1)
            order = normal_idx[np.argsort(-area, kind="stable")]
            for i in _spread_picks(order, p.slice_index, n_normal, 10):
                z = int(p.slice_index[i])
                cases.append(DemoCase(
                    key=f"real-{seq}-{patient}-{z}",
                    label=f"Real patient (BraTS), {word}, slice {z}: no tumour",
                    pixels=_pixels_out(p.images[i]), mask=None, lesion_kind=None,
                    sequence=seq, licence=REAL_CASE_LICENCE, source=f"BraTS 2013 {short}, axial slice {z}",
                    window=REAL_CASE_WINDOW, truth_label="expert outline (tumour)",
                ))
    return cases


def all_demo_cases() -> list[DemoCase]:
    """The Analyze page's demo picker: :func:`real_demo_cases` first, then the template-brain
    :func:`demo_cases`; a missing asset leaves its cases out (the other's still come)."""
    from .errors import DataError

    cases: list[DemoCase] = []
    for source in (real_demo_cases, demo_cases):
        try:
            cases += source()
        except (DataError, OSError):
            continue
    return cases


def case_caption(case: DemoCase) -> str:
    """The line under a demo case's title: where the slice comes from, its sequence and licence for a real
    patient, and what the outlines mean."""
    outline = "" if case.mask is None else (
        f"Green: the {case.truth_label.split(' (')[0]}, drawn by experts; cyan: where the anomaly map exceeds "
        "the threshold calibrated on normal slices. "
        if case.is_real else "Green: the synthetic lesion's exact mask; cyan: the calibrated threshold. ")
    if not case.is_real:
        return outline + "Template-brain demo case (T1-weighted, intensities in [0, 1]); synthetic lesions."
    word = _SEQUENCE_WORDS.get(case.sequence, case.sequence)
    return (f"{outline}Real patient: {case.source}, {word}, standardised intensity (z inside the brain) shown at "
            f"z in [-3.5, 5.5]. Licence {case.licence} (BraTS 2013 data, see assets/ATTRIBUTION.md).")
