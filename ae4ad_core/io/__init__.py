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

Pixels only
-----------
``read_image(..., metadata="minimal")`` (:data:`METADATA_LEVELS`) is the screening path: the same decoder, checks,
pixels and one-line errors, without the header allow-list and the de-identification pass (a DICOM image then holds
only ``{"format", "applied"}`` as metadata).

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
:class:`~ae4ad_core.errors.UnreadableImageError` with a one-line message that starts with the file name; a
``frames`` index outside the file raises :class:`~ae4ad_core.errors.SliceSelectionError` (an ``IndexError``).

Modules
-------
* :mod:`~ae4ad_core.io.reader` -- :func:`read_image`, :func:`read_images` and :data:`READERS`: detect the
  format, unwrap gzip, hand the bytes to the reader of the format.
* :mod:`~ae4ad_core.io.image` -- :class:`Image`, the :class:`ImageReader` interface, limits, byte loading,
  the error boundary and format detection.
* :mod:`~ae4ad_core.io.dicom`, :mod:`~ae4ad_core.io.nifti`, :mod:`~ae4ad_core.io.pillow` -- one reader per
  format family.
* :mod:`~ae4ad_core.io.dicom_series` -- :func:`read_dicom_series` and the series grouping of
  :func:`read_images`.
* :mod:`~ae4ad_core.io.deidentify` -- :func:`deidentify` and the keys that identify someone.
"""

from ..errors import (  # noqa: F401 - importable from ae4ad_core.io as before the split
    Ae4adError,
    ImageTooLargeError,
    MissingDecoderError,
    UnreadableImageError,
    UnsupportedImageError,
    look_up_option,
)
from .deidentify import deidentify
from .dicom import DicomReader
from .dicom_series import read_dicom_series
from .image import (
    DEFAULT_MAX_PIXELS,
    METADATA_LEVELS,
    SUPPORTED_EXTENSIONS,
    Image,
    ImageReader,
    ReadOptions,
    is_dicom,
)
from .nifti import NiftiReader
from .pillow import PillowReader
from .reader import READERS, read_image, read_images

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "METADATA_LEVELS",
    "SUPPORTED_EXTENSIONS",
    "Image",
    "read_image",
    "read_dicom_series",
    "read_images",
    "is_dicom",
    "deidentify",
    "ImageReader",
    "ReadOptions",
    "READERS",
    "DicomReader",
    "NiftiReader",
    "PillowReader",
]
