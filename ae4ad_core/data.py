"""Data sets of 2D slices: the bundled demo, a folder of normal images, and the MedIAnomaly layouts.

Every loader returns a :class:`Dataset` of three :class:`SliceSet` splits. Train and validation hold normal
slices only; the test split (when there is one) mixes normal and abnormal slices. Splits are made by subject
(a file, a DICOM series, or a BraTS patient), never by slice, so no anatomy is shared between them.

Layouts (the MedIAnomaly benchmark of Cai et al., MICCAI 2024):

* ``"demo"``: ``assets/demo/demo.npz`` built by :mod:`ae4ad_core.demo_build` (override with the environment
  variable ``AE4AD_DEMO``);
* MedIAnomaly: ``root/data.json`` = ``{"train": {"0": [names]}, "test": {"0": [normal], "1": [abnormal]}}`` and
  ``root/images/<name>``;
* BraTS as packaged by MedIAnomaly: ``root/train/*.png`` (normal), ``root/test/normal/``, ``root/test/tumor/`` and
  ``root/test/annotation/`` (mask name = tumour name with ``flair`` replaced by ``seg``; values 0/255);
* any other folder: every readable image file below it (recursively) is a normal training subject.

Images from folders keep their raw intensities (preprocessing happens later); each slice is resized to
``size x size`` keeping its aspect ratio and padded with the image's minimum.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ae4ad_core.assets import assets_dir
from ae4ad_core.errors import DataError

__all__ = [
    "SliceSet",
    "Dataset",
    "DEMO_PATH",
    "MINIMUM_IMAGES",
    "load_demo",
    "load_folder",
    "load_medianomaly",
    "load_brats_layout",
    "load_dataset",
    "fit_to_square",
]

DEMO_PATH: Path = assets_dir() / "demo" / "demo.npz"
"""Where the bundled demo set lives (``AE4AD_DEMO`` in the environment overrides it)."""

MINIMUM_IMAGES = 8
"""Fewest slices a folder must yield to train on."""

_IGNORED_SUFFIXES = frozenset(
    {".txt", ".md", ".json", ".csv", ".tsv", ".xml", ".html", ".htm", ".pdf", ".py", ".log", ".yaml", ".yml",
     ".ini", ".cfg", ".toml", ".sh", ".db"}
)  # fmt: skip
_BRATS_PATIENT = re.compile(
    r"(BraTS-[A-Z]+-\d+-\d+|brats_\d{4}_pat\d+_\d+|BraTS\d*_\d+)", re.IGNORECASE
)  # BraTS 2023 ("BraTS-GLI-00000-000"), 2013 as in ae4ad data build-brats ("brats_2013_pat0003_1"), 2021


@dataclass(frozen=True, eq=False)
class SliceSet:
    """A set of 2D slices with labels, optional masks and provenance.

    Compared and hashed by identity (arrays have no single truth value).

    Attributes
    ----------
    images : numpy.ndarray
        ``(N, H, W)`` float32. The demo set is in [0, 1]; folder data keep raw intensities.
    labels : numpy.ndarray
        ``(N,)`` uint8, 1 = abnormal.
    masks : numpy.ndarray or None
        ``(N, H, W)`` uint8 lesion masks (0/1), or None when unknown.
    brain : numpy.ndarray or None
        ``(N, H, W)`` uint8 brain / foreground masks, or None.
    subjects : numpy.ndarray
        ``(N,)`` str: the subject each slice comes from (splits never share one).
    names : numpy.ndarray
        ``(N,)`` str: e.g. ``"colin27/z087"`` or a file name (``"scan.nii.gz#12"`` for slice 12 of a volume).
    extra : dict
        More per-slice arrays of length N, e.g. ``slice_index``, ``lesion_kind``, ``difficulty``.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    brain: np.ndarray | None
    subjects: np.ndarray
    names: np.ndarray
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.images)
        if self.images.ndim != 3:
            raise DataError(f"SliceSet images must be (N, H, W); got shape {self.images.shape}.")
        arrays = {"labels": self.labels, "subjects": self.subjects, "names": self.names}
        arrays.update({f"extra[{key!r}]": value for key, value in self.extra.items()})
        for label, array in arrays.items():
            if len(array) != count:
                raise DataError(f"SliceSet {label} has {len(array)} entries for {count} images.")
        for label, array in (("masks", self.masks), ("brain", self.brain)):
            if array is not None and array.shape != self.images.shape:
                raise DataError(
                    f"SliceSet {label} has shape {array.shape}; the images have {self.images.shape}."
                )

    def __len__(self) -> int:
        return int(len(self.images))

    def subset(self, index) -> SliceSet:
        """The slices selected by ``index`` (integer array, boolean mask or slice), as a new set."""
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return SliceSet(
            images=self.images[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            brain=None if self.brain is None else self.brain[index],
            subjects=self.subjects[index],
            names=self.names[index],
            extra={key: np.asarray(value)[index] for key, value in self.extra.items()},
        )


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train, validation and (optional) test splits plus a description.

    Attributes
    ----------
    train, val : SliceSet
        Normal slices; no subject appears in both.
    test : SliceSet or None
        Normal and abnormal slices from other subjects, or None (a folder of normal images has no test split).
    description : str
        One human-readable paragraph.
    info : dict
        Provenance and diagnostics: ``layout``, ``source``, ``errors`` (``[(name, reason)]`` of unreadable
        files), ``warnings`` and, for the demo, the build information stored in the file.
    """

    train: SliceSet
    val: SliceSet
    test: SliceSet | None
    description: str
    info: dict


# ------------------------------------------------------------------------------------------------------ demo


def _demo_path(path: Path | str | None) -> Path:
    if path is not None:
        return Path(path)
    override = os.environ.get("AE4AD_DEMO")
    return Path(override) if override else DEMO_PATH


def load_demo(path: Path | str | None = None) -> Dataset:
    """Load the bundled demo set (cached; arrays are read-only).

    Parameters
    ----------
    path : pathlib.Path or str, optional
        The ``.npz`` file; defaults to ``AE4AD_DEMO`` from the environment, else :data:`DEMO_PATH`.

    Returns
    -------
    Dataset
        ``train`` and ``val`` normal slices (masks all zero), ``test`` half with synthetic lesions. ``extra``
        holds ``slice_index`` (all splits), ``lesion_kind`` and ``difficulty`` (test; ``""`` for normal).

    Raises
    ------
    DataError
        If the file is missing or lacks the documented keys.
    """
    return _load_demo_cached(_demo_path(path).resolve())


@functools.lru_cache(maxsize=4)
def _load_demo_cached(path: Path) -> Dataset:
    if not path.is_file():
        raise DataError(
            f"Demo data set not found at {path}; rebuild it with `ae4ad data build-demo` "
            "(scripts/build_demo.sh) or set AE4AD_DEMO to its path."
        )
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    required = ["info_json", "test_masks", "test_labels", "test_lesion_kind", "test_difficulty"]
    required += [f"{split}_{key}" for split in ("train", "val", "test")
                 for key in ("images", "brain", "subjects", "slice_index")]  # fmt: skip
    missing = [key for key in required if key not in arrays]
    if missing:
        raise DataError(f"{path} is not a demo data set: keys {missing} are missing. Rebuild it.")
    info = json.loads(str(arrays["info_json"]))
    splits = {}
    for split in ("train", "val", "test"):
        images = arrays[f"{split}_images"].astype(np.float32)
        count = len(images)
        subjects = arrays[f"{split}_subjects"].astype(str)
        slice_index = arrays[f"{split}_slice_index"].astype(np.int16)
        names = arrays.get(f"{split}_names")
        if names is None:
            names = np.array([f"{s}/z{i:03d}" for s, i in zip(subjects, slice_index, strict=True)])
        extra = {"slice_index": slice_index}
        if split == "test":
            labels = arrays["test_labels"].astype(np.uint8)
            masks = arrays["test_masks"].astype(np.uint8)
            extra["lesion_kind"] = arrays["test_lesion_kind"].astype(str)
            extra["difficulty"] = arrays["test_difficulty"].astype(str)
        else:
            labels = np.zeros(count, dtype=np.uint8)
            masks = np.zeros(images.shape, dtype=np.uint8)
        splits[split] = _read_only(
            SliceSet(
                images=images,
                labels=labels,
                masks=masks,
                brain=arrays[f"{split}_brain"].astype(np.uint8),
                subjects=subjects,
                names=names.astype(str),
                extra=extra,
            )
        )
    counts = {split: len(s) for split, s in splits.items()}
    description = (
        f"Demo: normal axial T1 brain slices (128 x 128, intensities in [0, 1]) from real brains shipped in "
        f"packages; train {counts['train']} slices ({', '.join(sorted(set(splits['train'].subjects)))}), "
        f"validation {counts['val']} ({', '.join(sorted(set(splits['val'].subjects)))}), test {counts['test']} "
        f"({', '.join(sorted(set(splits['test'].subjects)))}; {int(splits['test'].labels.sum())} with a "
        "synthetic lesion and its exact mask). See assets/ATTRIBUTION.md."
    )
    info = {"layout": "demo", "source": str(path), "errors": [], "warnings": [], **info}
    return Dataset(
        train=splits["train"], val=splits["val"], test=splits["test"], description=description, info=info
    )


def _read_only(slices: SliceSet) -> SliceSet:
    for array in (slices.images, slices.labels, slices.masks, slices.brain, slices.subjects, slices.names,
                  *slices.extra.values()):  # fmt: skip
        if isinstance(array, np.ndarray):
            array.setflags(write=False)
    return slices


# --------------------------------------------------------------------------------------------- resizing


def fit_to_square(image: np.ndarray, size: int, *, fill: float | None = None, order: int = 1) -> np.ndarray:
    """Resize a 2D image to ``size x size`` keeping its aspect ratio, centred and padded.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` array.
    size : int
        Output side in pixels.
    fill : float, optional
        Padding value; defaults to the image minimum.
    order : int, default 1
        Spline order (1 = bilinear for images, 0 = nearest for masks). Down-sizing with ``order >= 1`` is
        anti-aliased.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32.
    """
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape
    fill = float(np.min(image)) if fill is None else float(fill)
    scale = size / max(height, width)
    new_height = max(1, min(size, int(round(height * scale))))
    new_width = max(1, min(size, int(round(width * scale))))
    if (new_height, new_width) != (height, width):
        resized = resize(image, (new_height, new_width), order=order, mode="edge", preserve_range=True,
                         anti_aliasing=order > 0 and scale < 1.0).astype(np.float32)  # fmt: skip
    else:
        resized = image
    out = np.full((size, size), fill, dtype=np.float32)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    out[top : top + new_height, left : left + new_width] = resized
    return out


# ---------------------------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class _Subject:
    """The slices of one image file or series, resized, with what is known about the original."""

    name: str
    images: np.ndarray  # (n, size, size) float32
    shape: tuple[int, int]
    format: str
    modality: str | None
    value_range: tuple[float, float]


def _list_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() in _IGNORED_SUFFIXES:
            continue
        files.append(path)
    return files


def _read_subjects(
    root: Path, files: Sequence[Path], *, size: int
) -> tuple[list[_Subject], list[tuple[str, str]]]:
    """Read files folder by folder (so a DICOM series in one folder becomes one subject)."""
    from ae4ad_core.io import read_images

    subjects: list[_Subject] = []
    errors: list[tuple[str, str]] = []
    by_folder: dict[Path, list[Path]] = {}
    for path in files:
        by_folder.setdefault(path.parent, []).append(path)
    for folder_files in by_folder.values():
        sources = []
        for path in folder_files:
            name = path.relative_to(root).as_posix()
            try:
                sources.append((name, path.read_bytes()))
            except OSError as error:
                errors.append((name, f"{name}: cannot read the file ({type(error).__name__})"))
        images, read_errors = read_images(sources)
        errors.extend(read_errors)
        for image in images:
            pixels = image.pixels
            if pixels.size == 0 or not np.isfinite(pixels).any():
                errors.append((image.name, f"{image.name}: no finite pixel values"))
                continue
            fill = float(np.nanmin(pixels))
            resized = np.stack(
                [fit_to_square(np.nan_to_num(plane, nan=fill), size, fill=fill) for plane in pixels]
            )
            subjects.append(
                _Subject(
                    name=image.name,
                    images=resized,
                    shape=(int(pixels.shape[1]), int(pixels.shape[2])),
                    format=image.format,
                    modality=(image.metadata or {}).get("modality"),
                    value_range=(float(np.nanmin(pixels)), float(np.nanmax(pixels))),
                )
            )
    return subjects, errors


def _mixture_warnings(subjects: Sequence[_Subject], *, size: int) -> list[str]:
    warnings = []
    shapes = sorted({s.shape for s in subjects})
    if len(shapes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in shapes[:6]) + (" ..." if len(shapes) > 6 else "")
        warnings.append(
            f"Images have mixed sizes ({listed}); each was resized to {size}x{size} keeping its aspect ratio "
            "and padded, so anatomy scales differ between files."
        )
    formats = sorted({s.format.replace("dicom-series", "dicom") for s in subjects})
    if len(formats) > 1:
        warnings.append(
            f"Images come in mixed formats ({', '.join(formats)}); check they are the same modality."
        )
    modalities = sorted({s.modality for s in subjects if s.modality})
    if len(modalities) > 1:
        warnings.append(
            f"DICOM files have mixed modalities ({', '.join(modalities)}); train on one modality."
        )
    highs = [s.value_range[1] - s.value_range[0] for s in subjects]
    if highs and min(highs) > 0 and max(highs) / min(highs) > 20:
        warnings.append(
            f"Intensity ranges differ a lot between files ({min(highs):.3g} to {max(highs):.3g}); mixed bit depths "
            "or modalities? Per-image intensity scaling is applied later."
        )
    return warnings


def _split_subjects(names: Sequence[str], *, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of subject names into (train, val); both non-empty."""
    unique = sorted(set(names))
    if len(unique) < 2:
        raise DataError(
            f"Found only {len(unique)} subject (file or series); at least 2 are needed to split training and "
            "validation by subject. Add more files."
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    val_count = min(len(unique) - 1, max(1, int(round(val_fraction * len(unique)))))
    val = sorted(unique[i] for i in order[:val_count])
    train = sorted(unique[i] for i in order[val_count:])
    return train, val


def _stack(subjects: Sequence[_Subject], labels: Sequence[int] | None = None) -> SliceSet:
    images, names, subject_names, slice_index, label_list = [], [], [], [], []
    for position, subject in enumerate(subjects):
        count = len(subject.images)
        images.append(subject.images)
        subject_names += [subject.name] * count
        names += [subject.name if count == 1 else f"{subject.name}#{i}" for i in range(count)]
        slice_index += list(range(count))
        label_list += [0 if labels is None else labels[position]] * count
    return SliceSet(
        images=np.concatenate(images).astype(np.float32) if images else np.zeros((0, 1, 1), np.float32),
        labels=np.array(label_list, dtype=np.uint8),
        masks=None,
        brain=None,
        subjects=np.array(subject_names, dtype=str),
        names=np.array(names, dtype=str),
        extra={"slice_index": np.array(slice_index, dtype=np.int16)},
    )


def load_folder(path: Path | str, *, size: int = 128, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load a folder (searched recursively) of NORMAL images in any format :mod:`ae4ad_core.io` reads.

    Every slice of every file becomes a sample, resized to ``size x size`` (aspect kept, padded with the
    image minimum). Train and validation are split by subject: a file, or a DICOM series (single-frame DICOM
    files of one series in one folder), never slices of one file in both. Hidden files and obvious non-images
    (``.txt``, ``.json``, ``.csv``...) are skipped.

    Parameters
    ----------
    path : pathlib.Path or str
        The folder.
    size : int, default 128
        Output side in pixels.
    val_fraction : float, default 0.2
        Fraction of subjects held out for validation (at least one, and at least one left for training).
    seed : int, default 0
        Seeds the split.

    Returns
    -------
    Dataset
        ``test`` is None. ``info["errors"]`` lists unreadable files as ``(name, reason)``,
        ``info["warnings"]`` mixed sizes, formats, modalities or intensity ranges.

    Raises
    ------
    DataError
        If the folder does not exist, yields fewer than :data:`MINIMUM_IMAGES` slices or fewer than 2 subjects.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a folder of normal images (PNG, DICOM, NIfTI...).")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction!r}.")
    files = _list_files(root)
    subjects, errors = _read_subjects(root, files, size=size)
    total = sum(len(s.images) for s in subjects)
    if total < MINIMUM_IMAGES:
        detail = f"; {len(errors)} file(s) could not be read, e.g. {errors[0][1]}" if errors else ""
        raise DataError(
            f"{root} holds {total} readable slice(s) in {len(files)} file(s); at least {MINIMUM_IMAGES} are needed "
            f"to train{detail}. Add more normal images."
        )
    train_names, val_names = _split_subjects([s.name for s in subjects], val_fraction=val_fraction, seed=seed)
    train_set = set(train_names)
    train = _stack([s for s in subjects if s.name in train_set])
    val = _stack([s for s in subjects if s.name not in train_set])
    warnings = _mixture_warnings(subjects, size=size)
    info = {
        "layout": "folder",
        "source": str(root),
        "size": size,
        "seed": seed,
        "files": len(files),
        "subjects": len(subjects),
        "train_subjects": train_names,
        "val_subjects": val_names,
        "errors": errors,
        "warnings": warnings,
    }
    description = (
        f"Folder {root.name}: {len(train)} training and {len(val)} validation slices from {len(subjects)} "
        f"files/series (split by subject), resized to {size}x{size}; no test split."
    )
    return Dataset(train=train, val=val, test=None, description=description, info=info)


# ----------------------------------------------------------------------------------- MedIAnomaly layouts


def _read_png_list(
    paths: Sequence[Path],
    names: Sequence[str],
    *,
    size: int,
    errors: list[tuple[str, str]],
    mask: bool = False,
) -> tuple[list[np.ndarray], list[int]]:
    """Read single images; returns the resized slices and the positions that were read."""
    from ae4ad_core.errors import UnreadableImageError
    from ae4ad_core.io import read_image

    out, kept = [], []
    for position, (path, name) in enumerate(zip(paths, names, strict=True)):
        try:
            image = read_image(path, name=name)
        except UnreadableImageError as error:
            errors.append((name, str(error)))
            continue
        plane = image.pixels[0]
        if mask:
            threshold = 127.5 if float(plane.max()) > 1.0 else 0.5
            out.append((fit_to_square((plane > threshold).astype(np.float32), size, fill=0.0, order=0) > 0.5)
                       .astype(np.uint8))  # fmt: skip
        else:
            out.append(fit_to_square(plane, size))
        kept.append(position)
    return out, kept


def _patient(name: str) -> str:
    match = _BRATS_PATIENT.search(name)
    return match.group(1) if match else Path(name).stem


def _slice_set(images: list[np.ndarray], names: list[str], subjects: list[str], labels: list[int],
               masks: list[np.ndarray] | None = None) -> SliceSet:  # fmt: skip
    count = len(images)
    return SliceSet(
        images=np.stack(images).astype(np.float32) if count else np.zeros((0, 1, 1), np.float32),
        labels=np.array(labels, dtype=np.uint8),
        masks=None if masks is None else np.stack(masks).astype(np.uint8),
        brain=None,
        subjects=np.array(subjects, dtype=str),
        names=np.array(names, dtype=str),
    )


def _split_train_val(
    images: list[np.ndarray], names: list[str], subjects: list[str], *, fraction: float, seed: int
) -> tuple[SliceSet, SliceSet, list[str]]:
    train_subjects, val_subjects = _split_subjects(subjects, val_fraction=fraction, seed=seed)
    val_set = set(val_subjects)
    pick = [i for i, s in enumerate(subjects) if s in val_set]
    keep = [i for i, s in enumerate(subjects) if s not in val_set]

    def take(index: list[int]) -> SliceSet:
        return _slice_set([images[i] for i in index], [names[i] for i in index], [subjects[i] for i in index],
                          [0] * len(index))  # fmt: skip

    return take(keep), take(pick), val_subjects


def load_medianomaly(root: Path | str, *, size: int = 128, seed: int = 0) -> Dataset:
    """Load a MedIAnomaly-style set: ``root/data.json`` plus ``root/images/<name>``.

    ``data.json`` is ``{"train": {"0": [names]}, "test": {"0": [normal names], "1": [abnormal names]}}``. The
    validation split is a seeded 10 % of the training normals (each file is its own subject). There are no
    pixel masks in this layout (``test.masks`` is None).

    Parameters
    ----------
    root : pathlib.Path or str
        Folder holding ``data.json``.
    size : int, default 128
        Output side in pixels.
    seed : int, default 0
        Seeds the validation split.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If ``data.json`` is missing or malformed, or too few training images can be read.
    """
    root = Path(root)
    try:
        spec = json.loads((root / "data.json").read_text())
        train_names = [str(n) for n in spec["train"]["0"]]
        test_spec = spec.get("test", {})
        test_normal = [str(n) for n in test_spec.get("0", [])]
        test_abnormal = [str(n) for n in test_spec.get("1", [])]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{root / 'data.json'} is missing or not in the MedIAnomaly form "
            f'{{"train": {{"0": [...]}}, "test": {{"0": [...], "1": [...]}}}} ({type(error).__name__}: {error}).'
        ) from None

    def locate(name: str) -> Path:
        direct = root / name
        return direct if direct.is_file() else root / "images" / name

    errors: list[tuple[str, str]] = []
    train_images, kept = _read_png_list(
        [locate(n) for n in train_names], train_names, size=size, errors=errors
    )
    kept_names = [train_names[i] for i in kept]
    if len(train_images) < MINIMUM_IMAGES:
        raise DataError(f"{root}: only {len(train_images)} training image(s) could be read; at least "
                        f"{MINIMUM_IMAGES} are needed.")  # fmt: skip
    train, val, val_subjects = _split_train_val(train_images, kept_names, kept_names, fraction=0.1, seed=seed)
    test_names = test_normal + test_abnormal
    test_labels = [0] * len(test_normal) + [1] * len(test_abnormal)
    test_images, kept = _read_png_list([locate(n) for n in test_names], test_names, size=size, errors=errors)
    test = None
    if test_images:
        names = [test_names[i] for i in kept]
        test = _slice_set(test_images, names, names, [test_labels[i] for i in kept])
    info = {"layout": "medianomaly", "source": str(root), "size": size, "seed": seed, "errors": errors,
            "warnings": [], "val_subjects": val_subjects}  # fmt: skip
    description = (
        f"MedIAnomaly set {root.name}: {len(train)} training and {len(val)} validation normal images, "
        f"{0 if test is None else len(test)} test images ({0 if test is None else int(test.labels.sum())} "
        "abnormal), no pixel masks."
    )
    return Dataset(train=train, val=val, test=test, description=description, info=info)


def _layout_z_window(root: Path) -> list | None:
    """The z window of a layout written by :func:`ae4ad_core.brats.build_brats_layout` (``split.json``)."""
    try:
        return json.loads((root / "split.json").read_text()).get("z_window")
    except (OSError, ValueError, AttributeError):
        return None


def load_brats_layout(root: Path | str, *, size: int = 128, seed: int = 0) -> Dataset:
    """Load the MedIAnomaly BraTS layout: ``train/``, ``test/normal/``, ``test/tumor/``, ``test/annotation/``.

    The mask of ``test/tumor/X`` is ``test/annotation/X`` with ``flair`` replaced by ``seg``; its values 0/255
    become 0/1. The validation split is a seeded 10 % of the training patients (the ``BraTS..._NNNNN`` part of
    a file name, else the file itself). If any tumour image lacks its mask, ``test.masks`` is None and
    ``info["warnings"]`` says so.

    Parameters
    ----------
    root : pathlib.Path or str
        The folder holding ``train`` and ``test``.
    size : int, default 128
        Output side in pixels.
    seed : int, default 0
        Seeds the validation split.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If the folders are missing or too few training images can be read.
    """
    root = Path(root)
    folders = {"train": root / "train", "normal": root / "test" / "normal", "tumor": root / "test" / "tumor"}
    missing = [str(p) for p in folders.values() if not p.is_dir()]
    if missing:
        raise DataError(f"{root} is not in the BraTS layout: missing folder(s) {missing}.")

    def images_in(folder: Path) -> list[Path]:
        return [p for p in _list_files(folder) if p.parent == folder]

    errors: list[tuple[str, str]] = []
    warnings: list[str] = []
    train_paths = images_in(folders["train"])
    train_names = [p.name for p in train_paths]
    train_images, kept = _read_png_list(train_paths, train_names, size=size, errors=errors)
    kept_names = [train_names[i] for i in kept]
    if len(train_images) < MINIMUM_IMAGES:
        raise DataError(f"{root}: only {len(train_images)} training image(s) could be read; at least "
                        f"{MINIMUM_IMAGES} are needed.")  # fmt: skip
    patients = [_patient(n) for n in kept_names]
    train, val, val_subjects = _split_train_val(train_images, kept_names, patients, fraction=0.1, seed=seed)

    normal_paths = images_in(folders["normal"])
    tumor_paths = images_in(folders["tumor"])
    normal_images, normal_kept = _read_png_list(
        normal_paths, [p.name for p in normal_paths], size=size, errors=errors
    )
    tumor_images, tumor_kept = _read_png_list(
        tumor_paths, [p.name for p in tumor_paths], size=size, errors=errors
    )
    tumor_names = [tumor_paths[i].name for i in tumor_kept]
    annotation = root / "test" / "annotation"
    mask_paths = [annotation / name.replace("flair", "seg") for name in tumor_names]
    masks: list[np.ndarray] | None = None
    absent = [p.name for p in mask_paths if not p.is_file()]
    if absent:
        warnings.append(
            f"{len(absent)} tumour image(s) have no mask in test/annotation (e.g. {absent[0]}); pixel metrics "
            "are unavailable."
        )
    else:
        read_masks, mask_kept = _read_png_list(mask_paths, [p.name for p in mask_paths], size=size, errors=errors,
                                               mask=True)  # fmt: skip
        if len(mask_kept) == len(mask_paths):
            masks = [np.zeros((size, size), np.uint8) for _ in normal_kept] + read_masks
        else:
            warnings.append(
                "Some tumour masks could not be read (see errors); pixel metrics are unavailable."
            )
    names = [normal_paths[i].name for i in normal_kept] + tumor_names
    z_window = _layout_z_window(root)
    if z_window is not None:  # written by `ae4ad data build-brats`: PNG levels are standardised intensities
        from .brats import dequantise_z

        train = replace(train, images=dequantise_z(train.images))
        val = replace(val, images=dequantise_z(val.images))
        normal_images = [dequantise_z(i) for i in normal_images]
        tumor_images = [dequantise_z(i) for i in tumor_images]
        warnings.append(f"PNG levels read as standardised intensity (z in {z_window}), as split.json states.")
    test = _slice_set(normal_images + tumor_images, names, [_patient(n) for n in names],
                      [0] * len(normal_kept) + [1] * len(tumor_kept), masks)  # fmt: skip
    info = {"layout": "brats", "source": str(root), "size": size, "seed": seed, "errors": errors,
            "warnings": warnings, "val_subjects": val_subjects}  # fmt: skip
    description = (
        f"BraTS layout {root.name}: {len(train)} training and {len(val)} validation normal slices "
        f"(split by patient), {len(test)} test slices ({len(tumor_kept)} with tumour"
        f"{', pixel masks' if masks is not None else ', no pixel masks'})."
    )
    return Dataset(train=train, val=val, test=test, description=description, info=info)


def load_dataset(spec: str | Path, *, size: int = 128) -> Dataset:
    """Load ``"demo"`` or detect a folder's layout and load it.

    Parameters
    ----------
    spec : str or pathlib.Path
        ``"demo"`` for :func:`load_demo`; otherwise a folder: with ``data.json`` -> :func:`load_medianomaly`;
        with ``train/`` and ``test/tumor/`` -> :func:`load_brats_layout`; else :func:`load_folder`.
    size : int, default 128
        Output side in pixels (the demo is always 128).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If ``spec`` is neither ``"demo"`` nor an existing folder.
    """
    if isinstance(spec, str) and spec.strip().lower().startswith("real:"):
        from .brats import load_real

        return load_real(spec)
    if isinstance(spec, str) and spec.strip().lower() == "demo":
        dataset = load_demo()
        if size != dataset.train.images.shape[-1]:
            info = {
                **dataset.info,
                "warnings": [
                    *dataset.info.get("warnings", []),
                    f"The demo is {dataset.train.images.shape[-1]} px; size={size} is applied by preprocessing.",
                ],
            }
            return replace(dataset, info=info)  # fmt: skip
        return dataset
    root = Path(spec)
    if not root.is_dir():
        raise DataError(f"Data set {str(spec)!r} not found: give 'demo' or a folder of images.")
    if (root / "data.json").is_file():
        return load_medianomaly(root, size=size)
    if (root / "train").is_dir() and (root / "test" / "tumor").is_dir():
        return load_brats_layout(root, size=size)
    return load_folder(root, size=size)
