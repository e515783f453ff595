"""Real glioma patients in the BraTS releases: find them, standardise them, slice them, lay them out.

One function per step, shared by every consumer (the ``ae4ad data build-brats`` layout writer, the shipped
real-patient asset, training, cross-validation and the app's demo cases):

* :func:`find_patients` recognises patient folders of three namings:

  - BraTS 2013/2015 as prepared by DeepMedic: ``Flair_subtrMeanDivStd.nii.gz``, ``T1c_subtrMeanDivStd.nii.gz``
    (``T1``/``T2`` likewise), ``OTMultiClass.nii.gz`` (labels 0-4) and ``brainmask.nii.gz``;
  - BraTS 2021: ``<id>_flair.nii.gz``, ``<id>_t1ce.nii.gz``, ``<id>_t1.nii.gz``, ``<id>_t2.nii.gz``,
    ``<id>_seg.nii.gz``;
  - BraTS 2023: ``<id>-t2f.nii.gz``, ``<id>-t1c.nii.gz``, ``<id>-t1n.nii.gz``, ``<id>-t2w.nii.gz``,
    ``<id>-seg.nii.gz``.

* :func:`standardise_in_brain` z-scores a volume inside its brain mask (what the BraTS 2013 preparation did,
  Kamnitsas et al., MedIA 2017) and puts the background at :data:`BACKGROUND_Z`; re-applying it to an already
  standardised volume changes nothing but rounding.
* :func:`patient_slices` returns the axial brain slices of one patient and sequence with tumour and brain masks;
  a slice is *normal* when it holds no tumour voxel (any label > 0), and only slices whose brain covers at least
  :data:`MIN_BRAIN_FRACTION` of the slice are kept ("brain slices only").
* :func:`split_patients` splits by patient, never by slice.
* :func:`build_brats_layout` writes the MedIAnomaly BraTS layout (``train/`` normal slices, ``test/normal``,
  ``test/tumor``, ``test/annotation``) that :func:`ae4ad_core.data.load_brats_layout` reads;
  :func:`build_real_asset` writes the compact ``.npz`` the app ships (:func:`load_real_slices` reads it).

PNG slices store the standardised intensity through the fixed window :data:`Z_WINDOW` (8 bits, 0.035 z per
level; background 0), the same window the shipped real-patient models apply, so nothing they use is lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, look_up_option

__all__ = [
    "SEQUENCES",
    "Z_WINDOW",
    "BACKGROUND_Z",
    "MIN_BRAIN_FRACTION",
    "BratsPatient",
    "PatientSlices",
    "find_patients",
    "standardise_in_brain",
    "patient_slices",
    "split_patients",
    "quantise_z",
    "dequantise_z",
    "build_brats_layout",
    "build_real_asset",
    "load_real_slices",
    "load_real",
]

SEQUENCES = ("flair", "t1c", "t1", "t2")
Z_WINDOW = (-3.5, 5.5)
"""Standardised intensities (z inside the brain) kept by the real-patient models and the stored slices: the
darkest brain tissue (CSF on FLAIR, about z = -3.1 in the BraTS 2013 patients) stays above the background and
bright lesions (FLAIR oedema up to z = 3.4, T1c enhancement up to z = 5.3 at their 95th percentiles) stay below
the top."""
BACKGROUND_Z = Z_WINDOW[0]
"""Value given to voxels outside the brain: the window's lower end, so background maps to -1 in model space."""
MIN_BRAIN_FRACTION = 0.02
"""A slice counts as a brain slice when its brain mask covers at least 2% of it (about 11 cm^2 at 1 mm on
240 x 240), which drops the tips of the head where there is nothing to reconstruct."""

_NAMINGS: dict[str, dict[str, str]] = {
    "brats2013": {
        "flair": r"^Flair_.*\.nii(\.gz)?$",
        "t1c": r"^T1c_.*\.nii(\.gz)?$",
        "t1": r"^T1_.*\.nii(\.gz)?$",
        "t2": r"^T2_.*\.nii(\.gz)?$",
        "seg": r"^OTMultiClass\.nii(\.gz)?$",
        "brain": r"^brainmask\.nii(\.gz)?$",
    },
    "brats2021": {
        "flair": r"_flair\.nii(\.gz)?$",
        "t1c": r"_t1ce\.nii(\.gz)?$",
        "t1": r"_t1\.nii(\.gz)?$",
        "t2": r"_t2\.nii(\.gz)?$",
        "seg": r"_seg\.nii(\.gz)?$",
    },
    "brats2023": {
        "flair": r"-t2f\.nii(\.gz)?$",
        "t1c": r"-t1c\.nii(\.gz)?$",
        "t1": r"-t1n\.nii(\.gz)?$",
        "t2": r"-t2w\.nii(\.gz)?$",
        "seg": r"-seg\.nii(\.gz)?$",
    },
}


@dataclass(frozen=True)
class BratsPatient:
    """One patient folder: its name, release naming and the files found (``sequence -> path``, plus ``seg``
    and, for BraTS 2013, ``brain``)."""

    name: str
    release: str
    files: dict

    @property
    def sequences(self) -> list[str]:
        return [s for s in SEQUENCES if s in self.files]


@dataclass(frozen=True, eq=False)
class PatientSlices:
    """The brain slices of one patient and sequence.

    Attributes
    ----------
    patient, sequence : str
    images : (N, H, W) float32 standardised intensity (z inside the brain; background :data:`BACKGROUND_Z`)
    tumour : (N, H, W) bool expert tumour mask (any label > 0)
    brain : (N, H, W) bool brain mask
    slice_index : (N,) int axial index in the volume
    """

    patient: str
    sequence: str
    images: np.ndarray
    tumour: np.ndarray
    brain: np.ndarray
    slice_index: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """1 where the slice holds any tumour voxel."""
        return self.tumour.reshape(len(self.tumour), -1).any(axis=1).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.images)


def find_patients(src: Path | str) -> list[BratsPatient]:
    """Every BraTS patient folder at or below ``src`` (sorted by name).

    A folder is a patient when it holds a tumour label file and at least one sequence of one naming.

    Raises
    ------
    DataError
        If ``src`` is not a folder or holds no patient.
    """
    root = Path(src)
    if not root.is_dir():
        raise DataError(f"{src}: not a folder; give the folder holding BraTS patient folders.")
    patients = []
    for folder in sorted({p.parent for p in root.rglob("*.nii*")} | {root}):
        names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        for release, patterns in _NAMINGS.items():
            found = {}
            for key, pattern in patterns.items():
                hits = [n for n in names if re.search(pattern, n, flags=re.IGNORECASE)]
                if hits:
                    found[key] = folder / hits[0]
            if "seg" in found and any(s in found for s in SEQUENCES):
                patients.append(BratsPatient(name=folder.name, release=release, files=found))
                break
    if not patients:
        raise DataError(
            f"{src}: no BraTS patient folder found (expected e.g. '*_flair.nii.gz' + '*_seg.nii.gz' (2021), "
            "'*-t2f.nii.gz' + '*-seg.nii.gz' (2023) or 'Flair_*.nii.gz' + 'OTMultiClass.nii.gz' (2013))."
        )
    return patients


def standardise_in_brain(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Z-score ``volume`` inside ``brain`` (mean 0, standard deviation 1 over brain voxels); voxels outside the
    brain get :data:`BACKGROUND_Z`. Any shape; returns float32."""
    v = np.asarray(volume, dtype=np.float32)
    b = np.asarray(brain, dtype=bool)
    if not b.any():
        raise DataError("The brain mask is empty: nothing to standardise.")
    vals = v[b].astype(np.float64)
    std = float(vals.std()) or 1.0
    z = ((v - float(vals.mean())) / std).astype(np.float32)
    z[~b] = BACKGROUND_Z
    return z


def _axial(volume, affine) -> np.ndarray:
    """``(X, Y, Z)`` NIfTI data as ``(Z, rows, cols)`` axial slices, cut exactly as the image reader cuts an
    uploaded NIfTI (:func:`ae4ad_core.io.nifti.volume_to_slices`: RAS, anterior up, the patient's right on the
    left), so the models see training slices and uploads the same way round."""
    from .io.nifti import volume_to_slices

    return np.ascontiguousarray(volume_to_slices(np.asarray(volume), affine, "axial")[0])


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data, affine)`` of a NIfTI file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return np.asarray(img.dataobj), img.affine
    except Exception as exc:  # nibabel raises many types for broken files
        raise DataError(f"{path.name}: cannot be read as NIfTI ({type(exc).__name__}: {exc}).") from None


def patient_slices(patient: BratsPatient, sequence: str = "flair") -> PatientSlices:
    """The standardised axial brain slices of ``patient`` for ``sequence`` with tumour and brain masks.

    The brain mask is the release's own (BraTS 2013) or the nonzero voxels of the sequence (the later releases
    are skull-stripped with a zero background).
    """
    look_up_option(sequence, SEQUENCES, what="sequence")
    if sequence not in patient.files:
        raise DataError(f"{patient.name}: no {sequence} volume (has {', '.join(patient.sequences)}).")
    volume, affine = _load(patient.files[sequence])
    volume = volume.astype(np.float32)
    seg = _load(patient.files["seg"])[0] > 0
    brain = _load(patient.files["brain"])[0] > 0.5 if "brain" in patient.files else volume != 0
    if volume.ndim != 3 or seg.shape != volume.shape or brain.shape != volume.shape:
        raise DataError(f"{patient.name}: {sequence}, labels and brain mask differ in shape "
                        f"({volume.shape}, {seg.shape}, {brain.shape}).")
    z = _axial(standardise_in_brain(volume, brain), affine)
    seg, brain = _axial(seg, affine), _axial(brain, affine)
    area = brain.reshape(len(brain), -1).mean(axis=1)
    keep = np.flatnonzero(area >= MIN_BRAIN_FRACTION)
    return PatientSlices(patient=patient.name, sequence=sequence, images=z[keep], tumour=seg[keep],
                         brain=brain[keep], slice_index=keep.astype(np.int16))


def split_patients(names: Sequence[str], test: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(train, test)`` patient names: ``test`` as given (every name must exist), the others train.

    Raises
    ------
    DataError
        For an unknown test name or when a side would be empty.
    """
    names = list(names)
    for t in test:
        look_up_option(t, names, what="patient")
    train = [n for n in names if n not in set(test)]
    if not train or not test:
        raise DataError(f"A patient split needs patients on both sides; got train {train}, test {list(test)}.")
    return train, list(test)


def quantise_z(z: np.ndarray) -> np.ndarray:
    """Standardised intensity -> uint8 through :data:`Z_WINDOW` (values outside are clipped)."""
    lo, hi = Z_WINDOW
    return np.round(np.clip((np.asarray(z, np.float32) - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _dequantise_formula(q: np.ndarray) -> np.ndarray:
    lo, hi = Z_WINDOW
    return (np.asarray(q, np.float32) / 255.0 * (hi - lo) + lo).astype(np.float32)


_DEQUANTISED = _dequantise_formula(np.arange(256, dtype=np.uint8))  # the 256 values a uint8 code maps to


def dequantise_z(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise_z` (to 0.035 z). A uint8 array is looked up in a table of the 256 values the
    same float32 arithmetic gives (identical, in one pass instead of four: the demo patient's slices decode in
    a fraction of the time on the app's first page)."""
    q = np.asarray(q)
    if q.dtype == np.uint8:
        return _DEQUANTISED[q]
    return _dequantise_formula(q)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image as PILImage

    PILImage.fromarray(np.ascontiguousarray(array)).save(path, optimize=False, compress_level=6)


def build_brats_layout(
    src: Path | str,
    out: Path | str,
    *,
    sequence: str = "flair",
    test_patients: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict:
    """Write the MedIAnomaly BraTS layout from the BraTS patient folders under ``src``.

    Training normals come from the training patients only; ``test/normal`` and ``test/tumor`` (with masks in
    ``test/annotation``, values 0/255, named with ``flair`` replaced by ``seg``) from the test patients only.

    Parameters
    ----------
    src, out : folders (``out`` is created)
    sequence : one of :data:`SEQUENCES`
    test_patients : names of the test patients; default a seeded ``test_fraction`` of them (at least one)
    seed : seeds the default split

    Returns
    -------
    dict
        Counts and the split (also written to ``out/split.json``).
    """
    patients = find_patients(src)
    names = [p.name for p in patients]
    if test_patients is None:
        rng = np.random.default_rng(seed)
        n_test = max(1, int(round(test_fraction * len(names))))
        if len(names) < 2:
            raise DataError(f"{src}: {len(names)} patient(s); a split by patient needs at least 2.")
        test_patients = sorted(rng.choice(names, size=n_test, replace=False).tolist())
    train_names, test_names = split_patients(names, test_patients)
    out = Path(out)
    folders = {k: out / k for k in ("train", "test/normal", "test/tumor", "test/annotation")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "test_normal": 0, "test_tumor": 0}
    for patient in patients:
        s = patient_slices(patient, sequence)
        image = quantise_z(s.images)
        for i, idx in enumerate(s.slice_index):
            # the MedIAnomaly naming: the image name holds "flair", its mask the same name with "seg"
            stem = f"{patient.name}_flair_{sequence}_z{int(idx):03d}.png"
            if patient.name in train_names:
                if not s.labels[i]:
                    _write_png(folders["train"] / stem, image[i])
                    counts["train"] += 1
            elif s.labels[i]:
                _write_png(folders["test/tumor"] / stem, image[i])
                _write_png(folders["test/annotation"] / stem.replace("flair", "seg"),
                           s.tumour[i].astype(np.uint8) * 255)
                counts["test_tumor"] += 1
            else:
                _write_png(folders["test/normal"] / stem, image[i])
                counts["test_normal"] += 1
    summary = {"sequence": sequence, "train_patients": train_names, "test_patients": test_names,
               "releases": sorted({p.release for p in patients}), "z_window": list(Z_WINDOW),
               "min_brain_fraction": MIN_BRAIN_FRACTION, **counts}
    (out / "split.json").write_text(json.dumps(summary, indent=1))
    return summary


def build_real_asset(
    src: Path | str, out: Path | str, *, sequences: Sequence[str] = ("flair", "t1c"), step: int = 1
) -> Path:
    """Write the compact real-patient asset: every brain slice (every ``step``-th) of every patient under
    ``src``, quantised with :func:`quantise_z`, with tumour and brain masks (bit-packed) and provenance.

    Split by patient happens where the asset is used (:func:`load_real_slices` keeps patients apart)."""
    patients = find_patients(src)
    arrays: dict[str, np.ndarray] = {}
    info = {"patients": [p.name for p in patients], "sequences": list(sequences), "z_window": list(Z_WINDOW),
            "min_brain_fraction": MIN_BRAIN_FRACTION, "step": step, "releases": sorted({p.release for p in patients})}
    for seq in sequences:
        for patient in patients:
            s = patient_slices(patient, seq)
            pick = np.arange(0, len(s), step)
            key = f"{seq}/{patient.name}"
            arrays[f"{key}/images"] = quantise_z(s.images[pick])
            arrays[f"{key}/tumour"] = np.packbits(s.tumour[pick], axis=-1)
            arrays[f"{key}/brain"] = np.packbits(s.brain[pick], axis=-1)
            arrays[f"{key}/slice_index"] = s.slice_index[pick]
    arrays["info_json"] = np.array(json.dumps(info))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    return out


def load_real_slices(
    path: Path | str, sequence: str = "flair", *, patients: Sequence[str] | None = None
) -> list[PatientSlices]:
    """The patients of a :func:`build_real_asset` file for ``sequence`` (standardised intensities restored with
    :func:`dequantise_z`); with ``patients``, only those of them the file holds (the others are not decoded).

    Raises
    ------
    DataError
        If the file is missing or does not hold ``sequence``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Real-patient slices not found at {path}; rebuild them with "
                        "`ae4ad data build-real SRC` (see assets/ATTRIBUTION.md).")
    with np.load(path, allow_pickle=False) as archive:
        info = json.loads(str(archive["info_json"]))
        look_up_option(sequence, info["sequences"], what="sequence")
        out = []
        wanted = None if patients is None else set(patients)
        for name in info["patients"]:
            if wanted is not None and name not in wanted:
                continue
            key = f"{sequence}/{name}"
            images = dequantise_z(archive[f"{key}/images"])
            width = images.shape[-1]
            out.append(PatientSlices(
                patient=name, sequence=sequence, images=images,
                tumour=np.unpackbits(archive[f"{key}/tumour"], axis=-1, count=width).astype(bool),
                brain=np.unpackbits(archive[f"{key}/brain"], axis=-1, count=width).astype(bool),
                slice_index=archive[f"{key}/slice_index"].astype(np.int16),
            ))
    return out


def load_real(spec: str = "real:flair"):
    """The shipped real-patient slices as a test set: ``real:<sequence>[:patient,patient...]`` (default every
    patient). Intensities are standardised (what the real-patient models expect) and brain masks come along,
    so pixel metrics are computed inside the brain. Train/validation splits are empty: the real models' own
    patient split is in their cards (a model scores optimistically on the patients it trained on).
    """
    from .assets import assets_dir
    from .data import Dataset, SliceSet

    parts = spec.split(":")
    sequence = parts[1] if len(parts) > 1 and parts[1] else "flair"
    patients = load_real_slices(assets_dir() / "real" / "brats2013.npz", sequence)
    if len(parts) > 2 and parts[2]:
        wanted = [look_up_option(w.strip(), [p.patient for p in patients], what="patient")
                  for w in parts[2].split(",")]
        patients = [p for p in patients if p.patient in wanted]
    test = SliceSet(
        images=np.concatenate([p.images for p in patients]),
        labels=np.concatenate([p.labels for p in patients]),
        masks=np.concatenate([p.tumour for p in patients]).astype(np.uint8),
        brain=np.concatenate([p.brain for p in patients]).astype(np.uint8),
        subjects=np.concatenate([[p.patient] * len(p) for p in patients]).astype(str),
        names=np.concatenate([[f"{p.patient}#{i}" for i in p.slice_index] for p in patients]).astype(str),
    )
    empty = test.subset(np.zeros(0, dtype=int))
    names = ", ".join(p.patient for p in patients)
    return Dataset(train=empty, val=empty, test=test, info={"layout": "real", "source": spec, "errors": [],
                                                             "warnings": []},
                   description=f"Real patients ({sequence}): {names}; {len(test)} brain slices, "
                               f"{int(test.labels.sum())} with tumour (CC BY-NC-SA 3.0 CH)")
