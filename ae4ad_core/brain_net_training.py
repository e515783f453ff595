"""Training the brain extraction U-Net (:mod:`ae4ad_core.brain_net`) on synthetic heads.

The idea is SynthStrip's (Hoopes et al., NeuroImage 260:119474, 2022): draw every training image from a label
map of a head, giving each label a random intensity, so the network cannot rely on one sequence's contrast.
No real whole head may be used here (the test heads, Colin27 and the TCGA case, are kept unseen), so the heads
are built from skull-stripped brains:

* **Brains**: the MNI ICBM152 2009a symmetric T1 template shipped in the ``nilearn`` wheel
  (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, skull-stripped, 1 mm; its
  nonzero voxels are the brain mask) and the BraTS 2013 brains in ``shared/data/brats2013/*/``
  (``brainmask.nii.gz``, ``T1c_subtrMeanDivStd.nii.gz``, tumour labels ``OTMultiClass.nii.gz``). Inside the
  brain, labels 1-5 are five intensity clusters (1D k-means of the T1 / T1c), 6-9 the BraTS tumour classes.
* **The rest of the head** is drawn around the brain: an "extended brain" (each axial footprint carried
  35 mm downwards, and what lies below the brain also 25 mm forwards, standing in for the skull base, face and
  neck; filled
  with four smooth random classes), then shells at a distance from the brain whose thickness varies smoothly
  over the surface -- a CSF/dura rim (0.5-2.5 mm), inner table, diploe, outer table, soft tissue in four
  smooth random classes (3-12 mm) and skin -- and air outside.

Each training slice (:func:`synthesise_slice`): a plane through the head, axial 70 % of the time (coronal and
sagittal 15 % each), tilted (about 8 degrees), rotated in plane (up to 25 degrees), flipped left-right half of
the time, scaled (0.9-1.1 per axis) and warped (a smooth random displacement of up to about 3 mm); a random
field of view (180-300 mm) on a random grid (96-288 pixels); 55 % of slices are thick (1.5-7 mm: the mean of
planes 1 mm apart); per-label Gaussian intensities, blur, a smooth bias field, gamma and noise; 3 % are
already skull-stripped (everything outside the brain is air). The target is the brain share of the slice's
planes above one half.

Validation never touches a test head: the synthetic stream of BraTS patient ``pat0006`` (never trained on) and
an MNI head with other random shells, drawn once with fixed seeds. It picks the checkpoint (global Dice) and
the probability threshold. :func:`evaluate_volumes` compares the network with the classical
:func:`~ae4ad_core.brain_extraction.extract_brain` on synthetic axial *volumes* of the held-out heads
(1, 3 and 5.5 mm slices).

Retrain (one CPU thread, deterministic seeds with ``--steps`` alone; the nilearn wheel is read as a zip file,
or an installed nilearn is used; the shipped weights came from two runs, the exact commands are in
``assets/brain_extractor/card.json`` under ``retrain``)::

    pip download nilearn==0.14.1 --no-deps -d /tmp/nl
    OMP_NUM_THREADS=1 python -m ae4ad_core.brain_net_training train \\
        --mni /tmp/nl/nilearn-0.14.1-py3-none-any.whl --brats ../shared/data/brats2013 --steps 1600 --out RUN1
    OMP_NUM_THREADS=1 python -m ae4ad_core.brain_net_training train --mni ... --brats ... \\
        --init RUN1 --lr 1e-3 --steps 1300 --out assets/brain_extractor
    OMP_NUM_THREADS=1 python -m ae4ad_core.brain_net_training evaluate --mni ... --brats ... \\
        --out assets/brain_extractor
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .brain_net import (
    CARD_FILE,
    WEIGHTS_FILE,
    BrainNetConfig,
    build_brain_net,
    postprocess_brain_mask,
    predict_brain_probability,
    prepare_slices,
    square_resize,
)
from .errors import DataError

__all__ = [
    "MNI_FILE",
    "Head",
    "load_mni152",
    "load_brats_brain",
    "build_head",
    "synthesise_slice",
    "synthesise_volume",
    "train_brain_net",
    "evaluate_volumes",
]

MNI_FILE = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TRAIN_BRATS = ("brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1")
VAL_BRATS = ("brats_2013_pat0006_1",)
N_LABELS = 32
LICENCE = (
    "The weights derive from BraTS 2013 brains (CC BY-NC-SA 3.0 CH: non-commercial, share alike, attribution; "
    "Menze et al., IEEE TMI 2015) and the MNI ICBM152 2009a template (MNI/McGill notice, Copyright (C) "
    "1993-2009 Louis Collins, McConnell Brain Imaging Centre; Fonov et al., NeuroImage 2011), so they carry "
    "CC BY-NC-SA 3.0 CH; see assets/ATTRIBUTION.md"
)

# label numbers of the synthetic heads
_TUMOUR = 6
_RIM, _INNER, _DIPLOE, _OUTER, _SKIN = 10, 11, 12, 13, 14
_SOFT, _FACE = 15, 19  # four classes each


@dataclass(frozen=True, eq=False)
class Head:
    """A synthetic head on a 1 mm RAS grid: ``labels`` (uint8, 0 = air, 1-9 brain), the centre of its brain
    and the bounding boxes of the head and of the brain (voxel indices, ``(2, 3)``)."""

    name: str
    labels: np.ndarray
    brain_centre: np.ndarray
    box: np.ndarray
    brain_box: np.ndarray


def _kmeans_1d(values: np.ndarray, k: int, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Cluster centres (sorted) and the label 0..k-1 of each value: Lloyd's algorithm from quantiles."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        edges = (centres[1:] + centres[:-1]) / 2
        labels = np.searchsorted(edges, values)
        centres = np.array(
            [values[labels == i].mean() if np.any(labels == i) else centres[i] for i in range(k)]
        )
        centres.sort()
    edges = (centres[1:] + centres[:-1]) / 2
    return centres, np.searchsorted(edges, values)


def _read_nifti(source: Path, member: str | None = None):
    import nibabel as nib

    if member is None:
        return nib.load(str(source))
    with zipfile.ZipFile(source) as archive:
        data = archive.read(member)
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def _find_mni(source: str | Path | None):
    """(image, description) of the MNI152 template: from a nilearn wheel, a folder or the installed nilearn."""
    if source is None:
        import importlib.util

        spec = importlib.util.find_spec("nilearn")
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                "nilearn is not installed: pass --mni with the nilearn wheel (pip download nilearn)."
            )
        path = Path(next(iter(spec.submodule_search_locations))).parent / MNI_FILE
        return _read_nifti(path), str(path)
    source = Path(source)
    if source.suffix == ".whl":
        return _read_nifti(source, MNI_FILE), f"{source.name}:{MNI_FILE}"
    path = source / MNI_FILE if (source / MNI_FILE).is_file() else source
    return _read_nifti(path), str(path)


def load_mni152(source: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The MNI152 2009a brain as ``(intensity labels 1-5 (uint8), brain mask, sha256 of the data)`` (RAS)."""
    image, _ = _find_mni(source)
    t1 = np.asarray(image.dataobj, dtype=np.float32)
    brain = ndi.binary_fill_holes(t1 > 0)
    labels = np.zeros(t1.shape, np.uint8)
    _, clusters = _kmeans_1d(t1[brain], 5)
    labels[brain] = 1 + clusters
    return labels, brain, hashlib.sha256(t1.tobytes()).hexdigest()


def load_brats_brain(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A BraTS brain as ``(labels, brain mask)`` on a RAS grid: five T1c clusters (1-5), tumour classes 6-9.

    The files are found as :func:`ae4ad_core.brats.find_patients` finds them (any BraTS naming); the brain mask
    is the release's own (BraTS 2013) or the nonzero T1c voxels.
    """
    from .brats import _load, find_patients
    from .io.nifti import reorient_to_ras

    patient = find_patients(folder)[0]
    if "t1c" not in patient.files:
        raise DataError(f"{patient.name}: no T1c volume (has {', '.join(patient.sequences)}).")

    def ras(path: Path) -> np.ndarray:
        data, affine = _load(path)
        return np.asarray(reorient_to_ras(np.asarray(data, dtype=np.float32), affine)[0])

    t1c = ras(patient.files["t1c"])
    brain = ndi.binary_fill_holes(ras(patient.files["brain"]) > 0.5 if "brain" in patient.files else t1c != 0)
    tumour = np.rint(ras(patient.files["seg"])).astype(int)
    labels = np.zeros(brain.shape, np.uint8)
    _, clusters = _kmeans_1d(t1c[brain], 5)
    labels[brain] = 1 + clusters
    inside = brain & (tumour > 0)
    labels[inside] = _TUMOUR + np.clip(tumour[inside] - 1, 0, 3)
    return labels, brain


def _smooth_field(shape: tuple, rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """A smooth random field of roughly unit spread (linear zoom of a coarse Gaussian grid)."""
    coarse = rng.standard_normal(tuple(max(2, min(cells, s)) for s in shape))
    return ndi.zoom(
        coarse,
        [s / c for s, c in zip(shape, coarse.shape, strict=True)],
        order=1,
        grid_mode=True,
        mode="nearest",
    )


def _classes(field: np.ndarray, k: int) -> np.ndarray:
    """Field -> k classes by its quantiles (0..k-1)."""
    return np.searchsorted(np.quantile(field, (np.arange(1, k)) / k), field)


def build_head(name: str, brain_labels: np.ndarray, brain: np.ndarray, *, seed: int) -> Head:
    """A whole head around a skull-stripped brain (see the module notes); random shells from ``seed``."""
    rng = np.random.default_rng(seed)
    pad = ((30, 30), (35, 35), (45, 25))
    labels = np.pad(brain_labels, pad)
    brain = np.pad(brain, pad)
    extended = brain.copy()
    for k in range(1, 36):  # each axial footprint carried 35 mm downwards
        extended[:, :, :-k] |= brain[:, :, k:]
    face = np.zeros_like(extended)
    face[:, 25:] = (extended & ~brain)[:, :-25]  # what lies below the brain, carried 25 mm forwards
    extended |= face
    d_brain = ndi.distance_transform_edt(~brain).astype(np.float32)
    d_extended = ndi.distance_transform_edt(~extended).astype(np.float32)
    small = tuple(s // 4 for s in labels.shape)

    def upsample(field: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        t = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None, None]
        return F.interpolate(t, size=labels.shape, mode="trilinear", align_corners=False)[0, 0].numpy()

    def thickness(low: float, high: float) -> np.ndarray:
        return np.clip(rng.uniform(low, high) * (1 + 0.35 * upsample(_smooth_field(small, rng))), 0.3, None)

    rim = thickness(0.5, 2.5)
    inner = rim + thickness(1.0, 2.5)
    diploe = inner + thickness(1.0, 5.0)
    outer = diploe + thickness(1.0, 2.5)
    skin_in = outer + thickness(3.0, 12.0)
    skin_out = skin_in + thickness(1.0, 2.0)
    head = np.zeros(labels.shape, np.uint8)
    inside = d_extended <= skin_out
    soft = _classes(upsample(_smooth_field(small, rng, cells=12)), 4)
    head[inside] = _SOFT + soft[inside]
    head[inside & (d_extended > skin_in)] = _SKIN
    below = extended & ~brain
    face_classes = _classes(upsample(_smooth_field(small, rng, cells=10)), 4)
    head[below] = _FACE + face_classes[below]
    for limit, label in ((outer, _OUTER), (diploe, _DIPLOE), (inner, _INNER), (rim, _RIM)):
        shell = (d_brain > 0) & (d_brain <= limit)
        head[shell] = label
    head[brain] = labels[brain]
    coords = [np.nonzero(head.any(axis=tuple(a for a in range(3) if a != i)))[0] for i in range(3)]
    box = np.array([[c.min() for c in coords], [c.max() for c in coords]], dtype=float)
    inside = np.nonzero(brain[::2, ::2, ::2])
    centre = np.array([c.mean() for c in inside]) * 2
    brain_box = np.array([[c.min() for c in inside], [c.max() for c in inside]], dtype=float) * 2
    return Head(name=name, labels=head, brain_centre=centre, box=box, brain_box=brain_box)


def _is_brain(labels: np.ndarray) -> np.ndarray:
    return (labels >= 1) & (labels < _RIM)


# (rows, columns, normal) of the planes in RAS: anterior up and the patient's right on the left for axial
_ORIENTATIONS = {
    "axial": ((0.0, -1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "coronal": ((0.0, 0.0, -1.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),
}


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _random_basis(
    rng: np.random.Generator, orientation: str, *, tilt_deg: float = 8.0, spin_deg: float = 25.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, v, n = (np.array(a) for a in _ORIENTATIONS[orientation])
    spin = np.deg2rad(rng.uniform(-180, 180) if rng.random() < 0.05 else rng.uniform(-spin_deg, spin_deg))
    tilt = _rotation(rng.standard_normal(3), np.deg2rad(rng.normal(0, tilt_deg))) @ _rotation(n, spin)
    u, v, n = tilt @ u, tilt @ v, tilt @ n
    if rng.random() < 0.5:
        v = -v
    return u, v, n


def _random_contrast(rng: np.random.Generator) -> dict:
    mu = rng.uniform(0, 1, N_LABELS)
    mu[0] = rng.uniform(0, 0.1) if rng.random() < 0.9 else rng.uniform(0, 0.5)
    return {
        "mu": mu.astype(np.float32),
        "sigma": rng.uniform(0, 0.08, N_LABELS).astype(np.float32),
        "blur": rng.uniform(0, 1.5) if rng.random() < 0.6 else 0.0,
        "bias": rng.uniform(0, 0.35),
        "gamma": float(np.exp(rng.normal(0, 0.3))),
        "noise": rng.uniform(0, 0.06),
        "stripped": rng.random() < 0.03,
        "scale": float(np.exp(rng.uniform(0, 8))),
    }


def _sample_labels(head: Head, centre, u, v, n, shape, spacing, offsets, displacement=None) -> np.ndarray:
    """Labels ``(P, H, W)`` of planes through ``centre`` spanned by ``u`` (rows) and ``v`` (columns), one per
    offset (mm) along ``n``; ``spacing`` is (row, column) mm; ``displacement`` (2, H, W) mm in-plane."""
    h, w = shape
    rows = (np.arange(h) - h / 2 + 0.5) * spacing[0]
    cols = (np.arange(w) - w / 2 + 0.5) * spacing[1]
    a, b = np.meshgrid(rows, cols, indexing="ij")
    if displacement is not None:
        a, b = a + displacement[0], b + displacement[1]
    plane = centre[:, None, None] + u[:, None, None] * a + v[:, None, None] * b
    points = plane[:, None] + np.asarray(offsets, dtype=float)[None, :, None, None] * n[:, None, None, None]
    return ndi.map_coordinates(head.labels, points.reshape(3, -1), order=0, mode="constant", cval=0).reshape(
        len(offsets), h, w
    )


def _render(labels: np.ndarray, contrast: dict, rng: np.random.Generator, bias: np.ndarray | None = None):
    """``(P, H, W)`` labels -> (image ``(H, W)`` float32, brain share ``(H, W)``): the mean of the planes."""
    brain = _is_brain(labels)
    if contrast["stripped"]:
        labels = np.where(brain, labels, 0)
    image = contrast["mu"][labels] + contrast["sigma"][labels] * rng.standard_normal(labels.shape, np.float32)
    image = image.mean(axis=0)
    if contrast["blur"] > 0:
        image = ndi.gaussian_filter(image, contrast["blur"])
    if bias is None:
        bias = _smooth_field(image.shape, rng, cells=4)
    image = np.clip(image * np.exp(contrast["bias"] * bias), 0, None)
    image = (image / max(float(image.max()), 1e-6)) ** contrast["gamma"]
    noise = contrast["noise"]
    image = np.hypot(
        image + noise * rng.standard_normal(image.shape), noise * rng.standard_normal(image.shape)
    )
    return (image * contrast["scale"]).astype(np.float32), brain.mean(axis=0).astype(np.float32)


def _thick_offsets(thickness: float) -> np.ndarray:
    if thickness <= 1.0:
        return np.zeros(1)
    return np.linspace(-thickness / 2, thickness / 2, int(np.ceil(thickness / 1.5)) + 1)


def synthesise_slice(head: Head, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random training slice of ``head``: (image ``(H, W)`` float32 in an arbitrary unit, brain share
    ``(H, W)`` in ``[0, 1]``). See the module notes for the distributions."""
    r = rng.random()
    orientation = "axial" if r < 0.7 else ("coronal" if r < 0.85 else "sagittal")
    u, v, n = _random_basis(rng, orientation)
    size = int(rng.integers(96, 225))
    fov = rng.uniform(180, 300)
    shape = [size, size]
    if rng.random() < 0.3:
        shape[int(rng.integers(2))] = int(size * rng.uniform(0.75, 1.0))
    pixel = fov / size
    spacing = (pixel * rng.uniform(0.9, 1.1), pixel * rng.uniform(0.9, 1.1))
    amp = rng.uniform(0, 3)
    displacement = np.stack([_smooth_field(tuple(shape), rng, cells=5) * amp for _ in range(2)])
    box = head.brain_box if rng.random() < 0.8 else head.box
    corners = np.array([[box[i][0], box[j][1], box[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    along = (corners - head.brain_centre) @ n
    centre = head.brain_centre + rng.normal(0, 10) * u + rng.normal(0, 10) * v
    centre = centre + rng.uniform(along.min(), along.max()) * n
    thickness = 1.0 if rng.random() < 0.45 else rng.uniform(1.5, 7.0)
    labels = _sample_labels(head, centre, u, v, n, shape, spacing, _thick_offsets(thickness), displacement)
    return _render(labels, _random_contrast(rng), rng)


def _fixed_contrast(name: str, rng: np.random.Generator) -> dict:
    """A textbook-like T1- or T2-weighted contrast for the labels (for validation volumes only)."""
    mu = np.full(N_LABELS, 0.5, np.float32)
    if name == "t1":
        brain, tumour = [0.15, 0.35, 0.5, 0.62, 0.72], [0.3, 0.4, 0.35, 0.85]
        outside = {_RIM: 0.12, _INNER: 0.05, _DIPLOE: 0.6, _OUTER: 0.05, _SKIN: 0.5}
        soft, face, background = [0.9, 0.35, 0.5, 0.7], [0.05, 0.35, 0.8, 0.5], 0.02
    else:
        brain, tumour = [0.9, 0.6, 0.5, 0.42, 0.38], [0.8, 0.75, 0.6, 0.5]
        outside = {_RIM: 0.9, _INNER: 0.05, _DIPLOE: 0.45, _OUTER: 0.05, _SKIN: 0.4}
        soft, face, background = [0.7, 0.25, 0.4, 0.55], [0.05, 0.25, 0.7, 0.9], 0.02
    mu[0] = background
    mu[1:6], mu[_TUMOUR : _TUMOUR + 4] = brain, tumour
    for label, value in outside.items():
        mu[label] = value
    mu[_SOFT : _SOFT + 4], mu[_FACE : _FACE + 4] = soft, face
    return {
        "mu": mu,
        "sigma": np.full(N_LABELS, 0.03, np.float32),
        "blur": 0.5,
        "bias": 0.15,
        "gamma": 1.0,
        "noise": 0.02,
        "stripped": False,
        "scale": 1000.0,
    }


def synthesise_volume(
    head: Head,
    rng: np.random.Generator,
    *,
    thickness: float,
    size: int = 256,
    pixel: float = 0.94,
    contrast: str = "random",
) -> tuple[np.ndarray, np.ndarray]:
    """An axial stack ``(N, size, size)`` through the whole head (slices ``thickness`` mm apart and thick, one
    contrast -- ``"random"``, ``"t1"`` or ``"t2"`` -- and bias field, a small tilt) and its brain mask
    ``(N, size, size)`` bool."""
    u, v, n = _random_basis(rng, "axial", tilt_deg=5.0, spin_deg=10.0)
    contrast = _random_contrast(rng) if contrast == "random" else _fixed_contrast(contrast, rng)
    contrast["stripped"] = False
    bias = _smooth_field((size, size), rng, cells=4)
    along = (head.box - head.brain_centre) @ n
    positions = np.arange(along.min() + thickness / 2, along.max(), thickness)
    images, masks = [], []
    for t in positions:
        labels = _sample_labels(
            head, head.brain_centre + t * n, u, v, n, (size, size), (pixel, pixel), _thick_offsets(thickness)
        )
        image, brain = _render(labels, contrast, rng, bias)
        images.append(image)
        masks.append(brain > 0.5)
    return np.stack(images), np.stack(masks)


def _heads(mni: str | Path | None, brats: str | Path, *, seed: int, cache: Path | None, log) -> dict:
    """The training and validation heads (``{"train": [...], "val": [...]}``), cached as .npz when asked."""
    brats = Path(brats)
    plan = [("train", "mni152-a", None, seed + 1), ("train", "mni152-b", None, seed + 2)]
    plan += [("train", name, name, seed + 3 + i) for i, name in enumerate(TRAIN_BRATS)]
    plan += [("val", "mni152-val", None, seed + 101)]
    plan += [("val", name, name, seed + 102 + i) for i, name in enumerate(VAL_BRATS)]
    heads: dict = {"train": [], "val": [], "mni_sha256": None}
    mni_brain = None
    for split, name, folder, head_seed in plan:
        path = cache / f"{name}-{head_seed}.npz" if cache else None
        if path is not None and path.is_file():
            data = np.load(path)
            head = Head(name, data["labels"], data["brain_centre"], data["box"], data["brain_box"])
        else:
            t0 = time.perf_counter()
            if folder is None:
                if mni_brain is None:
                    *mni_brain, heads["mni_sha256"] = load_mni152(mni)
                labels, brain = mni_brain
            else:
                labels, brain = load_brats_brain(brats / folder)
            head = build_head(name, labels, brain, seed=head_seed)
            log(f"head {name} (seed {head_seed}) built in {time.perf_counter() - t0:.0f} s")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(
                    path,
                    labels=head.labels,
                    brain_centre=head.brain_centre,
                    box=head.box,
                    brain_box=head.brain_box,
                )
        heads[split].append(head)
    return heads


def _dice_loss(logits, target):
    import torch

    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * inter + 1) / (total + 1)).mean()


def _batch(heads: list, rng: np.random.Generator, size: int, n: int):
    import torch

    images, targets = [], []
    for _ in range(n):
        head = heads[int(rng.integers(len(heads)))]
        image, brain = synthesise_slice(head, rng)
        images.append(prepare_slices(image, size)[0])
        targets.append(square_resize(brain, size)[0])
    return torch.cat(images), torch.cat(targets).clamp(0, 1)


def _validate(model, config: BrainNetConfig, samples: list, thresholds=(0.5,)) -> dict:
    """Global Dice (all validation pixels pooled) at each threshold, and the mean Dice of slices with brain."""
    from .brain_extraction import dice_coefficient

    was_training = model.training
    model.eval()
    inter = np.zeros(len(thresholds))
    total = np.zeros(len(thresholds))
    per_slice = []
    for image, brain in samples:
        prob = predict_brain_probability(image, model, config)[0]
        truth = brain > 0.5
        for i, t in enumerate(thresholds):
            pred = prob > t
            inter[i] += np.logical_and(pred, truth).sum()
            total[i] += pred.sum() + truth.sum()
            if t == 0.5 and truth.sum() > 200:
                per_slice.append(dice_coefficient(pred, truth))
    model.train(was_training)
    dice = 2 * inter / np.maximum(total, 1)
    return {
        "dice": {f"{t:g}": round(float(d), 4) for t, d in zip(thresholds, dice, strict=True)},
        "mean_slice_dice": round(float(np.mean(per_slice)), 4) if per_slice else None,
    }


def train_brain_net(
    out: str | Path,
    *,
    mni: str | Path | None,
    brats: str | Path,
    steps: int = 3000,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    minutes: float | None = None,
    eval_every: int = 250,
    val_slices: int = 160,
    config: BrainNetConfig | None = None,
    cache: str | Path | None = None,
    init: str | Path | None = None,
    log=print,
) -> dict:
    """Train the U-Net on synthetic slices and write ``model.safetensors`` and ``card.json`` into ``out``.

    One CPU thread, seeds fixed (``seed``); the checkpoint with the best global validation Dice and the
    validation-best probability threshold are kept. ``minutes`` stops early (the card says so). ``init``: a
    folder with earlier weights to continue from (the same heads and validation slices, a new stream of
    training slices). Returns the card.
    """
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    config = config or BrainNetConfig()
    t_start = time.perf_counter()
    heads = _heads(mni, brats, seed=seed, cache=Path(cache) if cache else None, log=log)
    val_rng = np.random.default_rng(seed + 10_000)
    val = [synthesise_slice(heads["val"][i % len(heads["val"])], val_rng) for i in range(val_slices)]
    rng = np.random.default_rng(seed if init is None else seed + 1)
    model = build_brain_net(config)
    previous = None
    if init is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(init) / WEIGHTS_FILE)))
        previous = json.loads((Path(init) / CARD_FILE).read_text())["training"]
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = min(100, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: (
            (s + 1) / warmup if s < warmup else 0.5 * (1 + np.cos(np.pi * (s - warmup) / (steps - warmup)))
        ),
    )
    bce = torch.nn.BCEWithLogitsLoss()
    history, best, best_state, losses = [], -1.0, None, []
    t_train = time.perf_counter()
    step = 0
    for step in range(1, steps + 1):
        x, y = _batch(heads["train"], rng, config.size, batch)
        logits = model(x)
        loss = bce(logits, y) + _dice_loss(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        out_of_time = minutes is not None and time.perf_counter() - t_train > 60 * minutes
        if step % eval_every == 0 or step == steps or out_of_time:
            result = _validate(model, config, val)
            record = {
                "step": step,
                "loss": round(float(np.mean(losses[-eval_every:])), 4),
                "val_dice": result["dice"]["0.5"],
                "val_mean_slice_dice": result["mean_slice_dice"],
                "minutes": round((time.perf_counter() - t_train) / 60, 1),
            }
            history.append(record)
            log(json.dumps(record))
            if record["val_dice"] > best:
                best = record["val_dice"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if out_of_time:
            log(f"stopped after {step} steps: the {minutes:g} minute limit")
            break
    model.load_state_dict(best_state)
    thresholds = (0.3, 0.4, 0.5, 0.6, 0.7)
    sweep = _validate(model, config, val, thresholds)
    threshold = float(max(sweep["dice"], key=lambda t: sweep["dice"][t]))
    config = BrainNetConfig(size=config.size, channels=config.channels, threshold=threshold)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    card = {
        "name": "brain_extractor",
        "task": "brain mask of a whole-head MR slice (any sequence), slice by slice",
        "config": config.to_dict(),
        "architecture": (
            f"2D U-Net, {len(config.channels)} levels, channels {list(config.channels)}, two 3x3 conv + "
            "batch norm + ReLU per level, max-pool down, bilinear up + skip concatenation, 1x1 conv to one "
            f"logit; {sum(p.numel() for p in model.parameters())} parameters"
        ),
        "input": (
            f"each slice normalised by ae4ad_core.brain_net.normalise_slices (0.5th-99.5th percentile -> 0-1, "
            f"clipped), zero-padded to a centred square, resized to {config.size} x {config.size} (bilinear, "
            "antialiased); the probability is resized back, thresholded, holes filled and the largest 3D "
            "component kept"
        ),
        "training": {
            "method": "SynthStrip-style synthetic heads (Hoopes et al., NeuroImage 260:119474, 2022): random "
            "per-label intensities, deformation, blur, bias, gamma, noise, slice thickness 1-7 mm; see "
            "ae4ad_core/brain_net_training.py",
            "brains": [
                "MNI ICBM152 2009a symmetric T1 (nilearn 0.14.1 wheel, " + MNI_FILE + ")",
                *[f"BraTS 2013 {n} (brain mask, T1c, tumour labels)" for n in TRAIN_BRATS],
            ],
            "validation": [
                "MNI ICBM152 head with other random shells",
                *[f"BraTS 2013 {n}" for n in VAL_BRATS],
            ],
            "mni_sha256": heads["mni_sha256"],
            "steps_done": step,
            "steps_planned": steps,
            "batch": batch,
            "optimiser": f"AdamW lr {lr:g}, weight decay 1e-4, warm-up {warmup} steps then cosine",
            "loss": "binary cross-entropy + soft Dice",
            "seed": seed,
            "threads": 1,
            "minutes": round((time.perf_counter() - t_start) / 60, 1),
            "best_val_dice": best,
            "threshold_sweep": sweep,
            "history": history,
            "continued_from": previous,
        },
        "licence": LICENCE,
        "retrain": "pip download nilearn==0.14.1 --no-deps -d /tmp/nl; OMP_NUM_THREADS=1 python -m "
        "ae4ad_core.brain_net_training train --mni /tmp/nl/nilearn-0.14.1-py3-none-any.whl --brats "
        f"../shared/data/brats2013 --steps {steps} --seed {seed} --lr {lr:g}"
        + (f" --minutes {minutes:g}" if minutes else "")
        + (" --init FOLDER_OF_THE_RUN_IN_continued_from" if init else "")
        + " --out assets/brain_extractor",
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return card


def evaluate_volumes(
    folder: str | Path,
    *,
    mni: str | Path | None,
    brats: str | Path,
    seed: int = 0,
    thicknesses=(1.0, 3.0, 5.5),
    contrasts=("t1", "t2", "random"),
    cache: str | Path | None = None,
    log=print,
) -> dict:
    """Dice of the network and of the classical :func:`~ae4ad_core.brain_extraction.extract_brain` on
    synthetic axial volumes of the validation heads (never trained on), one volume per head and thickness."""
    import torch

    from .brain_extraction import dice_coefficient, extract_brain
    from .brain_net import load_brain_net

    torch.set_num_threads(1)
    heads = _heads(mni, brats, seed=seed, cache=Path(cache) if cache else None, log=log)["val"]
    model, config = load_brain_net(str(folder))
    rng = np.random.default_rng(seed + 20_000)
    rows = []
    for head in heads:
        for thickness in thicknesses:
            for contrast in contrasts:
                volume, truth = synthesise_volume(head, rng, thickness=thickness, contrast=contrast)
                t0 = time.perf_counter()
                net = postprocess_brain_mask(
                    predict_brain_probability(volume, model, config) > config.threshold
                )
                t_net = time.perf_counter() - t0
                try:
                    classical = extract_brain(volume, spacing=(0.94, 0.94), slice_thickness=thickness).mask
                except DataError:
                    classical = np.zeros_like(truth)
                row = {
                    "head": head.name,
                    "thickness_mm": thickness,
                    "contrast": contrast,
                    "slices": len(volume),
                    "net_dice": round(dice_coefficient(net, truth), 4),
                    "classical_dice": round(dice_coefficient(classical, truth), 4),
                    "net_ms_per_slice": round(1000 * t_net / len(volume), 1),
                }
                rows.append(row)
                log(json.dumps(row))
    summary: dict = {"volumes": rows}
    for contrast in contrasts:
        for method in ("net", "classical"):
            dice = [r[f"{method}_dice"] for r in rows if r["contrast"] == contrast]
            summary[f"{method}_mean_dice_{contrast}"] = round(float(np.mean(dice)), 4)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ae4ad_core.brain_net_training", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("train", "evaluate"))
    parser.add_argument(
        "--mni", help="nilearn wheel or folder holding " + MNI_FILE + " (default: installed nilearn)"
    )
    parser.add_argument("--brats", default=str(Path(__file__).resolve().parents[2] / "shared/data/brats2013"))
    parser.add_argument("--out", default="assets/brain_extractor")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--cache", help="folder to keep the built heads in (.npz, about 20 MB each)")
    parser.add_argument("--init", help="folder with weights to continue from (model.safetensors, card.json)")
    args = parser.parse_args(argv)
    if args.command == "train":
        train_brain_net(
            args.out,
            mni=args.mni,
            brats=args.brats,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed,
            minutes=args.minutes,
            eval_every=args.eval_every,
            cache=args.cache,
            init=args.init,
            log=lambda m: print(m, flush=True),
        )
    else:
        summary = evaluate_volumes(
            args.out,
            mni=args.mni,
            brats=args.brats,
            seed=args.seed,
            cache=args.cache,
            log=lambda m: print(m, flush=True),
        )
        card_path = Path(args.out) / CARD_FILE
        card = json.loads(card_path.read_text())
        card["validation_volumes"] = summary
        card["licence"] = LICENCE
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(json.dumps({k: v for k, v in summary.items() if k != "volumes"}))


if __name__ == "__main__":
    main()
