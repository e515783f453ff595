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
    "dicom_series_from_nifti",
    "nifti_bytes",
    "write_dicom_series",
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


# Header fields of a typical clinical 2D axial acquisition per sequence (1.5 T, TR/TE/TI in ms), as a scanner
# writes them: the words, the timing, the scanning sequence and, after contrast, the agent.
SERIES_HEADERS: dict[str, dict] = {
    "flair": dict(
        SeriesDescription="AX FLAIR", ProtocolName="AX T2 FLAIR", ScanningSequence="SE\\IR",
        SequenceVariant="SK\\SP\\MP", RepetitionTime=9000.0, EchoTime=120.0, InversionTime=2500.0,
        EchoTrainLength=24, FlipAngle=90.0,
    ),
    "t1c": dict(
        SeriesDescription="AX T1 POST GD", ProtocolName="AX T1 SE POST", ScanningSequence="SE",
        SequenceVariant="SK\\SP", RepetitionTime=500.0, EchoTime=12.0, EchoTrainLength=1, FlipAngle=90.0,
        ContrastBolusAgent="GADOLINIUM", ContrastBolusVolume=15.0,
    ),
    "t1": dict(
        SeriesDescription="AX T1", ProtocolName="AX T1 SE", ScanningSequence="SE", SequenceVariant="SK\\SP",
        RepetitionTime=500.0, EchoTime=12.0, EchoTrainLength=1, FlipAngle=90.0,
    ),
    "t2": dict(
        SeriesDescription="AX T2 FSE", ProtocolName="AX T2 FSE", ScanningSequence="SE",
        SequenceVariant="SK\\SP", RepetitionTime=4000.0, EchoTime=100.0, EchoTrainLength=16, FlipAngle=90.0,
    ),
}


def _ras_to_lps(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, dtype=float) * np.array([-1.0, -1.0, 1.0])


def dicom_series_from_nifti(
    source: str | Path | bytes,
    *,
    sequence: str | None = None,
    name: str = "scan",
) -> list[tuple[str, bytes]]:
    """An axial NIfTI volume as the MR DICOM series a scanner would have written: one file per slice.

    The slices are those :func:`ae4ad_core.io.read_image` shows for the NIfTI (closest canonical RAS axes,
    the patient's right on the image left, anterior at the top), so the series reads back as the same volume.
    Each file has the geometry of its slice from the NIfTI affine (Image Position/Orientation (Patient), Pixel
    Spacing, Slice Thickness, Spacing Between Slices, Slice Location, in DICOM's LPS coordinates), the same
    Study, Series and Frame of Reference UIDs, and the header of its sequence (:data:`SERIES_HEADERS`:
    description, timing, scanning sequence, a contrast agent for T1c). Instance Number 1 is the most superior
    slice, as many scanners number them, so a reader has to sort by position.

    Parameters
    ----------
    source : path or bytes
        A 3-D NIfTI (``.nii`` or ``.nii.gz``); integer voxels are stored as they are, others are scaled to
        12 bits with Rescale Slope/Intercept.
    sequence : {"flair", "t1c", "t1", "t2"}, optional
        The header to write; by default the one the file name says
        (:func:`ae4ad_core.sequence.sequence_from_name`).
    name : str
        Prefix of the file names (``"<name>-0001.dcm"``, in Instance Number order).

    Returns
    -------
    list of (file name, bytes)
    """
    import nibabel
    from pydicom.uid import generate_uid

    from ae4ad_core.sequence import sequence_from_name

    if isinstance(source, bytes):
        data = gzip.decompress(source) if source[:2] == b"\x1f\x8b" else source
        image = nibabel.Nifti1Image.from_bytes(data)
        label = name
    else:
        image, label = nibabel.load(str(source)), Path(source).name
    sequence = sequence or sequence_from_name(label).sequence
    if sequence not in SERIES_HEADERS:
        raise ValueError(f"{label}: no DICOM header for sequence {sequence!r}; pass sequence=")
    canonical = nibabel.as_closest_canonical(image)
    volume = np.asanyarray(canonical.dataobj)
    if volume.ndim != 3:
        raise ValueError(f"{label}: a 3-D volume is needed, not {volume.shape}")
    affine = canonical.affine
    if np.issubdtype(volume.dtype, np.integer) and volume.min() >= 0 and volume.max() <= 65535:
        stored, rescale = volume.astype(np.uint16), None
    elif np.issubdtype(volume.dtype, np.integer) and volume.min() >= -32768 and volume.max() <= 32767:
        stored, rescale = volume.astype(np.int16), None
    else:
        lo, hi = float(np.nanmin(volume)), float(np.nanmax(volume))
        slope = (hi - lo) / 4095 if hi > lo else 1.0
        stored = np.round((np.nan_to_num(volume, nan=lo) - lo) / slope).astype(np.uint16)
        rescale = (slope, lo)

    nx, ny, nz = volume.shape
    # Pixel (row r, column c) of slice k is canonical voxel (nx-1-c, ny-1-r, k): columns run to the patient's
    # left, rows to posterior, as the NIfTI reader lays out an axial slice.
    across, down = -affine[:3, 0], -affine[:3, 1]
    row_cosine = _ras_to_lps(across / np.linalg.norm(across))
    column_cosine = _ras_to_lps(down / np.linalg.norm(down))
    normal = np.cross(row_cosine, column_cosine)
    through = _ras_to_lps(affine[:3, 2])
    thickness = abs(float(through @ normal))
    pixel_spacing = (float(np.linalg.norm(down)), float(np.linalg.norm(across)))

    study, series, frame = generate_uid(), generate_uid(), generate_uid()  # a new study every call
    header = dict(SERIES_HEADERS[sequence])
    header.update(
        StudyInstanceUID=study,
        FrameOfReferenceUID=frame,
        StudyDescription="MRI BRAIN WITH AND WITHOUT CONTRAST",
        Manufacturer="GE MEDICAL SYSTEMS",
        ManufacturerModelName="Signa HDxt",
        MagneticFieldStrength=1.5,
        MRAcquisitionType="2D",
        BodyPartExamined="BRAIN",
        PatientPosition="HFS",
        PatientName="Anonymous",
        PatientID="ANON0001",
        SeriesNumber=5 if sequence == "flair" else 9,
        AcquisitionNumber=1,
        SliceThickness=round(thickness, 4),
        SpacingBetweenSlices=round(thickness, 4),
        PositionReferenceIndicator="",
    )
    files = []
    for k in range(nz):
        instance = nz - k  # 1 = the most superior slice
        position = _ras_to_lps((affine @ np.array([nx - 1, ny - 1, k, 1.0]))[:3])
        dicom = dicom_bytes(
            stored[::-1, ::-1, k].T,
            position=[round(float(v), 6) for v in position],
            orientation=[round(float(v), 8) for v in (*row_cosine, *column_cosine)],
            instance_number=instance,
            series_uid=series,
            rescale=rescale,
            identifiers=False,
            pixel_spacing=pixel_spacing,
            modality="MR",
            SliceLocation=round(float(position @ normal), 4),
            **header,
        )
        files.append((f"{name}-{instance:04d}.dcm", dicom))
    return sorted(files)


def write_dicom_series(source: str | Path | bytes, folder: str | Path, **options) -> list[Path]:
    """:func:`dicom_series_from_nifti` written into ``folder`` (created); the paths in Instance Number
    order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file_name, data in dicom_series_from_nifti(source, **options):
        paths.append(folder / file_name)
        paths[-1].write_bytes(data)
    return paths


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
