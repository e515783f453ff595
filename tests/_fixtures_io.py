"""Builders of small image files for the I/O, archive and fuzz tests (all in memory, no network)."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "PYDICOM_TEST_FILES",
    "pydicom_test_file",
    "dicom_bytes",
    "nifti_bytes",
    "png_bytes",
    "png_header_only",
    "tiff_pages_bytes",
]


def _pydicom_test_root() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).resolve().parent / "test_files"


PYDICOM_TEST_FILES: tuple[Path, ...] = tuple(
    sorted(path for path in _pydicom_test_root().rglob("*") if path.is_file())
)
"""Every file shipped inside pydicom's ``data/test_files`` folder (DICOM and not). Listed from disk rather than
with ``pydicom.data.get_testdata_files``, which also tries to download the pydicom-data files over the network."""


def pydicom_test_file(name: str) -> Path:
    """Path of one file shipped with pydicom, by its name relative to ``test_files``."""
    path = _pydicom_test_root() / name
    if not path.is_file():
        raise FileNotFoundError(f"pydicom test file {name!r} is not installed")
    return path


def dicom_bytes(
    pixels: np.ndarray | None = None,
    *,
    photometric: str = "MONOCHROME2",
    position: Sequence[float] | None = None,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    instance_number: int | None = None,
    series_uid: str | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    identifiers: bool = True,
    preamble: bool = True,
    pixel_spacing: tuple[float, float] | None = (0.5, 0.5),
    modality: str = "CT",
    **tags,
) -> bytes:
    """A small uncompressed (Explicit VR Little Endian) DICOM file with made-up identifiers.

    ``modality`` picks the Modality and the matching storage class (CT, MR, else Secondary Capture); any other
    keyword (``SeriesDescription=...``, ``RepetitionTime=...``) is set on the dataset as given.

    Parameters
    ----------
    pixels : numpy.ndarray, optional
        ``(H, W)`` or ``(frames, H, W)`` uint16/int16/uint8 values; a 16x16 ramp by default.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if pixels is None:
        pixels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    pixels = np.asarray(pixels)
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    rows, columns = pixels.shape[-2:]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}.get(
        modality, "1.2.840.10008.5.1.4.1.1.7"
    )  # CT / MR Image Storage, else Secondary Capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    dataset.Manufacturer = "Example Medical"
    dataset.StudyDescription = "Synthetic study"
    dataset.SeriesInstanceUID = series_uid or generate_uid()
    dataset.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.99999"
    if identifiers:
        dataset.PatientName = "Doe^Jane"
        dataset.PatientID = "ID-12345"
        dataset.PatientBirthDate = "19700101"
        dataset.PatientSex = "F"
        dataset.AccessionNumber = "ACC-777"
        dataset.InstitutionName = "St Example Hospital"
        dataset.ReferringPhysicianName = "House^Gregory"
        dataset.StudyDate = "20240229"
        dataset.StudyTime = "101010"
        dataset.StationName = "SCANNER-7"
        dataset.DeviceSerialNumber = "SN-424242"
        dataset.add_new(0x00091010, "LO", "private secret")
    dataset.Rows, dataset.Columns = int(rows), int(columns)
    if frames > 1:
        dataset.NumberOfFrames = frames
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = pixels.dtype.itemsize * 8
    dataset.BitsStored = pixels.dtype.itemsize * 8
    dataset.HighBit = pixels.dtype.itemsize * 8 - 1
    dataset.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if pixel_spacing is not None:
        dataset.PixelSpacing = list(pixel_spacing)
    if position is not None:
        dataset.ImagePositionPatient = [float(value) for value in position]
        dataset.ImageOrientationPatient = [float(value) for value in orientation]
    if instance_number is not None:
        dataset.InstanceNumber = instance_number
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if not preamble:
        return data[132:]  # drop the preamble, the "DICM" prefix stays off: raw file meta + dataset
    return data


def nifti_bytes(
    volume: np.ndarray, *, affine: np.ndarray | None = None, compress: bool = False, version: int = 1
) -> bytes:
    """A single-file NIfTI (``.nii``, or ``.nii.gz`` when ``compress``) holding ``volume``."""
    import nibabel

    image_class = nibabel.Nifti1Image if version == 1 else nibabel.Nifti2Image
    image = image_class(np.asarray(volume), affine if affine is not None else np.eye(4))
    image.header.set_xyzt_units("mm")
    data = image.to_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


def png_bytes(array: np.ndarray, *, mode: str | None = None) -> bytes:
    """A PNG of ``array`` through Pillow (``uint16`` arrays become 16-bit grayscale)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(array))
    if mode is not None and picture.mode != mode:
        picture = picture.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (with a correct CRC) declares ``width`` x ``height`` 8-bit gray pixels, plus a tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def tiff_pages_bytes(pages: Sequence[np.ndarray]) -> bytes:
    """A multi-page TIFF, one page per array (uint8 or uint16 grayscale)."""
    from PIL import Image

    pictures = [Image.fromarray(np.asarray(page)) for page in pages]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="TIFF", save_all=True, append_images=pictures[1:])
    return buffer.getvalue()
