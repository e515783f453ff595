"""What every reader shares: the :class:`Image` result, the reader interface, limits, names and byte loading,
the error boundary and format detection from the content.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    Ae4adError,
    ImageTooLargeError,
    SliceSelectionError,
    UnreadableImageError,
    format_error,
    one_line,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "METADATA_LEVELS",
    "SUPPORTED_EXTENSIONS",
    "Image",
    "ImageReader",
    "ReadOptions",
    "is_dicom",
]

DEFAULT_MAX_PIXELS = 256 * 1024 * 1024
"""Default cap on the total number of pixels (all frames or slices) one read may decode."""

SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".dcm",
    ".dicom",
    ".ima",
    ".nii",
    ".nii.gz",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".webp",
)
"""File name endings worth suggesting in a file picker. Detection never relies on them: files without an
extension (common in PACS exports) are read the same way."""

_MAX_PIXELS_ENVIRONMENT_VARIABLE = "AE4AD_MAX_PIXELS"
_SLICE_AXES = ("axial", "coronal", "sagittal")
_HEADER_SLACK_BYTES = 64 * 1024 * 1024  # room for DICOM/NIfTI headers on top of the pixel bytes
_BYTES_PER_PIXEL_BOUND = 8  # float64 / 64-bit pixels: the widest sample any supported format stores
_LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_REASON_CHARACTERS = 160  # a foreign exception quoted inside one of our messages is cut to this length


@dataclass(frozen=True, eq=False)
class Image:
    """Pixels and metadata of one image file, multi-frame file, volume or DICOM series.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(N, H, W)`` float32 array; ``N`` counts frames, slices or is 1. Values are in the file's physical
        unit where it has one (Hounsfield units for CT), otherwise in stored units (0-255 for 8-bit images).
        The array is shared, not copied: copy it before changing it in place.
    name : str
        The file name the caller gave (never a patient identifier).
    format : str
        ``"dicom"``, ``"dicom-series"``, ``"nifti"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"``, ``"gif"``
        or ``"webp"``.
    metadata : dict
        JSON-serialisable facts about the image, de-identified unless the reader was asked to include
        identifiers (then under ``metadata["identifiers"]``). ``metadata["applied"]`` lists every conversion
        made on the way to ``pixels``.
    default_window : tuple of float or None
        ``(center, width)`` for display, in the unit of ``pixels``: the DICOM Window Center/Width when the file
        has one, else ``None``.
    spacing : tuple of float or None
        In-plane pixel spacing in millimetres, ``(between rows, between columns)`` as in DICOM Pixel Spacing,
        when the file states it.
    """

    pixels: np.ndarray
    name: str
    format: str
    metadata: dict = field(default_factory=dict)
    default_window: tuple[float, float] | None = None
    spacing: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.pixels, np.ndarray)
            or self.pixels.ndim != 3
            or self.pixels.dtype != np.float32
        ):
            shape = getattr(self.pixels, "shape", None)
            dtype = getattr(self.pixels, "dtype", type(self.pixels).__name__)
            raise ValueError(f"Image pixels must be a (N, H, W) float32 array, got shape {shape} of {dtype}.")

    @property
    def n_slices(self) -> int:
        """Number of frames or slices ``N``."""
        return int(self.pixels.shape[0])

    def slice(self, index: int) -> np.ndarray:
        """Return one frame or slice.

        Parameters
        ----------
        index : int
            Position along ``N``; negative values count from the end as in Python sequences.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` float32 view of ``pixels``.

        Raises
        ------
        SliceSelectionError
            If ``index`` is outside ``[-N, N)`` (an ``IndexError`` too).
        """
        count = self.n_slices
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not -count <= index < count:
            raise SliceSelectionError(
                f"{self.name}: slice index {index!r} is out of range; the image has {count} slice(s)."
            )
        return self.pixels[int(index)]


@dataclass(frozen=True)
class ReadOptions:
    """What the caller of :func:`~ae4ad_core.io.read_image` asked for, handed to the reader of the format.

    ``frames`` is already checked (a tuple of ints or ``None``), ``slice_axis`` one of the three planes and
    ``max_pixels`` a positive int; ``applied`` lists the conversions made before the reader (``"decompressed
    gzip"``). ``metadata`` is ``"full"`` or ``"minimal"`` (see :data:`METADATA_LEVELS`).
    """

    frames: tuple[int, ...] | None = None
    slice_axis: str = "axial"
    include_identifiers: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    applied: tuple[str, ...] = ()
    metadata: str = "full"


METADATA_LEVELS = ("full", "minimal")
"""What :func:`~ae4ad_core.io.read_image` puts next to the pixels: ``"full"`` (the de-identified header
fields, spacing, default window...) or ``"minimal"`` (pixels only, for screening: a DICOM image then comes back
with ``metadata == {"format": "dicom", "applied": [...]}``, its default window and no spacing; the header
allow-list and the de-identification pass are skipped). Readers of other formats may return more."""


class ImageReader:
    """One file format: knows whether it can read some bytes, and reads them into an :class:`Image`.

    Modelled on MONAI's ``ImageReader`` (``verify_suffix`` then ``read``/``get_data``), except that the
    decision comes from the content (:meth:`can_read`), never from the file name, and that :meth:`read`
    returns pixels and metadata together. :func:`~ae4ad_core.io.read_image` detects the format once, unwraps
    gzip, then hands the bytes to the first reader in :data:`~ae4ad_core.io.READERS` whose :attr:`kinds`
    holds the detected format.
    """

    name: str = ""
    """Short name of the reader (``"dicom"``, ``"nifti"``, ``"pillow"``)."""
    kinds: frozenset[str] = frozenset()
    """The detected container formats this reader decodes (names given by the format detection)."""
    title: str = ""
    """How error messages name the formats, e.g. ``"DICOM"``."""

    def can_read(self, data: bytes) -> bool:
        """Tell whether ``data`` (the whole file, or its first kilobytes) is in a format this reader decodes."""
        return _detect_format(bytes(data)) in self.kinds

    def read(self, data: bytes, label: str, options: ReadOptions, *, kind: str | None = None) -> Image:
        """Decode ``data`` into an :class:`Image` named ``label``.

        ``kind`` is the detected format when the caller already knows it (saves detecting it again). Failures
        raise :class:`~ae4ad_core.errors.UnreadableImageError` or a subclass, with a one-line message that
        starts with ``label``.
        """
        raise NotImplementedError

    def _checked_kind(self, data: bytes, label: str, kind: str | None) -> str:
        kind = kind or _detect_format(data)
        if kind not in self.kinds:
            raise UnreadableImageError(f"{label}: not a {self.title} file (first bytes {data[:8].hex()})")
        return kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def is_dicom(data: bytes) -> bool:
    """Tell whether ``data`` is a DICOM file.

    True when ``"DICM"`` follows the 128-byte preamble, or when a preamble-less dataset parses into standard
    DICOM elements.

    Parameters
    ----------
    data : bytes
        File content (the first few kilobytes are enough for files with a preamble).

    Returns
    -------
    bool
    """
    data = bytes(data)
    return (len(data) >= 132 and data[128:132] == b"DICM") or _looks_like_raw_dicom(data)


# ------------------------------------------------------------------------------------------ sources and limits


def _resolve_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        text = os.environ.get(_MAX_PIXELS_ENVIRONMENT_VARIABLE, "").strip()
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(text.replace("_", ""))
        except ValueError:
            raise ValueError(
                f"{_MAX_PIXELS_ENVIRONMENT_VARIABLE} must be a positive integer number of pixels, got {text!r}."
            ) from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}.")
    return int(max_pixels)


def _byte_cap(max_pixels: int) -> int:
    return max_pixels * _BYTES_PER_PIXEL_BOUND + _HEADER_SLACK_BYTES


def _check_frames_argument(frames: Sequence[int] | None) -> tuple[int, ...] | None:
    if frames is None:
        return None
    if isinstance(frames, (int, np.integer)):
        frames = [int(frames)]
    selection = tuple(frames)
    if not selection:
        raise ValueError("frames must name at least one frame index, or be None for all frames.")
    for index in selection:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frames must hold integers, got {index!r}.")
    return tuple(int(index) for index in selection)


def _select(selection: tuple[int, ...] | None, count: int, label: str, what: str) -> list[int]:
    if selection is None:
        return list(range(count))
    chosen = []
    for index in selection:
        if not -count <= index < count:
            raise SliceSelectionError(
                f"{label}: {what} index {index} is out of range; the file has {count} {what}(s)."
            )
        chosen.append(index % count)
    return chosen


_one_line = one_line  # every run of control characters (newlines, tabs, NUL...) becomes one space


def _clean_name(name: str) -> str:
    return _one_line(str(name)).strip() or "image"


def _default_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return _clean_name(Path(source).name or os.fspath(source))
    return "image"


def _error_subject(source: Any) -> str:
    if isinstance(source, tuple) and source:
        return _clean_name(source[0])
    return _default_name(source)


def _load_bytes(source: Any, label: str, max_pixels: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}.")
    path = Path(source)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise UnreadableImageError(f"{label}: is a folder, not a file")
        if size > _byte_cap(max_pixels):
            raise ImageTooLargeError(
                f"{label}: the file holds {size} bytes, more than any image within the pixel cap "
                f"({max_pixels} pixels) can take; raise max_pixels or {_MAX_PIXELS_ENVIRONMENT_VARIABLE}"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise UnreadableImageError(f"{label}: no such file") from None
    except PermissionError:
        raise UnreadableImageError(f"{label}: permission denied") from None
    except OSError as error:
        raise UnreadableImageError(f"{label}: cannot read the file ({_reason(error)})") from None


def _load_item(source: Any, max_pixels: int) -> tuple[str, bytes]:
    if isinstance(source, tuple):
        if len(source) != 2:
            raise TypeError("a source given as a tuple must be (name, bytes).")
        label = _clean_name(source[0])
        return label, _load_bytes(source[1], label, max_pixels)
    label = _default_name(source)
    return label, _load_bytes(source, label, max_pixels)


_FATAL_EXCEPTIONS = (KeyboardInterrupt, SystemExit, GeneratorExit)


class _error_boundary:
    """Context manager turning any unexpected exception into a one-line :class:`UnreadableImageError`.

    Exceptions outside the ``Exception`` hierarchy are converted too, except interrupts and exits: the Rust
    decoder plugins (pylibjpeg-rle) turn a panic on corrupt data into ``pyo3_runtime.PanicException``, which
    derives from ``BaseException``.
    """

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> bool:
        if isinstance(error, Ae4adError):
            # Messages quote header values (a transfer syntax UID, a keyword value): keep them on one line.
            error.args = tuple(_one_line(arg) if isinstance(arg, str) else arg for arg in error.args)
            return False
        if error is None:
            return False
        if isinstance(error, _FATAL_EXCEPTIONS):
            return False
        if isinstance(error, MemoryError):
            message = f"{self.label}: not enough memory to decode the image"
        else:
            message = f"{self.label}: cannot read the file ({_reason(error)})"
        raise UnreadableImageError(message) from None


def _reason(error: BaseException) -> str:
    """One-line ``"TypeName: message"`` of a foreign exception, to quote inside one of our messages."""
    return format_error(error, limit=_REASON_CHARACTERS)


# ---------------------------------------------------------------------------------------------- format detection


def _detect_format(data: bytes) -> str | None:
    """Name the container format of ``data`` from its first bytes, or ``None``."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    nifti = _nifti_kind(data)
    if nifti is not None:
        return nifti
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:2] == b"BM" and len(data) >= 18 and struct.unpack("<I", data[14:18])[0] in _BMP_HEADER_SIZES:
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if _looks_like_raw_dicom(data):
        return "dicom-raw"
    return None


def _nifti_kind(data: bytes) -> str | None:
    if len(data) >= 348:
        for order in "<>":
            if struct.unpack(f"{order}i", data[:4])[0] == 348:
                magic = data[344:348]
                if magic == b"n+1\x00":
                    return "nifti1"
                if magic == b"ni1\x00":
                    return "nifti-pair"
                return "analyze"
    if len(data) >= 540:
        for order in "<>":
            if struct.unpack(f"{order}i", data[:4])[0] == 540 and data[4:8] in (b"n+2\x00", b"ni2\x00"):
                return "nifti2" if data[4:8] == b"n+2\x00" else "nifti-pair"
    return None


def _looks_like_raw_dicom(data: bytes) -> bool:
    """A preamble-less DICOM dataset: starts with group 0002 or 0008 and parses into standard elements."""
    if len(data) < 16 or data[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return False
    import pydicom
    from pydicom.datadict import dictionary_has_tag

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        tags = [int(tag) for tag in list(dataset.keys())[:3]]
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
        return False
    return len(tags) == 3 and all(dictionary_has_tag(tag) or tag & 0xFFFF == 0 for tag in tags)


# ------------------------------------------------------------------------------------------- shared pixel steps


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luminance of an ``(..., 3 or 4)`` array, as float32 ``(...)``; alpha is ignored."""
    rgb = np.asarray(rgb)
    red, green, blue = (rgb[..., channel].astype(np.float32) for channel in range(3))
    weights = [np.float32(weight) for weight in _LUMINANCE_WEIGHTS]
    return red * weights[0] + green * weights[1] + blue * weights[2]


def _replace_non_finite(pixels: np.ndarray, steps: list[str]) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.float32)
    finite = np.isfinite(pixels)
    if not finite.all():
        count = int(finite.size - np.count_nonzero(finite))
        pixels = np.where(finite, pixels, np.float32(0))
        steps.append(f"replaced {count} NaN/infinite value(s) by 0")
    return np.ascontiguousarray(pixels, dtype=np.float32)
