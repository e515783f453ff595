"""Anomaly maps as NIfTI volumes in the input's own voxel grid and affine (the MOOD challenge format).

Research users and evaluation scripts read these directly: voxel ``(i, j, k)`` of the map is the anomaly value
of voxel ``(i, j, k)`` of the scan.

* For a NIfTI input the map is put back through the reader's own reorientation
  (:func:`ae4ad_core.io.nifti.volume_to_slices` applied to an index volume), so it is the exact inverse of how
  the slices were cut, and written with the source's affine.
* For a DICOM series the grid is the series' (columns, rows, slices in the reader's order) and the affine comes
  from Image Position/Orientation (Patient) and Pixel Spacing, converted from DICOM's LPS to NIfTI's RAS.

Maps hold de-identified data only (no header text is copied from the source).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import UnsupportedImageError

__all__ = ["map_stack", "nifti_map_like_nifti", "nifti_map_like_dicom_series", "write_nifti_map"]


def map_stack(analyses: Sequence, n_slices: int, shape: tuple[int, int]) -> np.ndarray:
    """``(n_slices, H, W)`` float32 of one or more :class:`~ae4ad_core.analysis.Analysis` of the same input:
    every scored slice's map at the input resolution, zero on slices that were not scored."""
    out = np.zeros((n_slices, *shape), np.float32)
    for analysis in analyses:
        for i, idx in enumerate(analysis.slice_indices):
            out[idx] = analysis.map_in_input_space(i)
    return out


def nifti_map_like_nifti(source: Path | str, maps: np.ndarray, *, slice_axis: str = "axial"):
    """A ``nibabel.Nifti1Image`` holding ``maps`` (the reader's ``(N, H, W)`` slice stack) in the voxel grid
    and affine of the NIfTI file ``source``."""
    import nibabel as nib

    from .io.nifti import volume_to_slices

    img = nib.load(str(source))
    shape = tuple(int(s) for s in img.shape[:3])
    if len(shape) < 3:
        shape = shape + (1,) * (3 - len(shape))
    index = np.arange(int(np.prod(shape))).reshape(shape)
    stack = volume_to_slices(index, img.affine, slice_axis)[0]
    if stack.shape != maps.shape:
        raise UnsupportedImageError(
            f"{Path(source).name}: the map stack {maps.shape} does not match the file's slices {stack.shape}."
        )
    flat = np.zeros(index.size, np.float32)
    flat[stack.ravel()] = maps.ravel()
    out = nib.Nifti1Image(flat.reshape(shape), img.affine)
    out.header.set_xyzt_units("mm")
    return out


def nifti_map_like_dicom_series(datasets: Sequence, maps: np.ndarray):
    """A ``nibabel.Nifti1Image`` of ``maps`` ``(N, rows, cols)`` for a DICOM series whose pydicom ``datasets``
    are in the same (reader's) slice order."""
    import nibabel as nib

    first = datasets[0]
    try:
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient], float)
        ipp0 = np.asarray([float(v) for v in first.ImagePositionPatient], float)
        row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        raise UnsupportedImageError(
            "The DICOM series lacks Image Position/Orientation (Patient) or Pixel Spacing: no voxel grid to "
            "write a NIfTI map in."
        ) from None
    x_dir, y_dir = iop[:3], iop[3:]
    if len(datasets) > 1:
        step = np.asarray([float(v) for v in datasets[-1].ImagePositionPatient], float) - ipp0
        step = step / (len(datasets) - 1)
    else:
        step = np.cross(x_dir, y_dir) * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = x_dir * col_mm  # voxel index i runs along a row (columns)
    lps[:3, 1] = y_dir * row_mm  # j runs down the rows
    lps[:3, 2] = step
    lps[:3, 3] = ipp0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    data = np.ascontiguousarray(np.transpose(maps, (2, 1, 0)), dtype=np.float32)  # (cols, rows, slices)
    out = nib.Nifti1Image(data, affine)
    out.header.set_xyzt_units("mm")
    return out


def write_nifti_map(image, analyses: Sequence, out: Path | str, *, source: Path | str | None = None,
                    datasets: Sequence | None = None, stem: str, mode: str) -> Path:  # fmt: skip
    """Write ``<stem>_<mode>_map.nii.gz`` in ``out`` for a NIfTI volume (``source`` = its path) or a DICOM
    series (``datasets`` = its pydicom datasets in the reader's order). Returns the path.

    Raises
    ------
    UnsupportedImageError
        For a 2D input (PNG, a single DICOM slice): those keep their PNG maps.
    """
    maps = map_stack(analyses, image.n_slices, tuple(image.pixels.shape[1:]))
    if image.format == "nifti" and source is not None:
        nii = nifti_map_like_nifti(source, maps, slice_axis=image.metadata.get("slice_axis", "axial"))
    elif image.format == "dicom-series" and datasets:
        nii = nifti_map_like_dicom_series(datasets, maps)
    else:
        raise UnsupportedImageError(f"{image.name}: NIfTI maps need a NIfTI volume or a DICOM series.")
    import nibabel as nib

    path = Path(out) / f"{stem}_{mode}_map.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nii, str(path))
    return path
