"""NIfTI-1 and NIfTI-2 single files (``.nii``; ``.nii.gz`` once the dispatcher has unwrapped the gzip stream).

Volumes are reoriented to the closest canonical RAS+ axes and each slice is laid out in the radiological
convention (see :mod:`ae4ad_core.io` for the details); only the first 3-D volume of a 4-D file is read.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImageTooLargeError, UnreadableImageError, UnsupportedImageError
from .image import (
    _MAX_PIXELS_ENVIRONMENT_VARIABLE,
    Image,
    ImageReader,
    ReadOptions,
    _luminance,
    _reason,
    _replace_non_finite,
    _select,
)

__all__ = ["NiftiReader"]


class NiftiReader(ImageReader):
    """Reads NIfTI-1 and NIfTI-2 single files (the ``n+1`` / ``n+2`` magic), little or big endian."""

    name = "nifti"
    kinds = frozenset({"nifti1", "nifti2"})
    title = "NIfTI"

    def read(self, data: bytes, label: str, options: ReadOptions, *, kind: str | None = None) -> Image:
        kind = self._checked_kind(data, label, kind)
        return _read_nifti(
            data,
            label,
            version=2 if kind == "nifti2" else 1,
            frames=options.frames,
            slice_axis=options.slice_axis,
            include_identifiers=options.include_identifiers,
            max_pixels=options.max_pixels,
            applied=list(options.applied),
        )


@dataclass(frozen=True)
class _NiftiLayout:
    shape: tuple[int, int, int]
    volumes: int
    original_shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    end: int


def _nifti_header(data: bytes, label: str, *, version: int):
    import nibabel

    header_class = nibabel.Nifti1Header if version == 1 else nibabel.Nifti2Header
    try:
        return header_class.from_fileobj(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - nibabel raises HeaderDataError, struct.error, ...
        raise UnreadableImageError(f"{label}: corrupt NIfTI header ({_reason(error)})") from None


def _nifti_layout(header, label: str, max_pixels: int) -> _NiftiLayout:
    """Shape, dtype and byte range of the first 3-D volume, checked against the pixel cap."""
    shape = tuple(int(size) for size in header.get_data_shape())
    if len(shape) < 2 or any(size <= 0 for size in shape):
        raise UnsupportedImageError(f"{label}: NIfTI image of shape {shape} is not a 2-D, 3-D or 4-D image")
    volume = shape[:3] if len(shape) >= 3 else (*shape, 1)
    volumes = math.prod(shape[3:]) if len(shape) > 3 else 1
    voxels = math.prod(volume)
    if voxels > max_pixels:
        raise ImageTooLargeError(
            f"{label}: NIfTI declares a {'x'.join(map(str, volume))} volume = {voxels} pixels, over the cap of "
            f"{max_pixels}; raise max_pixels or {_MAX_PIXELS_ENVIRONMENT_VARIABLE}"
        )
    dtype = np.dtype(header.get_data_dtype())
    offset = int(header.get_data_offset())
    if offset < 0:
        raise UnreadableImageError(f"{label}: corrupt NIfTI header (negative data offset {offset})")
    return _NiftiLayout(
        shape=volume,
        volumes=volumes,
        original_shape=shape,
        dtype=dtype,
        offset=offset,
        end=offset + voxels * dtype.itemsize,
    )


def _read_nifti(
    data: bytes,
    label: str,
    *,
    version: int,
    frames: tuple[int, ...] | None,
    slice_axis: str,
    include_identifiers: bool,
    max_pixels: int,
    applied: list[str],
) -> Image:
    header = _nifti_header(data, label, version=version)
    layout = _nifti_layout(header, label, max_pixels)
    if len(data) < layout.end:
        raise UnreadableImageError(
            f"{label}: truncated NIfTI (image data ends after {max(len(data) - layout.offset, 0)} of "
            f"{layout.end - layout.offset} bytes)"
        )
    steps = list(applied)
    if layout.volumes > 1:
        steps.append(f"kept the first of {layout.volumes} volumes")
    dtype = layout.dtype
    voxels = math.prod(layout.shape)
    converted = False
    if dtype.kind == "c":
        raise UnsupportedImageError(f"{label}: complex-valued NIfTI ({dtype}) is not supported")
    if dtype.names:  # RGB24 / RGBA32 structured voxels
        values = np.frombuffer(data, dtype=dtype, count=voxels, offset=layout.offset)
        channels = np.stack([values[channel].astype(np.float32) for channel in dtype.names[:3]], axis=-1)
        volume = _luminance(channels).reshape(layout.shape, order="F")
        steps.append("converted colour to grayscale (BT.601 luminance)")
        converted = True
    elif dtype.kind in "biuf":
        volume = np.frombuffer(data, dtype=dtype, count=voxels, offset=layout.offset).reshape(
            layout.shape, order="F"
        )
    else:
        raise UnsupportedImageError(f"{label}: NIfTI data type {dtype} is not supported")
    volume = volume.astype(np.float32)
    slope, intercept = header.get_slope_inter()
    if slope is not None and math.isfinite(slope) and (slope, intercept or 0.0) != (1.0, 0.0):
        volume *= np.float32(slope)
        volume += np.float32(intercept or 0.0)
        steps.append(f"applied scl_slope {slope:g} and scl_inter {intercept or 0.0:g}")

    stack, plane, orientation, source_codes, notes = volume_to_slices(volume, header.get_best_affine(), slice_axis)
    steps += notes
    zooms = [abs(float(size)) for size in header.get_zooms()[:3]] + [1.0] * max(
        0, 3 - len(header.get_zooms())
    )
    canonical_zooms = [1.0, 1.0, 1.0]  # voxel sizes along R, A, S; a zero or non-finite size counts as 1
    for axis, (new_axis, _) in enumerate(orientation):
        canonical_zooms[int(new_axis)] = (
            zooms[axis] if math.isfinite(zooms[axis]) and zooms[axis] > 0 else 1.0
        )
    stated_unit = header.get_xyzt_units()[0]
    unit_scale = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}.get(stated_unit, 1.0)  # unknown: mm by custom
    through, across, up = _PLANES[plane]
    chosen = _select(frames, stack.shape[0], label, "slice")
    stack = stack[chosen] if frames is not None else stack
    pixels = _replace_non_finite(np.ascontiguousarray(stack, dtype=np.float32), steps)
    spacing = (canonical_zooms[up] * unit_scale, canonical_zooms[across] * unit_scale)

    metadata: dict[str, Any] = {
        "format": "nifti",
        "nifti_version": version,
        "original_shape": list(layout.original_shape),
        "dtype": str(dtype if not dtype.names else "RGB"),
        "orientation": source_codes,
        "slice_axis": plane,
        "voxel_size": [canonical_zooms[axis] * unit_scale for axis in range(3)],
        "units": "mm"
        if stated_unit in {"meter", "mm", "micron"}
        else "mm (assumed: the file states no unit)",
        "shape": list(pixels.shape),
        "converted_to_grayscale": converted,
        "applied": steps,
    }
    if frames is not None:
        metadata["frames"] = chosen
    if include_identifiers:
        identifiers = {}
        for field_name in ("descrip", "aux_file", "db_name"):
            try:
                text = bytes(header[field_name]).split(b"\x00")[0].decode("latin-1").strip()
            except (KeyError, ValueError, TypeError):
                continue
            if text:
                identifiers[field_name] = text
        metadata["identifiers"] = identifiers
    return Image(pixels=pixels, name=label, format="nifti", metadata=metadata, spacing=spacing)


_PLANES = {"sagittal": (0, 1, 2), "coronal": (1, 0, 2), "axial": (2, 0, 1)}  # (through, across, up), RAS axes


def reorient_to_ras(volume: np.ndarray, affine: np.ndarray):
    """``volume`` with its axes permuted and flipped to the closest canonical RAS+ axes of ``affine``.

    Returns ``(canonical, orientation, source_axcodes, notes)``; an affine without a usable orientation is taken
    as RAS already (``source_axcodes`` ``"unknown"``, with a note).
    """
    from nibabel.orientations import apply_orientation, io_orientation, ornt2axcodes

    notes: list[str] = []
    orientation = io_orientation(affine)
    if np.isfinite(orientation).all():
        source_codes = "".join(ornt2axcodes(orientation))
    else:
        orientation = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
        source_codes = "unknown"
        notes.append("the affine has no usable orientation: assumed RAS")
    return apply_orientation(volume, orientation), orientation, source_codes, notes


def volume_to_slices(volume: np.ndarray, affine: np.ndarray, slice_axis: str = "axial"):
    """The reader's view of a 3D volume: reoriented to RAS with ``affine``, cut along ``slice_axis`` (a
    single-slice volume in its own plane), rows running from anterior/superior down and the patient's right
    on the left of each slice (radiological view).

    Returns ``(stack (N, H, W), plane, orientation, source_axcodes, notes)``; the same function maps an index
    volume, which is how :mod:`ae4ad_core.nifti_maps` writes maps back into the source voxel grid.
    """
    canonical, orientation, source_codes, notes = reorient_to_ras(volume, affine)
    plane = slice_axis
    through = _PLANES[plane][0]
    singleton = [axis for axis in range(3) if canonical.shape[axis] == 1]
    if len(singleton) == 1 and canonical.shape[through] != 1:
        plane = next(name for name, axes in _PLANES.items() if axes[0] == singleton[0])
        notes.append(f"single-slice image: shown in its own ({plane}) plane")
    through, across, up = _PLANES[plane]
    stack = np.transpose(canonical, (through, up, across))[:, ::-1, ::-1]
    return stack, plane, orientation, source_codes, notes
