"""DICOM series: group single-frame files by series, sort the slices along the slice normal, stack them.

:func:`read_dicom_series` stacks files the caller says belong together; :func:`~ae4ad_core.io.read_images`
groups the DICOM files of a batch with :func:`_series_key` (Series Instance UID and image size, used for
grouping only and never exposed) and reads each group with :func:`_read_group`.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import Ae4adError, ImageTooLargeError, UnreadableImageError, UnsupportedImageError, format_error
from .dicom import (
    _DICOM_KINDS,
    _check_decoder,
    _check_native_length,
    _decode_dicom,
    _dicom_int,
    _dicom_metadata,
    _dicom_spacing,
    _first_number,
    _has_pixel_data,
    _parse_dicom,
    _read_dicom,
)
from .image import (
    _MAX_PIXELS_ENVIRONMENT_VARIABLE,
    Image,
    _detect_format,
    _error_boundary,
    _load_item,
    _resolve_max_pixels,
)

__all__ = ["read_dicom_series"]


def read_dicom_series(
    sources: Sequence[str | os.PathLike | tuple[str, bytes]],
    *,
    include_identifiers: bool = False,
    max_pixels: int | None = None,
) -> Image:
    """Stack single-frame DICOM files of one series into a volume.

    Slices are sorted by Image Position (Patient) projected on the slice normal derived from Image
    Orientation (Patient); when positions are missing or coincide, by Instance Number; otherwise the input
    order is kept. ``metadata["sorted_by"]`` says which.

    Parameters
    ----------
    sources : sequence of path or (name, bytes)
        The files of the series, in any order.
    include_identifiers : bool
        Also return identifying fields of the first slice under ``metadata["identifiers"]``.
    max_pixels : int, optional
        Cap on the total number of pixels of the volume (see :func:`read_image`).

    Returns
    -------
    Image
        ``format="dicom-series"``, pixels ``(N, H, W)`` with one slice per file.

    Raises
    ------
    UnreadableImageError
        No file given, a file that is not a readable DICOM image, or files of different Rows/Columns.
    UnsupportedImageError
        A multi-frame file (read it with :func:`read_image`).
    ImageTooLargeError
        The files together declare more than ``max_pixels`` pixels.
    """
    limit = _resolve_max_pixels(max_pixels)
    items = [_load_item(source, limit) for source in sources]
    if not items:
        raise UnreadableImageError("DICOM series: no files were given.")
    series_name = _series_name([label for label, _ in items])
    datasets = []
    for label, data in items:
        with _error_boundary(label):
            kind = _detect_format(data)
            if kind not in _DICOM_KINDS:
                raise UnreadableImageError(
                    f"{label}: not a DICOM file, so it cannot be part of a DICOM series"
                )
            datasets.append(_parse_dicom(data, label, force=kind == "dicom-raw", max_pixels=limit))
    with _error_boundary(series_name):
        return _build_series(
            datasets,
            [label for label, _ in items],
            series_name,
            include_identifiers=include_identifiers,
            max_pixels=limit,
        )


def _series_name(labels: Sequence[str]) -> str:
    folders = {posixpath.dirname(label.replace("\\", "/")) for label in labels}
    if len(folders) == 1 and (folder := folders.pop()):
        return folder
    if len(labels) == 1:
        return labels[0]
    return f"{labels[0]} (+{len(labels) - 1} files)"


def _slice_order(datasets: Sequence[Any]) -> tuple[list[int], str, float | None]:
    """Order of the slices, the rule used and the median distance between slice positions (mm)."""
    count = len(datasets)
    positions = []
    try:
        orientation = np.asarray([float(value) for value in datasets[0].ImageOrientationPatient], dtype=float)
        normal = np.cross(orientation[:3], orientation[3:6])
        if orientation.size != 6 or not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
            raise ValueError("degenerate orientation")
        for dataset in datasets:
            position = np.asarray([float(value) for value in dataset.ImagePositionPatient], dtype=float)
            if position.size != 3 or not np.isfinite(position).all():
                raise ValueError("bad position")
            positions.append(float(position @ normal))
    except Exception:  # noqa: BLE001 - missing or malformed geometry: fall back to Instance Number
        positions = []
    if positions and len(set(positions)) == count:
        order = sorted(range(count), key=lambda index: (positions[index], index))
        steps = np.diff(sorted(positions))
        return order, "ImagePositionPatient", float(np.median(steps)) if steps.size else None
    numbers = [_first_number(dataset.get("InstanceNumber")) for dataset in datasets]
    if all(number is not None for number in numbers) and len(set(numbers)) == count:
        return sorted(range(count), key=lambda index: (numbers[index], index)), "InstanceNumber", None
    return list(range(count)), "input order", None


def _build_series(
    datasets: Sequence[Any],
    labels: Sequence[str],
    series_name: str,
    *,
    include_identifiers: bool,
    max_pixels: int,
) -> Image:
    """Check sizes and the cap on all headers, decode every slice, sort and stack."""
    sizes = []
    for dataset, label in zip(datasets, labels, strict=True):
        if not _has_pixel_data(dataset):
            raise UnreadableImageError(
                f"{label}: DICOM file has no pixel data (e.g. a structured report or RT plan)"
            )
        n_frames = _dicom_int(dataset, "NumberOfFrames", label, default=1)
        if n_frames != 1:
            raise UnsupportedImageError(
                f"{label}: multi-frame DICOM ({n_frames} frames) cannot be one slice of a series; read it alone"
            )
        sizes.append((_dicom_int(dataset, "Rows", label), _dicom_int(dataset, "Columns", label)))
    for label, size in zip(labels, sizes, strict=True):
        if size != sizes[0]:
            raise UnreadableImageError(
                f"{label}: {size[0]}x{size[1]} pixels, unlike {labels[0]} ({sizes[0][0]}x{sizes[0][1]}); "
                f"the files of one series must share Rows and Columns"
            )
    total = sizes[0][0] * sizes[0][1] * len(datasets)
    if total > max_pixels:
        raise ImageTooLargeError(
            f"{series_name}: {len(datasets)} slices of {sizes[0][0]}x{sizes[0][1]} = {total} pixels, over the cap "
            f"of {max_pixels}; raise max_pixels or {_MAX_PIXELS_ENVIRONMENT_VARIABLE}"
        )
    order, rule, slice_spacing = _slice_order(datasets)
    decoded = []
    for index in order:
        with _error_boundary(labels[index]):
            decoded.append(
                _decode_dicom(datasets[index], labels[index], frames=None, max_pixels=max_pixels, applied=[])
            )
    pixels = np.ascontiguousarray(np.concatenate([item.pixels for item in decoded]), dtype=np.float32)
    first = datasets[order[0]]
    metadata = _dicom_metadata(first, decoded[0], include_identifiers=include_identifiers)
    applied = []
    for item in decoded:
        applied.extend(step for step in item.applied if step not in applied)
    metadata.update(
        {
            "format": "dicom-series",
            "n_frames": 1,
            "n_slices": len(decoded),
            "shape": list(pixels.shape),
            "sorted_by": rule,
            "files": [labels[index] for index in order],
            "converted_to_grayscale": any(item.grayscale_converted for item in decoded),
            "applied": applied,
        }
    )
    metadata.pop("image_position", None)
    metadata.pop("slice_location", None)
    if slice_spacing is not None:
        metadata["slice_spacing"] = slice_spacing
    return Image(
        pixels=pixels,
        name=series_name,
        format="dicom-series",
        metadata=metadata,
        default_window=decoded[0].window,
        spacing=_dicom_spacing(first),
    )


def _parse_if_dicom(data: bytes, label: str, max_pixels: int):
    """The parsed dataset (pixels still encoded) of a DICOM file, or ``None`` when ``data`` is not DICOM.

    A DICOM file that cannot be parsed raises the error :func:`~ae4ad_core.io.read_image` would raise for it.
    The dataset serves both to group the file into a series and to read it alone: it is parsed only once.
    """
    if not data:
        return None
    kind = _detect_format(data)
    if kind not in _DICOM_KINDS:
        return None
    with _error_boundary(label):
        return _parse_dicom(data, label, force=kind == "dicom-raw", max_pixels=max_pixels)


def _series_key(dataset) -> tuple[str, int, int] | None:
    """Grouping key of a single-frame DICOM image that names its series, else ``None`` (read it alone)."""
    try:
        series = str(dataset.get("SeriesInstanceUID", "") or "")
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        key = (series, int(dataset.Rows), int(dataset.Columns))
    except Exception:  # noqa: BLE001 - reading the file alone reports what is wrong with its header
        return None
    if not series or frames != 1 or not _has_pixel_data(dataset):
        return None
    return key


def _read_group(
    members: list[tuple[str, Any]],
    errors: list[tuple[str, str]],
    *,
    include_identifiers: bool,
    max_pixels: int,
) -> list[Image]:
    """Decode the files of one series group; stack the ones that decode, report the others.

    A file repeating an earlier file's SOP Instance UID (the same image uploaded twice) is left out and
    reported; a group reduced to one file is read as a single image. Every reason appended to ``errors``
    starts with the name it is reported under (the file, or the series when stacking them failed).
    """
    unique: list[tuple[str, Any]] = []
    first_by_instance: dict[str, str] = {}
    for label, dataset in members:
        instance = str(dataset.get("SOPInstanceUID", "") or "")
        if instance in first_by_instance:
            first = first_by_instance[instance]
            errors.append((label, f"{label}: the same image as {first} (same SOP Instance UID); left out"))
            continue
        if instance:
            first_by_instance[instance] = label
        unique.append((label, dataset))
    if not unique:
        return []
    if len(unique) == 1:
        label, dataset = unique[0]
        try:
            with _error_boundary(label):
                image = _read_dicom(
                    dataset,
                    label,
                    frames=None,
                    include_identifiers=include_identifiers,
                    max_pixels=max_pixels,
                    applied=[],
                )
            return [image]
        except Ae4adError as error:
            errors.append((label, format_error(error, label)))
            return []
    good: list[tuple[str, Any]] = []
    for label, dataset in unique:
        try:
            with _error_boundary(label):
                transfer_syntax = dataset.file_meta.TransferSyntaxUID
                _check_decoder(transfer_syntax, label)
                _check_native_length(dataset, transfer_syntax, label)
            good.append((label, dataset))
        except Ae4adError as error:
            errors.append((label, format_error(error, label)))
    if len(good) < 2:  # one survivor is read on its own; none leaves nothing to stack
        return _read_group(good, errors, include_identifiers=include_identifiers, max_pixels=max_pixels)
    labels = [label for label, _ in good]
    name = _series_name(labels)
    try:
        with _error_boundary(name):
            image = _build_series(
                [dataset for _, dataset in good],
                labels,
                name,
                include_identifiers=include_identifiers,
                max_pixels=max_pixels,
            )
        return [image]
    except Ae4adError as error:  # about the series or one of its files: the reason starts with the series
        errors.append((name, format_error(error, name)))
        return []
