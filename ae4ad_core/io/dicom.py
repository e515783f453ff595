"""Single-file DICOM: parse, check against the caps, decode, apply the Modality LUT, make grayscale.

Every transfer syntax pydicom and the pylibjpeg plugins decode is read, with or without the 128-byte preamble;
deflated datasets are inflated only up to the size cap. Metadata is an allow-list of acquisition fields,
de-identified; identifying fields only under ``metadata["identifiers"]`` when asked for.
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import (
    Ae4adError,
    ImageTooLargeError,
    MissingDecoderError,
    UnreadableImageError,
    UnsupportedImageError,
)
from .deidentify import _is_identifying_key, deidentify
from .image import (
    _FATAL_EXCEPTIONS,
    _MAX_PIXELS_ENVIRONMENT_VARIABLE,
    Image,
    ImageReader,
    ReadOptions,
    _byte_cap,
    _luminance,
    _reason,
    _replace_non_finite,
    _select,
)

__all__ = ["DicomReader"]

_DICOM_KINDS = frozenset({"dicom", "dicom-raw"})
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


class DicomReader(ImageReader):
    """Reads one DICOM file (``"DICM"`` after the preamble, or a preamble-less dataset) into frames."""

    name = "dicom"
    kinds = _DICOM_KINDS
    title = "DICOM"

    def read(self, data: bytes, label: str, options: ReadOptions, *, kind: str | None = None) -> Image:
        dataset = self.parse(data, label, options.max_pixels, kind=kind)
        return self.read_dataset(dataset, label, options)

    def parse(self, data: bytes, label: str, max_pixels: int, *, kind: str | None = None):
        """Parse the dataset (pixel data still encoded), e.g. to group files by series before decoding."""
        kind = self._checked_kind(data, label, kind)
        return _parse_dicom(data, label, force=kind == "dicom-raw", max_pixels=max_pixels)

    def read_dataset(self, dataset, label: str, options: ReadOptions) -> Image:
        """Decode a dataset :meth:`parse` returned (so that a file is parsed only once)."""
        return _read_dicom(
            dataset,
            label,
            frames=options.frames,
            include_identifiers=options.include_identifiers,
            max_pixels=options.max_pixels,
            applied=list(options.applied),
            minimal=options.metadata == "minimal",
        )


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
    minimal: bool = False,
) -> Image:
    decoded = _decode_dicom(dataset, label, frames=frames, max_pixels=max_pixels, applied=applied)
    if minimal:  # pixels only (screening): no header allow-list, no de-identification pass, no spacing
        return Image(
            pixels=decoded.pixels,
            name=label,
            format="dicom",
            metadata={"format": "dicom", "applied": decoded.applied},
            default_window=decoded.window,
        )
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
        target = pixels[position]  # each frame is converted to float32 once, straight into the output
        written = False
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
                    if not use_voi_lut and _exact_in_float32(values, slope, intercept):
                        np.add(values, np.float32(intercept), out=target, dtype=np.float32)
                        written = True
                    else:  # the float64 arithmetic, in one buffer, then one rounding to float32
                        values = values.astype(np.float64)
                        values *= slope
                        values += intercept
                    ends = ends * slope + intercept
                    modality_kinds.add(f"rescale slope {slope:g} intercept {intercept:g}")
        if use_voi_lut:
            values = apply_voi_lut(np.rint(values).astype(np.int64), dataset, prefer_lut=True)
            ends = apply_voi_lut(np.rint(ends).astype(np.int64), dataset, prefer_lut=True)
        low, high = float(np.min(ends)), float(np.max(ends))
        ranges.append((low, high))
        if not written:
            np.copyto(target, values, casting="unsafe")
        if photometric == "MONOCHROME1":
            np.subtract(np.float32(low + high), target, out=target)
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


def _exact_in_float32(values: np.ndarray, slope: float, intercept: float) -> bool:
    """Whether ``values * slope + intercept`` can be computed in float32 with the same result as in float64
    then rounded to float32: integer stored values of at most 16 bits, slope 1 and an integer intercept give
    integers below 2**24 in magnitude, exact in both (the common CT case: intercept -1024)."""
    return (
        slope == 1.0
        and float(intercept).is_integer()
        and abs(intercept) < 2**23
        and values.dtype.kind in "iu"
        and values.dtype.itemsize <= 2
    )


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
