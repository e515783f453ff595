"""Anomaly results as DICOM objects that go back into the patient's record, next to the scan they describe.

Two objects per scored DICOM image or series, both made with highdicom (Herrmann et al., J Digit Imaging
2022) and both in the source's study, sharing its Frame of Reference and referencing the source series and
every source instance (per frame), so a viewer overlays them on the scan:

* a **Parametric Map**: the anomaly map at the source resolution, float32, with a Real World Value Mapping
  naming the model, the scoring mode and the map's unit;
* a **Segmentation** (binary): the pixels above the model's calibrated pixel threshold.

These objects carry the patient's identifiers on purpose (highdicom copies the Patient and Study modules from
the source): they are written only when asked for (``ae4ad score --dicom``, the Analyze page's DICOM
download). Everything else the library writes stays de-identified.

The source datasets are re-read here with pydicom (the image reader de-identifies its metadata) and put in
the order of :attr:`ae4ad_core.io.Image.pixels`; see :func:`read_source_datasets`.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UnreadableImageError, UnsupportedImageError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from .analysis import Analysis
    from .io import Image

__all__ = [
    "DicomResults",
    "DICOM_INPUT_NEEDED",
    "MAP_UNITS",
    "build_dicom_results",
    "dicom_results_for_uploads",
    "dicom_results_zip",
    "read_source_datasets",
    "write_dicom_results",
]

DICOM_INPUT_NEEDED = "DICOM results need a DICOM input (a DICOM file or a folder holding one DICOM series)"

# (UCUM code, code meaning, short explanation) of each scoring mode's map; see ae4ad_core.scoring.
MAP_UNITS: dict[str, tuple[str, str, str]] = {
    "reconstruction": ("1", "no units", "squared error, intensities in [-1, 1]"),
    "kl": ("{nat}", "nats per unit intensity", "smoothed |dKL/dx|, nats per unit"),
    "combined": ("1", "no units", "KL-weighted squared error"),
}

_MANUFACTURER = "AE4AD Studio"
_MODEL_NAME = "ae4ad"
_SERIES_NUMBER_MAP = 9901  # the segmentation gets the next number


@dataclass(frozen=True)
class DicomResults:
    """The two result objects of one scored DICOM image or series.

    Attributes
    ----------
    parametric_map : pydicom.dataset.Dataset
        The anomaly map (Parametric Map Storage), frames ``(N, H, W)`` float32 in the mode's units.
    segmentation : pydicom.dataset.Dataset
        The above-threshold region (Segmentation Storage, binary, one segment).
    """

    parametric_map: Any
    segmentation: Any

    def file_names(self, stem: str) -> tuple[str, str]:
        """``(<stem>_map.dcm, <stem>_seg.dcm)``."""
        return f"{stem}_map.dcm", f"{stem}_seg.dcm"

    def to_bytes(self) -> tuple[bytes, bytes]:
        """Both objects encoded as DICOM files (Part 10, with preamble and file meta)."""
        out = []
        for dataset in (self.parametric_map, self.segmentation):
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            out.append(buffer.getvalue())
        return out[0], out[1]


# ------------------------------------------------------------------------------------------------ source files


def _dcmread(source: str | os.PathLike | tuple[str, bytes]) -> tuple[str, Dataset]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, tuple):
        name, data = source
        name = str(name)
        opener = lambda: io.BytesIO(bytes(data))  # noqa: E731
    else:
        name = Path(source).name
        opener = lambda: os.fspath(source)  # noqa: E731
    try:
        try:
            return name, pydicom.dcmread(opener())
        except InvalidDicomError:
            return name, pydicom.dcmread(opener(), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises assorted types on corrupt files
        raise UnreadableImageError(f"{name}: cannot be read as DICOM ({exc})") from None


def _slice_positions(datasets: Sequence[Dataset]) -> list[float] | None:
    """Image Position (Patient) projected on the slice normal, or ``None`` when missing or degenerate."""
    try:
        orientation = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient], dtype=float)
        normal = np.cross(orientation[:3], orientation[3:6])
        if orientation.size != 6 or not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
            return None
        positions = []
        for dataset in datasets:
            position = np.asarray([float(v) for v in dataset.ImagePositionPatient], dtype=float)
            if position.size != 3 or not np.isfinite(position).all():
                return None
            positions.append(float(position @ normal))
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return positions


def _series_order(datasets: Sequence[Dataset]) -> list[int]:
    """The slice order of :func:`ae4ad_core.io.read_dicom_series`: by position along the slice normal, else by
    Instance Number, else as given (ties keep the input order)."""
    count = len(datasets)
    positions = _slice_positions(datasets)
    if positions is not None and len(set(positions)) == count:
        return sorted(range(count), key=lambda i: (positions[i], i))
    numbers = []
    for dataset in datasets:
        try:
            numbers.append(float(dataset.get("InstanceNumber")))
        except (TypeError, ValueError):
            numbers.append(None)
    if all(n is not None for n in numbers) and len(set(numbers)) == count:
        return sorted(range(count), key=lambda i: (numbers[i], i))
    return list(range(count))


def read_source_datasets(
    sources: Sequence[str | os.PathLike | tuple[str, bytes]],
    *,
    image: Image | None = None,
) -> list[Dataset]:
    """Re-read the DICOM files of a scored image with pydicom, identifiers kept, in the order of its slices.

    Parameters
    ----------
    sources : sequence of path or (name, bytes)
        The file(s) the image was read from: one (possibly multi-frame) file, or the files of one series in
        any order.
    image : Image, optional
        The image :mod:`ae4ad_core.io` read from ``sources``. When given, its ``metadata["files"]`` (the
        reader's slice order) orders the files, and the slice count is checked against ``image.pixels``.
        Otherwise the files are sorted with the reader's rule (position along the slice normal, then Instance
        Number).

    Returns
    -------
    list of pydicom.dataset.Dataset
        One dataset per slice of the image (one dataset for a single or multi-frame file).

    Raises
    ------
    UnsupportedImageError
        ``image`` is not a DICOM image (``format`` other than ``dicom``/``dicom-series``), or the files do not
        match its slices.
    UnreadableImageError
        A file pydicom cannot read.
    """
    if image is not None and image.format not in ("dicom", "dicom-series"):
        raise UnsupportedImageError(f"{image.name}: {DICOM_INPUT_NEEDED}; this is a {image.format} image.")
    named = [_dcmread(source) for source in sources]
    if not named:
        raise UnreadableImageError("DICOM results: no source files were given.")
    for name, dataset in named:
        has_pixels = "PixelData" in dataset or "FloatPixelData" in dataset
        if "SOPInstanceUID" not in dataset or not has_pixels:
            raise UnsupportedImageError(f"{name}: {DICOM_INPUT_NEEDED}; this file holds no DICOM image.")
    files = list(image.metadata.get("files", [])) if image is not None else []
    names = [name for name, _ in named]
    if len(named) > 1 and files and sorted(files) == sorted(names) and len(set(names)) == len(names):
        by_name = dict(named)
        datasets = [by_name[name] for name in files]
    else:
        datasets = [named[i][1] for i in _series_order([d for _, d in named])]
    if image is not None:
        count = sum(int(d.get("NumberOfFrames", 1) or 1) for d in datasets)
        if count != image.n_slices:
            raise UnsupportedImageError(
                f"{image.name}: {len(datasets)} DICOM file(s) with {count} frame(s) do not match the image's "
                f"{image.n_slices} slice(s); pass the files the image was read from."
            )
    return datasets


# ------------------------------------------------------------------------------------------------------ build


def _slices_of(analyses: Analysis | Sequence[Analysis]) -> tuple[list[int], np.ndarray, np.ndarray, Analysis]:
    """Slice indices, input-space maps ``(N, H, W)`` float32 and masks ``(N, H, W)`` bool of one or more
    analyses of the same image (e.g. chunks), sorted by slice index."""
    items = [analyses] if hasattr(analyses, "slice_indices") else list(analyses)
    if not items:
        raise ValueError("DICOM results: no analysis was given.")
    first = items[0]
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for analysis in items:
        if (analysis.model_name, analysis.mode) != (first.model_name, first.mode):
            raise ValueError("DICOM results: the analyses must come from one model in one mode.")
        for i, index in enumerate(analysis.slice_indices):
            rows[int(index)] = (analysis.map_in_input_space(i), analysis.outline_in_input_space(i))
    indices = sorted(rows)
    maps = np.stack([rows[i][0] for i in indices]).astype(np.float32, copy=False)
    masks = np.stack([rows[i][1] for i in indices]).astype(bool, copy=False)
    return indices, maps, masks, first


def _software_versions() -> str:
    from . import __version__

    return str(__version__)


def build_dicom_results(
    source_datasets: Sequence[Dataset],
    analysis: Analysis | Sequence[Analysis],
    *,
    series_number: int = _SERIES_NUMBER_MAP,
) -> DicomResults:
    """Make the Parametric Map and the Segmentation of an analysis of a DICOM image.

    Parameters
    ----------
    source_datasets : sequence of pydicom.dataset.Dataset
        The source image's datasets with identifiers, in the order of its slices (see
        :func:`read_source_datasets`): one per slice, or one multi-frame dataset (then every frame must
        have been scored).
    analysis : Analysis or sequence of Analysis
        The scored slices (several analyses of the same image, e.g. chunks, are merged by slice index). Only
        scored slices get frames.
    series_number : int
        Series Number of the map; the segmentation gets the next one.

    Returns
    -------
    DicomResults

    Raises
    ------
    UnsupportedImageError
        The source cannot carry derived objects (no Frame of Reference, a multi-frame file scored in part, a
        geometry highdicom refuses); the message says why.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    indices, maps, masks, first = _slices_of(analysis)
    sources = list(source_datasets)
    multi_frame = len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1
    if multi_frame:
        n_frames = int(sources[0].NumberOfFrames)
        if indices != list(range(n_frames)):
            raise UnsupportedImageError(
                f"DICOM results of a multi-frame file need every frame scored ({len(indices)} of {n_frames} "
                "were); score without --slices."
            )
        referenced = sources
    else:
        if indices and indices[-1] >= len(sources):
            raise UnsupportedImageError(
                f"DICOM results: slice {indices[-1]} was scored but only {len(sources)} source file(s) were given."
            )
        referenced = [sources[i] for i in indices]
    rows, columns = int(referenced[0].Rows), int(referenced[0].Columns)
    if maps.shape[1:] != (rows, columns):
        raise UnsupportedImageError(
            f"DICOM results: the maps are {maps.shape[1]}x{maps.shape[2]}, the source images {rows}x{columns}."
        )
    if "FrameOfReferenceUID" not in referenced[0]:
        raise UnsupportedImageError(
            "DICOM results need a source with a Frame of Reference UID (a cross-sectional image such as CT or "
            "MR); this file has none."
        )
    unit_code, unit_meaning, unit_text = MAP_UNITS.get(first.mode, MAP_UNITS["reconstruction"])
    model = str(first.model_name)
    low, high = float(np.min(maps)), float(np.max(maps))
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=model[:16],
        lut_explanation=f"{model} {first.mode}: {unit_text}"[:64],
        unit=hd.sr.CodedConcept(value=unit_code, scheme_designator="UCUM", meaning=unit_meaning),
        value_range=(low, high if high > low else low + 1.0),
        slope=1.0,
        intercept=0.0,
    )
    display_max = float(first.display_max) if np.isfinite(first.display_max) and first.display_max > 0 else 1.0
    versions = _software_versions()
    description = f"AE4AD {first.mode} anomaly map, model {model}"[:64]
    try:
        def new_instance(number: int) -> dict:
            """What both result objects state about themselves: fresh UIDs, series number, this software."""
            return dict(source_images=referenced, series_instance_uid=hd.UID(), series_number=number,
                        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=_MANUFACTURER,
                        manufacturer_model_name=_MODEL_NAME, software_versions=versions, device_serial_number="0")

        parametric_map = hd.pm.ParametricMap(
            pixel_array=maps,
            **new_instance(series_number),
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[
                # LINEAR_EXACT: the window maps [0, display_max] exactly; plain LINEAR forbids widths < 1
                hd.VOILUTTransformation(window_center=display_max / 2, window_width=display_max,
                                        voi_lut_function="LINEAR_EXACT")
            ],
            content_description=description,
            content_label="ANOMALY_MAP",
            series_description=f"AE4AD anomaly map ({model}, {first.mode})"[:64],
        )
        # General Series: Laterality is Type 2C; dciodvfy requires it on a Parametric Map, so carry the
        # source's value (empty when the source has none).
        parametric_map.Laterality = referenced[0].get("Laterality", "")
        algorithm = hd.AlgorithmIdentificationSequence(
            name=model[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=versions,
            parameters={"mode": first.mode, "pixel_threshold": f"{float(first.pixel_threshold):.6g}"},
        )
        segment = hd.seg.SegmentDescription(
            segment_number=1,
            segment_label="Above threshold",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=hd.sr.CodedConcept(value="263654008", scheme_designator="SCT",
                                                       meaning="Abnormal"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        segmentation = hd.seg.Segmentation(
            pixel_array=masks.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            **new_instance(series_number + 1),
            content_description=f"AE4AD above-threshold region, model {model} ({first.mode})"[:64],
            content_label="ABOVE_THRESHOLD",
            series_description=f"AE4AD above threshold ({model}, {first.mode})"[:64],
        )
    except Exception as exc:  # noqa: BLE001 - highdicom refuses a source in assorted types; one line each
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedImageError(f"DICOM results cannot be made for this source: {message}") from None
    return DicomResults(parametric_map=parametric_map, segmentation=segmentation)


def write_dicom_results(
    source_datasets: Sequence[Dataset],
    analysis: Analysis | Sequence[Analysis],
    out_dir: str | os.PathLike,
    *,
    stem: str = "result",
) -> list[Path]:
    """Write the Parametric Map and the Segmentation (see :func:`build_dicom_results`) to ``out_dir``.

    Parameters
    ----------
    source_datasets : sequence of pydicom.dataset.Dataset
        See :func:`build_dicom_results`.
    analysis : Analysis or sequence of Analysis
    out_dir : path
        Created if missing.
    stem : str
        File names are ``<stem>_<mode>_map.dcm`` and ``<stem>_<mode>_seg.dcm``.

    Returns
    -------
    list of Path
        ``[map file, segmentation file]``.
    """
    results = build_dicom_results(source_datasets, analysis)
    mode = (analysis if hasattr(analysis, "mode") else list(analysis)[0]).mode
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in zip(results.file_names(f"{stem}_{mode}"), results.to_bytes(), strict=True):
        path = out / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def dicom_results_zip(
    sources: Sequence[str | os.PathLike | tuple[str, bytes]],
    analysis: Analysis | Sequence[Analysis],
    *,
    image: Image | None = None,
    stem: str = "result",
) -> bytes:
    """The two DICOM result files of uploaded (or on-disk) sources, as one ZIP archive in memory.

    For the app's download button: ``sources`` are the uploaded ``(name, bytes)`` of the image, ``image``
    what :mod:`ae4ad_core.io` read from them (orders the files, see :func:`read_source_datasets`).

    Raises
    ------
    UnsupportedImageError
        ``image`` is not DICOM (message :data:`DICOM_INPUT_NEEDED`) or the source cannot carry the objects.
    """
    datasets = read_source_datasets(sources, image=image)
    results = build_dicom_results(datasets, analysis)
    mode = (analysis if hasattr(analysis, "mode") else list(analysis)[0]).mode
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in zip(results.file_names(f"{stem}_{mode}"), results.to_bytes(), strict=True):
            archive.writestr(name, data)
    return buffer.getvalue()


def dicom_results_for_uploads(
    uploads: Sequence[tuple[str, bytes]],
    image: Image,
    analysis: Analysis | Sequence[Analysis],
) -> tuple[str, bytes]:
    """The DICOM results of one image among uploaded files, as ``(file name, ZIP bytes)`` for a download.

    What the Analyze page calls: ``uploads`` are the uploaded ``(name, bytes)`` as given to
    :func:`ae4ad_core.io.read_images` (ZIP archives are expanded the same way, see
    :func:`ae4ad_core.archive.expand_uploads`), ``image`` one of the images read from them and ``analysis`` its
    analysis. The image's files are picked by name (``image.metadata["files"]`` for a series).

    Raises
    ------
    UnsupportedImageError
        ``image`` is not DICOM (message :data:`DICOM_INPUT_NEEDED`), its files are not among ``uploads``, or
        the source cannot carry the objects.
    """
    from .archive import expand_uploads

    if image.format not in ("dicom", "dicom-series"):
        raise UnsupportedImageError(f"{image.name}: {DICOM_INPUT_NEEDED}; this is a {image.format} image.")
    wanted = list(image.metadata.get("files") or [image.name])
    files, _ = expand_uploads(uploads)
    by_name = {name: data for name, data in files}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise UnsupportedImageError(f"{image.name}: the uploaded files do not include {missing[0]}.")
    stem = Path(image.name.replace("\\", "/")).name or "result"
    for suffix in (".dcm", ".dicom"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    data = dicom_results_zip([(name, by_name[name]) for name in wanted], analysis, image=image, stem=stem)
    return f"{stem}_dicom_results.zip", data
