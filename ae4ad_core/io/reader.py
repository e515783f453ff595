"""One entry for every format: detect the format from the content, unwrap gzip, hand over to its reader.

:data:`READERS` lists one :class:`~ae4ad_core.io.image.ImageReader` per format family (DICOM, NIfTI,
Pillow). :func:`read_image` reads one file through them, :func:`read_images` a batch in which the single-frame
DICOM files of one series become one volume.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import (
    Ae4adError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedImageError,
    format_error,
    look_up_option,
)
from .dicom import DicomReader
from .dicom_series import _parse_if_dicom, _read_group, _series_key
from .image import (
    _SLICE_AXES,
    METADATA_LEVELS,
    Image,
    ImageReader,
    ReadOptions,
    _byte_cap,
    _check_frames_argument,
    _clean_name,
    _default_name,
    _detect_format,
    _error_boundary,
    _error_subject,
    _load_bytes,
    _load_item,
    _reason,
    _resolve_max_pixels,
)
from .nifti import NiftiReader, _nifti_header, _nifti_layout
from .pillow import PillowReader

__all__ = ["READERS", "read_image", "read_images"]

_GZIP_HEAD_BYTES = 64 * 1024

_DICOM_READER = DicomReader()
READERS: tuple[ImageReader, ...] = (_DICOM_READER, NiftiReader(), PillowReader())
"""The readers :func:`read_image` tries, in order; the first whose ``kinds`` holds the detected format reads."""


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    frames: Sequence[int] | None = None,
    slice_axis: str = "axial",
    include_identifiers: bool = False,
    max_pixels: int | None = None,
    metadata: str = "full",
) -> Image:
    """Read one DICOM, NIfTI, PNG, JPEG, TIFF, BMP, GIF or WebP file.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        Path of the file, or its content (for uploads).
    name : str, optional
        Name used in :attr:`Image.name` and in error messages; defaults to the file name of a path, or
        ``"image"`` for bytes.
    frames : sequence of int, optional
        Which frames (multi-frame DICOM, TIFF pages) or slices (NIfTI, along ``slice_axis``) to keep, in that
        order; negative indices count from the end. All by default.
    slice_axis : {"axial", "coronal", "sagittal"}
        Anatomical plane of the slices of a NIfTI volume (see the module notes for the orientation).
    include_identifiers : bool
        Also return identifying header fields (names, IDs, dates, UIDs, private tags...) under
        ``metadata["identifiers"]``. Off by default: metadata is de-identified.
    max_pixels : int, optional
        Cap on the total number of pixels to decode; defaults to ``AE4AD_MAX_PIXELS`` from the environment,
        else :data:`DEFAULT_MAX_PIXELS`.
    metadata : {"full", "minimal"}
        ``"minimal"`` reads the pixels only (screening): a DICOM file skips the header allow-list and the
        de-identification pass, and its :class:`Image` holds ``{"format", "applied"}`` as metadata and no
        spacing. Pixels, checks and errors are the same as with ``"full"``.

    Returns
    -------
    Image
        Pixels ``(N, H, W)`` float32 and metadata.

    Raises
    ------
    UnreadableImageError
        Empty, truncated, corrupt or unrecognised file, or DICOM without pixel data.
    ImageTooLargeError
        The header declares more than ``max_pixels`` pixels.
    UnsupportedImageError
        A readable file in a form not supported (colour model, dimensionality, transfer syntax).
    MissingDecoderError
        Compressed DICOM whose decoder plugin is not installed.
    SliceSelectionError
        An index in ``frames`` is outside the file (an ``IndexError`` too).
    InvalidOptionError
        ``slice_axis`` is not one of the three planes, or ``metadata`` not one of the two levels (a
        ``ValueError`` too).
    ValueError
        ``max_pixels`` (or ``AE4AD_MAX_PIXELS``) is not a positive integer.
    """
    label = _clean_name(name) if name is not None else _default_name(source)
    limit = _resolve_max_pixels(max_pixels)
    axis = look_up_option(slice_axis, _SLICE_AXES, what="slice axis")
    level = look_up_option(metadata, METADATA_LEVELS, what="metadata level")
    selection = _check_frames_argument(frames)
    data = _load_bytes(source, label, limit)
    options = ReadOptions(
        frames=selection,
        slice_axis=axis,
        include_identifiers=include_identifiers,
        max_pixels=limit,
        metadata=level,
    )
    with _error_boundary(label):
        return _read_bytes(data, label, options)


def read_images(
    sources: Sequence[tuple[str, bytes]] | Sequence[str | os.PathLike],
    *,
    include_identifiers: bool = False,
    max_pixels: int | None = None,
) -> tuple[list[Image], list[tuple[str, str]]]:
    """Read a batch of files; single-frame DICOM files of one series become one volume.

    A bad file never stops the batch: it is reported in the returned errors and the rest goes on. DICOM files
    sharing a Series Instance UID and image size (more than one file, each single-frame) are stacked with the
    rules of :func:`read_dicom_series`; the UID is used for grouping only and never exposed.

    Parameters
    ----------
    sources : sequence of (name, bytes) or of paths
        The files, e.g. the output of :func:`ae4ad_core.archive.expand_uploads`.
    include_identifiers : bool
        See :func:`read_image`.
    max_pixels : int, optional
        Cap per image or per series (see :func:`read_image`).

    Returns
    -------
    images : list of Image
        In the order of their first file.
    errors : list of (str, str)
        ``(name, one-line reason)`` for every file or series that could not be read; the reason starts with
        ``"<name>: "``.
    """
    limit = _resolve_max_pixels(max_pixels)
    options = ReadOptions(include_identifiers=include_identifiers, max_pixels=limit)
    slots: list[Image | list[tuple[str, Any]]] = []  # an image, or the (growing) files of one series
    errors: list[tuple[str, str]] = []
    groups: dict[tuple[str, int, int], list[tuple[str, Any]]] = {}
    for source in sources:
        subject = _error_subject(source)
        try:
            label, data = _load_item(source, limit)
            dataset = _parse_if_dicom(data, label, limit)  # parsed once: to group it, then to read it
            key = _series_key(dataset) if dataset is not None else None
            if key is not None:
                if key not in groups:
                    groups[key] = []
                    slots.append(groups[key])
                groups[key].append((label, dataset))
                continue
            with _error_boundary(label):
                if dataset is None:
                    slots.append(_read_bytes(data, label, options))
                else:
                    slots.append(_DICOM_READER.read_dataset(dataset, label, options))
        except Ae4adError as error:
            errors.append((subject, format_error(error, subject)))
    images: list[Image] = []
    for slot in slots:
        if isinstance(slot, Image):
            images.append(slot)
        elif isinstance(slot, list):
            images.extend(
                _read_group(slot, errors, include_identifiers=include_identifiers, max_pixels=limit)
            )
    return images, errors


def _reader_for(kind: str | None) -> ImageReader | None:
    return next((reader for reader in READERS if kind in reader.kinds), None)


def _read_bytes(data: bytes, label: str, options: ReadOptions) -> Image:
    """Detect the format of ``data``, unwrap gzip, and read it with its reader or refuse it in one line."""
    if not data:
        raise UnreadableImageError(f"{label}: the file is empty")
    kind = _detect_format(data)
    if kind == "gzip":
        if options.applied:
            raise UnsupportedImageError(f"{label}: gzip inside gzip is not supported")
        inner = _gunzip_image(data, label, options.max_pixels)
        return _read_bytes(inner, label, replace(options, applied=("decompressed gzip",)))
    reader = _reader_for(kind)
    if reader is not None:
        return reader.read(data, label, options, kind=kind)
    if kind == "nifti-pair":
        raise UnsupportedImageError(
            f"{label}: NIfTI header of a .hdr/.img pair; convert it to a single .nii or .nii.gz file"
        )
    if kind == "analyze":
        raise UnsupportedImageError(
            f"{label}: Analyze 7.5 header without its image data; convert it to a single .nii or .nii.gz file"
        )
    if kind == "zip":
        raise UnsupportedImageError(
            f"{label}: a ZIP archive, not an image; upload it as a batch so that it is expanded"
        )
    inside = " inside the gzip stream" if options.applied else ""
    raise UnreadableImageError(
        f"{label}: not a DICOM, NIfTI or PNG/JPEG/TIFF/BMP file{inside} (first bytes {data[:8].hex()})"
    )


# ------------------------------------------------------------------------------------------------------- gzip


def _gunzip(data: bytes, label: str, *, limit: int, partial: bool) -> bytes:
    """Decompress a (possibly multi-member) gzip stream, never producing more than ``limit`` bytes.

    With ``partial=True`` the first ``limit`` bytes are returned (a truncated stream is fine). Otherwise a
    stream longer than ``limit`` raises :class:`ImageTooLargeError` and a truncated one
    :class:`UnreadableImageError`.
    """
    output = bytearray()
    pending = data
    while pending:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while True:
            room = limit - len(output)
            try:
                piece = decompressor.decompress(pending, room + 1 if not partial else max(room, 1))
            except zlib.error as error:
                raise UnreadableImageError(f"{label}: corrupt gzip stream ({_reason(error)})") from None
            output += piece
            if partial and len(output) >= limit:
                return bytes(output[:limit])
            if len(output) > limit:
                raise ImageTooLargeError(
                    f"{label}: the gzip stream expands beyond {limit} bytes, more than an image within the "
                    f"pixel cap can take (a gzip bomb?)"
                )
            if decompressor.eof:
                pending = decompressor.unused_data
                break
            tail = decompressor.unconsumed_tail
            if not tail and not piece:
                if partial:
                    return bytes(output)
                raise UnreadableImageError(f"{label}: truncated gzip stream (ends after {len(data)} bytes)")
            pending = tail
        if pending and pending[:2] != b"\x1f\x8b":
            break  # trailing garbage after the last member, as gzip itself tolerates
    return bytes(output)


def _gunzip_image(data: bytes, label: str, max_pixels: int) -> bytes:
    """Decompress just what the image inside needs: a NIfTI volume up to its first volume's last byte."""
    head = _gunzip(data, label, limit=_GZIP_HEAD_BYTES, partial=True)
    kind = _detect_format(head)
    if kind in {"nifti1", "nifti2"}:
        header = _nifti_header(head, label, version=int(kind[-1]))
        layout = _nifti_layout(header, label, max_pixels)
        return _gunzip(data, label, limit=layout.end, partial=True)
    if kind is None or kind in {"gzip", "zip", "nifti-pair", "analyze"}:
        return head[:1024]  # enough for _read_bytes to name what it is and refuse it
    return _gunzip(data, label, limit=_byte_cap(max_pixels), partial=False)
