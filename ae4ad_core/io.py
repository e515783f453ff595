"""Read a medical or ordinary image file into float32 pixels and de-identified metadata.

One entry point, :func:`read_image`, takes a path or the bytes of an upload, detects the format from the
content (magic bytes, never the file name) and returns an :class:`Image` whose pixels always have the shape
``(N, H, W)``: ``N`` is the number of frames (multi-frame DICOM, multi-page TIFF), slices (NIfTI volume, DICOM
series) or 1.

Formats
-------
* DICOM (``"DICM"`` at byte 128, or a preamble-less file that pydicom parses into standard elements), with every
  transfer syntax pydicom and the pylibjpeg plugins decode; gzip-wrapped DICOM too.
* NIfTI-1 and NIfTI-2 single files, plain or gzip-compressed (``.nii``, ``.nii.gz``).
* PNG, JPEG, TIFF, BMP, GIF and WebP through Pillow.

Pixel values
------------
DICOM pixels go through the Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence), so CT comes back
in Hounsfield units. MONOCHROME1 images are inverted (``v -> lo + hi - v`` over the stored value range mapped
through the Modality LUT) so that bright always means dense or high signal; the default window is mirrored the
same way. Colour images (RGB, YBR, PALETTE COLOR, RGBA, CMYK...) are converted to grayscale with the ITU-R
BT.601 luminance ``0.299 R + 0.587 G + 0.114 B``. Every conversion is listed in ``metadata["applied"]``.

NIfTI orientation
-----------------
Volumes are first reoriented to the closest canonical RAS+ axes (``nibabel.orientations.io_orientation``), so
the choice of ``slice_axis`` means the same anatomy whatever the stored axis order (RAS, LAS, LPS...). Each slice
is then laid out in the radiological convention: axial and coronal slices have the patient's right on the image
left (patient's left on the image right), anterior (axial) or superior (coronal) at the top; sagittal slices
have anterior on the image left and superior at the top. Slices are ordered inferior to superior (axial),
posterior to anterior (coronal) and left to right (sagittal). DICOM series are ordered along the slice normal
(for an axial series: inferior to superior too).

Safety
------
Before any pixel is decoded, the number of pixels the header declares is checked against a cap
(:data:`DEFAULT_MAX_PIXELS`, the environment variable ``AE4AD_MAX_PIXELS`` or the ``max_pixels`` argument), and
gzip streams are decompressed incrementally up to the size that cap implies. Every failure raises a subclass of
:class:`~ae4ad_core.errors.UnreadableImageError` with a one-line message that starts with the file name.
"""

from __future__ import annotations

import io
import math
import os
import posixpath
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    Ae4adError,
    ImageTooLargeError,
    MissingDecoderError,
    UnreadableImageError,
    UnsupportedImageError,
    look_up_option,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "Image",
    "read_image",
    "read_dicom_series",
    "read_images",
    "is_dicom",
    "deidentify",
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
_GZIP_HEAD_BYTES = 64 * 1024
_BYTES_PER_PIXEL_BOUND = 8  # float64 / 64-bit pixels: the widest sample any supported format stores
_LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601

_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "gif": "GIF", "webp": "WEBP"}
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_GRAY_PILLOW_MODES = frozenset({"L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_COLOUR_PILLOW_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "P", "PA", "LA", "La"})

_GRAY_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
_COLOUR_PHOTOMETRICS = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT"}
)
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",
}
_DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"

# Keys of the DICOM metadata we expose, mapped to the dataset keywords they come from. An allow-list: nothing
# else from the header reaches ``metadata`` unless ``include_identifiers=True``.
_DICOM_METADATA_FIELDS = {
    "modality": "Modality",
    "manufacturer": "Manufacturer",
    "manufacturer_model": "ManufacturerModelName",
    "body_part": "BodyPartExamined",
    "study_description": "StudyDescription",
    "series_description": "SeriesDescription",
    "protocol_name": "ProtocolName",
    "image_type": "ImageType",
    "view_position": "ViewPosition",
    "laterality": "ImageLaterality",
    "patient_position": "PatientPosition",
    "rows": "Rows",
    "columns": "Columns",
    "samples_per_pixel": "SamplesPerPixel",
    "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored",
    "high_bit": "HighBit",
    "pixel_representation": "PixelRepresentation",
    "photometric": "PhotometricInterpretation",
    "rescale_slope": "RescaleSlope",
    "rescale_intercept": "RescaleIntercept",
    "rescale_type": "RescaleType",
    "window_center": "WindowCenter",
    "window_width": "WindowWidth",
    "window_explanation": "WindowCenterWidthExplanation",
    "pixel_spacing": "PixelSpacing",
    "imager_pixel_spacing": "ImagerPixelSpacing",
    "slice_thickness": "SliceThickness",
    "spacing_between_slices": "SpacingBetweenSlices",
    "slice_location": "SliceLocation",
    "image_position": "ImagePositionPatient",
    "image_orientation": "ImageOrientationPatient",
    "kvp": "KVP",
    "convolution_kernel": "ConvolutionKernel",
    "magnetic_field_strength": "MagneticFieldStrength",
    "echo_time": "EchoTime",
    "repetition_time": "RepetitionTime",
    "inversion_time": "InversionTime",
    "flip_angle": "FlipAngle",
    "scanning_sequence": "ScanningSequence",
}

# Keywords (lower case, no separators) that identify a person, a place, a device or a moment. Every keyword
# whose DICOM value representation is PN, DA, DT or TM, every instance UID and every private tag counts too.
_IDENTIFYING_KEYWORDS = frozenset(
    word.lower()
    for word in (
        "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
        "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientSex",
        "PatientAge", "PatientSize", "PatientWeight", "PatientAddress", "PatientMotherBirthName",
        "PatientTelephoneNumbers", "PatientReligiousPreference", "PatientComments", "PatientState",
        "EthnicGroup", "Occupation", "MilitaryRank", "BranchOfService", "MedicalRecordLocator",
        "CountryOfResidence", "RegionOfResidence", "AdditionalPatientHistory", "PregnancyStatus",
        "AccessionNumber", "IssuerOfAccessionNumberSequence", "InstitutionName", "InstitutionAddress",
        "InstitutionalDepartmentName", "InstitutionCodeSequence", "ReferringPhysicianName",
        "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician",
        "RequestingService", "StudyID", "StationName", "DeviceSerialNumber", "DetectorID", "DeviceUID",
        "RequestAttributesSequence", "PerformedProcedureStepID", "ScheduledProcedureStepID",
        "RequestedProcedureID", "AdmissionID", "ImageComments", "StudyComments", "InterpretationText",
        "ContentCreatorName", "PersonName", "PersonAddress", "PersonTelephoneNumbers", "ResponsiblePerson",
        "ResponsibleOrganization", "Description", "AuxFile", "DbName", "Identifiers", "TextChunks",
    )
)  # fmt: skip
_IDENTIFYING_VRS = frozenset({"PN", "DA", "DT", "TM"})
_PUBLIC_UID_KEYWORDS = frozenset({"sopclassuid", "transfersyntaxuid", "mediastoragesopclassuid"})
_TAG_KEY_PATTERN = re.compile(r"^\(?([0-9a-fA-F]{4})[,\s]?([0-9a-fA-F]{4})\)?$")
_VR_BY_KEYWORD: dict[str, str] = {}
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


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
        IndexError
            If ``index`` is outside ``[-N, N)``.
        """
        count = self.n_slices
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not -count <= index < count:
            raise IndexError(
                f"{self.name}: slice index {index!r} is out of range; the image has {count} slice(s)."
            )
        return self.pixels[int(index)]


class _SelectionError(IndexError):
    """A ``frames`` index outside the file: a caller error, let through the error boundary as IndexError."""


# --------------------------------------------------------------------------------------------------- public API


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    frames: Sequence[int] | None = None,
    slice_axis: str = "axial",
    include_identifiers: bool = False,
    max_pixels: int | None = None,
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
    IndexError
        An index in ``frames`` is outside the file.
    ValueError
        ``slice_axis`` is not one of the three planes, or ``max_pixels`` (or ``AE4AD_MAX_PIXELS``) is not a
        positive integer.
    """
    label = _clean_name(name) if name is not None else _default_name(source)
    limit = _resolve_max_pixels(max_pixels)
    axis = look_up_option(slice_axis, _SLICE_AXES, what="slice axis")
    selection = _check_frames_argument(frames)
    data = _load_bytes(source, label, limit)
    with _error_boundary(label):
        return _read_bytes(
            data,
            label,
            frames=selection,
            slice_axis=axis,
            include_identifiers=include_identifiers,
            max_pixels=limit,
        )


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
            if kind not in {"dicom", "dicom-raw"}:
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
        ``(name, one-line reason)`` for every file or series that could not be read.
    """
    limit = _resolve_max_pixels(max_pixels)
    slots: list[Image | list[tuple[str, Any]]] = []  # an image, or the (growing) files of one series
    errors: list[tuple[str, str]] = []
    groups: dict[tuple[str, int, int], list[tuple[str, Any]]] = {}
    for source in sources:
        try:
            label, data = _load_item(source, limit)
            member = _series_member(data, label, limit)
            if member is not None:
                key, dataset = member
                if key not in groups:
                    groups[key] = []
                    slots.append(groups[key])
                groups[key].append((label, dataset))
                continue
            slots.append(
                read_image(data, name=label, include_identifiers=include_identifiers, max_pixels=limit)
            )
        except Ae4adError as error:
            errors.append((_error_subject(source), str(error)))
    images: list[Image] = []
    for slot in slots:
        if isinstance(slot, Image):
            images.append(slot)
        elif isinstance(slot, list):
            images.extend(
                _read_group(slot, errors, include_identifiers=include_identifiers, max_pixels=limit)
            )
    return images, errors


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


def deidentify(metadata: Mapping[str, Any]) -> dict:
    """Return a copy of ``metadata`` without identifying keys, at any depth.

    Dropped: the ``"identifiers"`` entry; names, IDs, addresses, institution, station, device serial number,
    accession and study numbers, age, sex, size and weight; every key naming a DICOM attribute whose value
    representation is PN (person), DA (date), DT (date-time) or TM (time); instance UIDs (SOP class and transfer
    syntax UIDs are kept); private tags. Keys may be DICOM keywords (``"PatientName"``), snake case
    (``"patient_name"``) or tags (``"(0010,0010)"``, ``"00100010"``).

    Parameters
    ----------
    metadata : mapping
        Metadata, possibly nested (dicts inside dicts or lists).

    Returns
    -------
    dict
        The cleaned copy; ``metadata`` itself is not changed.
    """
    clean: dict[str, Any] = {}
    for key, value in metadata.items():
        if _is_identifying_key(str(key)):
            continue
        clean[key] = _deidentify_value(value)
    return clean


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
            raise _SelectionError(
                f"{label}: {what} index {index} is out of range; the file has {count} {what}(s)."
            )
        chosen.append(index % count)
    return chosen


def _one_line(text: str) -> str:
    """``text`` with every run of control characters (newlines, tabs, NUL...) replaced by one space."""
    return _CONTROL_CHARACTERS.sub(" ", text)


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
        if isinstance(error, (Ae4adError, _SelectionError)):
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
    text = " ".join(_one_line(str(error)).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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


def _read_bytes(
    data: bytes,
    label: str,
    *,
    frames: tuple[int, ...] | None,
    slice_axis: str,
    include_identifiers: bool,
    max_pixels: int,
    applied: tuple[str, ...] = (),
) -> Image:
    if not data:
        raise UnreadableImageError(f"{label}: the file is empty")
    kind = _detect_format(data)
    options = {
        "frames": frames,
        "include_identifiers": include_identifiers,
        "max_pixels": max_pixels,
        "applied": list(applied),
    }
    if kind == "gzip":
        if applied:
            raise UnsupportedImageError(f"{label}: gzip inside gzip is not supported")
        inner = _gunzip_image(data, label, max_pixels)
        return _read_bytes(
            inner,
            label,
            frames=frames,
            slice_axis=slice_axis,
            include_identifiers=include_identifiers,
            max_pixels=max_pixels,
            applied=("decompressed gzip",),
        )
    if kind in {"dicom", "dicom-raw"}:
        dataset = _parse_dicom(data, label, force=kind == "dicom-raw", max_pixels=max_pixels)
        return _read_dicom(dataset, label, **options)
    if kind in {"nifti1", "nifti2"}:
        return _read_nifti(data, label, version=int(kind[-1]), slice_axis=slice_axis, **options)
    if kind in _PILLOW_FORMATS:
        return _read_pillow(data, label, kind, **options)
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
    inside = " inside the gzip stream" if applied else ""
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


# ------------------------------------------------------------------------------------------------------- DICOM


def _parse_dicom(data: bytes, label: str, *, force: bool, max_pixels: int):
    """Parse a DICOM dataset from bytes (pixel data still encoded) and make sure it names its transfer syntax."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    _guard_deflated_dicom(data, label, max_pixels)
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=force)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for corrupt input
        raise UnreadableImageError(f"{label}: truncated or corrupt DICOM ({_reason(error)})") from None
    file_meta = dataset.file_meta
    if not file_meta.get("TransferSyntaxUID"):
        implicit, little = dataset.original_encoding
        if implicit is None or little is None:
            implicit, little = True, True
        file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return dataset


def _guard_deflated_dicom(data: bytes, label: str, max_pixels: int) -> None:
    """Refuse a Deflated Explicit VR file that would inflate past the size cap (pydicom inflates it at once)."""
    if _DEFLATED_TRANSFER_SYNTAX.encode() not in data[:8192]:
        return
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(data)
    try:
        read_preamble(stream, True)
        meta = _read_file_meta_info(stream)
    except Exception:  # noqa: BLE001 - let dcmread report the corrupt header
        return
    if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED_TRANSFER_SYNTAX:
        return
    limit = _byte_cap(max_pixels)
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, produced = data[stream.tell() :], 0
    try:
        while pending and not decompressor.eof:
            produced += len(decompressor.decompress(pending, 1 << 20))
            if produced > limit:
                raise ImageTooLargeError(
                    f"{label}: the deflated DICOM dataset expands beyond {limit} bytes (a deflate bomb?)"
                )
            pending = decompressor.unconsumed_tail
    except zlib.error as error:
        raise UnreadableImageError(f"{label}: corrupt deflated DICOM ({_reason(error)})") from None


def _has_pixel_data(dataset) -> bool:
    return any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _read_dicom(
    dataset,
    label: str,
    *,
    frames: tuple[int, ...] | None,
    include_identifiers: bool,
    max_pixels: int,
    applied: list[str],
) -> Image:
    decoded = _decode_dicom(dataset, label, frames=frames, max_pixels=max_pixels, applied=applied)
    metadata = _dicom_metadata(dataset, decoded, include_identifiers=include_identifiers)
    return Image(
        pixels=decoded.pixels,
        name=label,
        format="dicom",
        metadata=metadata,
        default_window=decoded.window,
        spacing=_dicom_spacing(dataset),
    )


@dataclass(frozen=True, eq=False)
class _DecodedDicom:
    pixels: np.ndarray
    window: tuple[float, float] | None
    applied: list[str]
    frames: list[int]
    n_frames: int
    grayscale_converted: bool


def _dicom_int(dataset, keyword: str, label: str, *, default: int | None = None) -> int:
    value = dataset.get(keyword, None)
    if value is None or value == "":
        if default is not None:
            return default
        raise UnreadableImageError(f"{label}: DICOM image without {keyword}; the pixel module is incomplete")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UnreadableImageError(
            f"{label}: DICOM {keyword} is not a number ({str(value)[:20]!r})"
        ) from None


def _decode_dicom(
    dataset, label: str, *, frames: tuple[int, ...] | None, max_pixels: int, applied: list[str]
) -> _DecodedDicom:
    """Check the header against the caps, decode, apply the Modality LUT and make the frames grayscale."""
    from pydicom.pixels import pixel_array

    if not _has_pixel_data(dataset):
        if str(dataset.file_meta.get("MediaStorageSOPClassUID", "")) == "1.2.840.10008.1.3.10":
            raise UnreadableImageError(
                f"{label}: a DICOMDIR (an index of other files), not an image; read the files it lists"
            )
        raise UnreadableImageError(
            f"{label}: DICOM file has no pixel data (e.g. a structured report or RT plan)"
        )
    rows = _dicom_int(dataset, "Rows", label)
    columns = _dicom_int(dataset, "Columns", label)
    n_frames = _dicom_int(dataset, "NumberOfFrames", label, default=1)
    samples = _dicom_int(dataset, "SamplesPerPixel", label, default=1)
    if rows <= 0 or columns <= 0 or n_frames <= 0:
        raise UnreadableImageError(
            f"{label}: DICOM declares an empty image ({n_frames} frame(s) of {rows}x{columns} pixels)"
        )
    chosen = _select(frames, n_frames, label, "frame")
    declared = rows * columns * len(chosen)
    if declared > max_pixels:
        raise ImageTooLargeError(
            f"{label}: DICOM declares {len(chosen)} frame(s) of {rows}x{columns} = {declared} pixels, over the "
            f"cap of {max_pixels}; raise max_pixels or {_MAX_PIXELS_ENVIRONMENT_VARIABLE}, or choose frames"
        )
    photometric = (
        str(dataset.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    )
    if photometric not in _GRAY_PHOTOMETRICS | _COLOUR_PHOTOMETRICS | {"PALETTE COLOR"}:
        raise UnsupportedImageError(
            f"{label}: DICOM photometric interpretation {photometric!r} is not supported"
        )
    if photometric in _COLOUR_PHOTOMETRICS and samples != 3:
        raise UnsupportedImageError(
            f"{label}: DICOM {photometric} image with {samples} samples per pixel (expected 3)"
        )
    if photometric not in _COLOUR_PHOTOMETRICS and samples != 1:
        raise UnsupportedImageError(
            f"{label}: DICOM {photometric} image with {samples} samples per pixel (expected 1)"
        )
    transfer_syntax = dataset.file_meta.TransferSyntaxUID
    _check_decoder(transfer_syntax, label)
    _check_native_length(dataset, transfer_syntax, label)

    try:
        if frames is None:
            raw = pixel_array(dataset)
            raw = raw[np.newaxis] if n_frames == 1 else raw
        else:
            raw = np.stack([pixel_array(dataset, index=index) for index in chosen])
    except (MemoryError, Ae4adError, *_FATAL_EXCEPTIONS):
        raise
    except BaseException as error:  # decoder plugins raise assorted types, Rust panics included
        raise UnreadableImageError(
            f"{label}: cannot decode the {transfer_syntax.name} pixel data ({_reason(error)})"
        ) from None
    if raw.shape[:3] != (len(chosen), rows, columns):
        raise UnreadableImageError(
            f"{label}: decoded pixel data has shape {raw.shape}, not the {len(chosen)}x{rows}x{columns} the "
            f"header declares"
        )

    steps = list(applied)
    window: tuple[float, float] | None = None
    converted = False
    if photometric in _GRAY_PHOTOMETRICS:
        pixels, window = _dicom_grayscale(dataset, raw, chosen, photometric, steps, label=label)
    else:
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            raw = apply_color_lut(raw, dataset)
            steps.append("applied the palette colour lookup table")
        elif photometric.startswith("YBR"):
            steps.append(f"converted {photometric} to RGB")
        pixels = _luminance(raw)
        steps.append("converted colour to grayscale (BT.601 luminance)")
        converted = True
    pixels = _replace_non_finite(pixels, steps)
    return _DecodedDicom(
        pixels=pixels,
        window=window,
        applied=steps,
        frames=chosen,
        n_frames=n_frames,
        grayscale_converted=converted,
    )


def _decoder_for(transfer_syntax):
    """Return pydicom's decoder for ``transfer_syntax`` (a seam for tests), or ``None`` if there is none."""
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(transfer_syntax)
    except NotImplementedError:
        return None


def _check_decoder(transfer_syntax, label: str) -> None:
    decoder = _decoder_for(transfer_syntax)
    if decoder is None:
        raise UnsupportedImageError(
            f"{label}: DICOM transfer syntax {transfer_syntax.name} ({transfer_syntax}) has no pixel decoder "
            f"(video and private syntaxes are not supported)"
        )
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(transfer_syntax))
        hint = (
            f"pip install {package.replace(' and ', ' ')}"
            if package
            else "; ".join(decoder.missing_dependencies)
        )
        raise MissingDecoderError(
            f"{label}: no decoder installed for DICOM {transfer_syntax.name} ({transfer_syntax}); install {hint}"
        )


def _check_native_length(dataset, transfer_syntax, label: str) -> None:
    """Refuse natively encoded pixel data shorter than the header implies (a truncated file)."""
    if transfer_syntax.is_compressed or "PixelData" not in dataset:
        return
    from pydicom.pixels.utils import get_expected_length

    try:
        expected = get_expected_length(dataset, "bytes")
    except Exception:  # noqa: BLE001 - an inconsistent header is reported by the decoder
        return
    actual = len(dataset.PixelData or b"")
    if actual < expected:
        raise UnreadableImageError(
            f"{label}: truncated DICOM (pixel data ends after {actual} of {expected} bytes)"
        )


def _functional_group_item(dataset, frame: int, sequence: str):
    """First item of ``sequence`` for ``frame`` in the per-frame, else shared, functional groups."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = dataset.get(groups)
        if items and index < len(items):
            nested = items[index].get(sequence)
            if nested:
                return nested[0]
    return None


def _modality_source(dataset, frame: int):
    """Dataset holding the Modality LUT of ``frame``: the top level, else the enhanced functional groups."""
    if dataset.get("ModalityLUTSequence") or ("RescaleSlope" in dataset and "RescaleIntercept" in dataset):
        return dataset
    item = _functional_group_item(dataset, frame, "PixelValueTransformationSequence")
    if item is not None and "RescaleSlope" in item and "RescaleIntercept" in item:
        return item
    return None


def _first_number(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dicom_window(dataset, frame: int) -> tuple[float, float] | None:
    source = (
        dataset
        if "WindowCenter" in dataset
        else _functional_group_item(dataset, frame, "FrameVOILUTSequence")
    )
    if source is None:
        return None
    center = _first_number(source.get("WindowCenter"))
    width = _first_number(source.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    return center, width


def _stored_range(dataset, raw: np.ndarray) -> tuple[float, float]:
    """Range of stored values implied by Bits Stored and Pixel Representation (data range as a fallback)."""
    bits = _first_number(dataset.get("BitsStored"))
    if np.issubdtype(raw.dtype, np.integer) and bits is not None and 1 <= bits <= 64:
        bits = int(bits)
        if int(dataset.get("PixelRepresentation", 0) or 0) == 1:
            return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
        return 0.0, float(2**bits - 1)
    finite = raw[np.isfinite(raw)] if raw.dtype.kind == "f" else raw
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


def _dicom_grayscale(
    dataset, raw: np.ndarray, chosen: list[int], photometric: str, steps: list[str], *, label: str
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Modality LUT, VOI LUT when there is no window, MONOCHROME1 inversion; returns pixels and window."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    pixels = np.empty(raw.shape[:3], dtype=np.float32)
    stored_low, stored_high = _stored_range(dataset, raw)
    window = _dicom_window(dataset, chosen[0])
    use_voi_lut = window is None and bool(dataset.get("VOILUTSequence"))
    modality_kinds = set()
    ranges = []
    for position, frame in enumerate(chosen):
        source = _modality_source(dataset, frame)
        values = raw[position]
        ends = np.array([stored_low, stored_high])
        if source is not None:
            if source.get("ModalityLUTSequence"):
                values = apply_modality_lut(values, source)
                ends = apply_modality_lut(ends.astype(np.int64), source)
                modality_kinds.add("Modality LUT Sequence")
            else:
                slope = _first_number(source.get("RescaleSlope"))
                intercept = _first_number(source.get("RescaleIntercept"))
                if slope is None or intercept is None:
                    raise UnreadableImageError(f"{label}: DICOM Rescale Slope/Intercept are not numbers")
                if (slope, intercept) != (1.0, 0.0):
                    values = values.astype(np.float64) * slope + intercept
                    ends = ends * slope + intercept
                    modality_kinds.add(f"rescale slope {slope:g} intercept {intercept:g}")
        if use_voi_lut:
            values = apply_voi_lut(np.rint(values).astype(np.int64), dataset, prefer_lut=True)
            ends = apply_voi_lut(np.rint(ends).astype(np.int64), dataset, prefer_lut=True)
        low, high = float(np.min(ends)), float(np.max(ends))
        ranges.append((low, high))
        frame_pixels = np.asarray(values, dtype=np.float32)
        if photometric == "MONOCHROME1":
            frame_pixels = np.float32(low + high) - frame_pixels
        pixels[position] = frame_pixels
    for kind in sorted(modality_kinds):
        steps.append(f"applied the Modality LUT ({kind})")
    if use_voi_lut:
        steps.append("applied the VOI LUT Sequence (the file has no window)")
    if photometric == "MONOCHROME1":
        low, high = ranges[0]
        steps.append(f"inverted MONOCHROME1 so that bright means high signal (v -> {low + high:g} - v)")
        if window is not None:
            window = (low + high - window[0], window[1])
    return pixels, window


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


def _dicom_spacing(dataset) -> tuple[float, float] | None:
    for source in (dataset, _functional_group_item(dataset, 0, "PixelMeasuresSequence")):
        if source is None:
            continue
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = source.get(keyword)
            try:
                if value is not None and len(value) == 2:
                    row, column = float(value[0]), float(value[1])
                    if row > 0 and column > 0 and math.isfinite(row) and math.isfinite(column):
                        return row, column
            except (TypeError, ValueError):
                continue
    return None


def _dicom_metadata(dataset, decoded: _DecodedDicom, *, include_identifiers: bool) -> dict:
    """The allow-listed header fields plus what was done; identifiers only on request."""
    metadata: dict[str, Any] = {"format": "dicom"}
    for key, keyword in _DICOM_METADATA_FIELDS.items():
        try:
            value = _json_value(dataset.get(keyword))
        except Exception:  # noqa: BLE001 - a malformed optional field is left out
            continue
        if value is not None and value != "" and value != []:
            metadata[key] = value
    transfer_syntax = dataset.file_meta.TransferSyntaxUID
    metadata["transfer_syntax"] = transfer_syntax.name
    sop_class = dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID")
    if sop_class:
        metadata["sop_class"] = getattr(sop_class, "name", str(sop_class))
    metadata["n_frames"] = decoded.n_frames
    if decoded.frames != list(range(decoded.n_frames)):
        metadata["frames"] = decoded.frames
    metadata["shape"] = list(decoded.pixels.shape)
    metadata["converted_to_grayscale"] = decoded.grayscale_converted
    metadata["applied"] = decoded.applied
    metadata = deidentify(metadata)
    if include_identifiers:
        metadata["identifiers"] = _dicom_identifiers(dataset)
    return metadata


def _dicom_identifiers(dataset) -> dict:
    identifiers: dict[str, Any] = {}
    elements = list(dataset.file_meta.values()) + list(dataset.values())
    for raw_element in elements:
        try:
            element = raw_element if hasattr(raw_element, "keyword") else dataset[raw_element.tag]
            if element.VR == "SQ" or element.tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):
                continue
            key = element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"
            if not (element.tag.is_private or _is_identifying_key(key)):
                continue
            value = _json_value(element.value)
        except Exception:  # noqa: BLE001 - skip elements pydicom cannot convert
            continue
        if value is not None:
            identifiers[key] = value
    return identifiers


def _json_value(value: Any) -> Any:
    """Convert a pydicom/NumPy value to plain JSON types; ``None`` for binary or empty values."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return str(value).strip()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [_json_value(item) for item in value]
        return [item for item in items if item is not None]
    text = str(value).strip()
    if type(value).__name__ in {"PersonName", "UID"}:
        return text
    try:
        number = float(value)  # DSfloat, IS, DSdecimal
    except (TypeError, ValueError):
        return text
    if math.isfinite(number):
        return int(number) if number.is_integer() and type(value).__name__ == "IS" else number
    return None


# ------------------------------------------------------------------------------------------------ de-identifying


def _vr_by_keyword() -> dict[str, str]:
    if not _VR_BY_KEYWORD:
        from pydicom.datadict import DicomDictionary

        _VR_BY_KEYWORD.update({entry[4].lower(): entry[0] for entry in DicomDictionary.values() if entry[4]})
    return _VR_BY_KEYWORD


def _is_identifying_key(key: str) -> bool:
    normalised = re.sub(r"[\s_\-]", "", key).lower()
    match = _TAG_KEY_PATTERN.match(key.strip())
    if match:
        group = int(match.group(1), 16)
        if group % 2 == 1:
            return True
        from pydicom.datadict import keyword_for_tag

        keyword = keyword_for_tag((group << 16) | int(match.group(2), 16))
        normalised = keyword.lower() if keyword else normalised
    if normalised in _IDENTIFYING_KEYWORDS:
        return True
    if normalised.endswith("uid") and normalised not in _PUBLIC_UID_KEYWORDS:
        return True
    return _vr_by_keyword().get(normalised, "") in _IDENTIFYING_VRS


def _deidentify_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return deidentify(value)
    if isinstance(value, (list, tuple)):
        return [_deidentify_value(item) for item in value]
    return value


# ------------------------------------------------------------------------------------------------- DICOM series


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


def _series_member(data: bytes, label: str, max_pixels: int) -> tuple[tuple[str, int, int], Any] | None:
    """Grouping key and parsed dataset of a single-frame DICOM image that names its series, else ``None``."""
    if not data:
        return None
    kind = _detect_format(data)
    if kind not in {"dicom", "dicom-raw"}:
        return None
    try:
        dataset = _parse_dicom(data, label, force=kind == "dicom-raw", max_pixels=max_pixels)
        series = str(dataset.get("SeriesInstanceUID", "") or "")
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        key = (series, int(dataset.Rows), int(dataset.Columns))
    except Exception:  # noqa: BLE001 - read_image will report it with its own message
        return None
    if not series or frames != 1 or not _has_pixel_data(dataset):
        return None
    return key, dataset


def _read_group(
    members: list[tuple[str, Any]],
    errors: list[tuple[str, str]],
    *,
    include_identifiers: bool,
    max_pixels: int,
) -> list[Image]:
    """Decode the files of one series group; stack the ones that decode, report the others.

    A file repeating an earlier file's SOP Instance UID (the same image uploaded twice) is left out and
    reported; a group reduced to one file is read as a single image.
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
            errors.append((label, str(error)))
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
            errors.append((label, str(error)))
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
    except Ae4adError as error:
        errors.append((name, str(error)))
        return []


# ------------------------------------------------------------------------------------------------------- NIfTI


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
    from nibabel.orientations import apply_orientation, io_orientation, ornt2axcodes

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

    orientation = io_orientation(header.get_best_affine())
    if np.isfinite(orientation).all():
        source_codes = "".join(ornt2axcodes(orientation))
    else:
        orientation = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
        source_codes = "unknown"
        steps.append("the affine has no usable orientation: assumed RAS")
    canonical = apply_orientation(volume, orientation)
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

    plane = slice_axis
    planes = {"sagittal": (0, 1, 2), "coronal": (1, 0, 2), "axial": (2, 0, 1)}  # (through, across, up)
    through = planes[plane][0]
    singleton = [axis for axis in range(3) if canonical.shape[axis] == 1]
    if len(singleton) == 1 and canonical.shape[through] != 1:
        plane = next(name for name, axes in planes.items() if axes[0] == singleton[0])
        steps.append(f"single-slice image: shown in its own ({plane}) plane")
    through, across, up = planes[plane]
    stack = np.transpose(canonical, (through, up, across))[:, ::-1, ::-1]
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


# ------------------------------------------------------------------------------------------------------ Pillow


def _read_pillow(
    data: bytes,
    label: str,
    kind: str,
    *,
    frames: tuple[int, ...] | None,
    include_identifiers: bool,
    max_pixels: int,
    applied: list[str],
) -> Image:
    from PIL import Image as PillowImage
    from PIL import UnidentifiedImageError

    upper = _PILLOW_FORMATS[kind]
    try:
        picture = PillowImage.open(io.BytesIO(data), formats=[upper])
    except PillowImage.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{label}: {upper} declares too many pixels for Pillow's decompression-bomb limit ({_reason(error)})"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as error:
        raise UnreadableImageError(f"{label}: truncated or corrupt {upper} ({_reason(error)})") from None
    with picture:
        count = max(int(getattr(picture, "n_frames", 1) or 1), 1)
        chosen = _select(frames, count, label, "frame")
        sizes = []
        for index in chosen:
            if count > 1:
                picture.seek(index)
            sizes.append(tuple(picture.size))
        width, height = sizes[0]
        declared = sum(w * h for w, h in sizes)
        if declared > max_pixels:
            raise ImageTooLargeError(
                f"{label}: {upper} declares {len(chosen)} frame(s) of {width}x{height} = {declared} pixels, over "
                f"the cap of {max_pixels}; raise max_pixels or {_MAX_PIXELS_ENVIRONMENT_VARIABLE}"
            )
        if width <= 0 or height <= 0:
            raise UnreadableImageError(f"{label}: {upper} declares an empty {width}x{height} image")
        if len(set(sizes)) > 1:
            listed = ", ".join(f"{w}x{h}" for w, h in sorted(set(sizes)))
            raise UnsupportedImageError(
                f"{label}: {upper} pages have different sizes ({listed}); choose pages of one size with frames="
            )
        steps = list(applied)
        modes = []
        planes = []
        converted = False
        try:
            for index in chosen:
                if count > 1:
                    picture.seek(index)
                plane, frame_converted = _pillow_plane(picture, label, upper, steps)
                converted = converted or frame_converted
                modes.append(picture.mode)
                planes.append(plane)
        except Ae4adError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as error:
            raise UnreadableImageError(f"{label}: truncated or corrupt {upper} ({_reason(error)})") from None
        text_chunks = {
            str(key): value
            for key, value in picture.info.items()
            if isinstance(value, str) and isinstance(key, str)
        }
    if {plane.shape for plane in planes} != {planes[0].shape}:
        raise UnsupportedImageError(f"{label}: {upper} frames decode to different sizes")
    pixels = _replace_non_finite(np.stack(planes), steps)
    metadata: dict[str, Any] = {
        "format": kind,
        "mode": modes[0],
        "width": int(pixels.shape[2]),
        "height": int(pixels.shape[1]),
        "n_frames": count,
        "shape": list(pixels.shape),
        "converted_to_grayscale": converted,
        "applied": steps,
    }
    if frames is not None:
        metadata["frames"] = chosen
    if include_identifiers:
        metadata["identifiers"] = {key: str(value)[:1000] for key, value in text_chunks.items()}
    return Image(pixels=pixels, name=label, format=kind, metadata=metadata)


def _pillow_plane(picture, label: str, upper: str, steps: list[str]) -> tuple[np.ndarray, bool]:
    """One Pillow frame as a float32 ``(H, W)`` plane, and whether colour was turned into grayscale."""
    from PIL import ImageOps

    orientation = picture.getexif().get(0x0112, 1) if upper in {"JPEG", "PNG", "WEBP", "TIFF"} else 1
    frame = ImageOps.exif_transpose(picture) if orientation not in (1, None) else picture
    if frame is not picture:
        _note(steps, f"applied the EXIF orientation ({orientation})")
    mode = frame.mode
    if mode in _GRAY_PILLOW_MODES:
        return np.asarray(frame).astype(np.float32), False
    if mode == "1":
        _note(steps, "expanded 1-bit pixels to 0/255")
        return np.asarray(frame.convert("L")).astype(np.float32), False
    if mode not in _COLOUR_PILLOW_MODES:
        raise UnsupportedImageError(f"{label}: {upper} colour mode {mode!r} is not supported")
    if mode in {"LA", "La"}:
        _note(steps, "dropped the alpha channel")
        return np.asarray(frame.getchannel("L")).astype(np.float32), True
    if mode in {"CMYK", "YCbCr", "P", "PA", "RGBa"}:
        _note(steps, f"converted {mode} to RGB")
        frame = frame.convert("RGB")
    _note(steps, "converted colour to grayscale (BT.601 luminance)")
    return _luminance(np.asarray(frame)), True


def _note(steps: list[str], step: str) -> None:
    if step not in steps:
        steps.append(step)
