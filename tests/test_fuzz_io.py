"""Property tests: mutated DICOM, NIfTI, PNG/TIFF/JPEG and ZIP bytes are read or refused with a library error.

Each example flips, deletes, inserts or overwrites bytes of a real file (biased towards the headers, where the
parsers make their decisions) or truncates it. The reader must then either return a valid :class:`Image` or
raise an :class:`~ae4ad_core.errors.Ae4adError` whose message is one line starting with the file name; never
another exception type, never more than the deadline.

CI runs 60 examples per test, derandomised so that every run checks the same inputs. For a longer hunt::

    AE4AD_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz_io.py -q
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import struct
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from _fixtures_io import dicom_bytes, nifti_bytes, png_bytes, pydicom_test_file, tiff_pages_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ae4ad_core.archive import ArchiveLimits, expand_uploads, iter_archive
from ae4ad_core.errors import Ae4adError
from ae4ad_core.io import Image, read_image, read_images

pytestmark = pytest.mark.filterwarnings("ignore")

FUZZ_EXAMPLES = int(os.environ.get("AE4AD_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=timedelta(seconds=2),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_PIXELS = 4_000_000  # a mutated header may declare anything up to this: keeps each example fast
NAME = "fuzz.bin"
INTERESTING_VALUES = (
    b"\x00",
    b"\xff",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\xff\xff\xff\x7f",
    b"\x00\x00\x00\x80",
    struct.pack("<I", 65535),
    struct.pack("<H", 0x7FFF),
    struct.pack("<h", -1),
    struct.pack("<f", float("nan")),
    struct.pack("<d", float("inf")),
    b"DICM",
    b"\xfe\xff\x00\xe0",  # DICOM item tag
    b"\xfe\xff\xdd\xe0",  # DICOM sequence delimiter
    b"OB\x00\x00",
    b"SQ\x00\x00",
)


def _png_rgb() -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))


def _jpeg_gray() -> bytes:
    from PIL import Image as PillowImage

    buffer = io.BytesIO()
    PillowImage.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in members:
            archive.writestr(member, content)
    return buffer.getvalue()


def _volume() -> np.ndarray:
    return np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)


DICOM_SEEDS = [
    pydicom_test_file(name).read_bytes()
    for name in (
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "SC_rgb_small_odd_jpeg.dcm",
        "SC_rgb_rle_2frame.dcm",
        "rtdose_1frame.dcm",
        "dicomdirtests/77654033/CR1/6154",
        "zipMR.gz",
    )
] + [
    dicom_bytes(
        np.arange(3 * 8 * 6, dtype=np.uint16).reshape(3, 8, 6), rescale=(2.0, -100.0), window=(0.0, 50.0)
    ),
    dicom_bytes(photometric="MONOCHROME1", preamble=False),
]
NIFTI_SEEDS = [
    nifti_bytes(_volume()),
    nifti_bytes(_volume(), compress=True),
    nifti_bytes(_volume().astype(np.float32), version=2),
    nifti_bytes(np.zeros((4, 3, 2, 2), np.uint8)),
]
PILLOW_SEEDS = [
    png_bytes(np.arange(80, dtype=np.uint8).reshape(8, 10)),
    png_bytes(np.arange(80, dtype=np.uint16).reshape(8, 10) * 800),
    _png_rgb(),
    tiff_pages_bytes([np.full((6, 7), 3, np.uint16), np.full((6, 7), 9, np.uint16)]),
    _jpeg_gray(),
    gzip.compress(png_bytes(np.ones((4, 4), np.uint8)), mtime=0),
]
ZIP_SEEDS = [
    _zip([("study/a.dcm", DICOM_SEEDS[0]), ("study/b.png", PILLOW_SEEDS[0])]),
    _zip([("outer/inner.zip", _zip([("c.png", PILLOW_SEEDS[1])])), ("d.nii", NIFTI_SEEDS[0])]),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed file with one to four byte-level mutations, most of them within its first 600 bytes."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not data:
            break
        limit = len(data) - 1
        position = draw(st.one_of(st.integers(0, min(limit, 599)), st.integers(0, limit)))
        operation = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
        if operation == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "overwrite":
            value = draw(st.one_of(st.sampled_from(INTERESTING_VALUES), st.binary(min_size=1, max_size=8)))
            data[position : position + len(value)] = value
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        else:
            del data[position:]
    return bytes(data)


def _check_read(data: bytes) -> None:
    try:
        image = read_image(data, name=NAME, max_pixels=MAX_PIXELS)
    except Ae4adError as error:
        message = str(error)
        assert message.startswith(f"{NAME}: "), message
        assert "\n" not in message, message
        return
    assert isinstance(image, Image)
    assert image.pixels.ndim == 3 and image.pixels.dtype == np.float32 and image.pixels.size > 0
    assert np.isfinite(image.pixels).all()
    json.dumps(image.metadata, allow_nan=False)
    for pair in (image.spacing, image.default_window):
        assert pair is None or (len(pair) == 2 and all(np.isfinite(pair)))


def test_every_seed_reads_cleanly() -> None:
    for data in DICOM_SEEDS + NIFTI_SEEDS + PILLOW_SEEDS:
        assert read_image(data, name=NAME).n_slices >= 1
    for data in ZIP_SEEDS:
        assert iter_archive(data, name="seed.zip")


@FUZZ
@given(mutated(DICOM_SEEDS))
def test_mutated_dicom_is_read_or_refused(data: bytes) -> None:
    _check_read(data)


@FUZZ
@given(mutated(NIFTI_SEEDS))
def test_mutated_nifti_is_read_or_refused(data: bytes) -> None:
    _check_read(data)


@FUZZ
@given(mutated(PILLOW_SEEDS))
def test_mutated_png_tiff_jpeg_is_read_or_refused(data: bytes) -> None:
    _check_read(data)


@FUZZ
@given(mutated(ZIP_SEEDS))
def test_mutated_archives_are_expanded_or_refused(data: bytes) -> None:
    limits = ArchiveLimits(max_total_bytes=4 * 1024 * 1024, max_files=50)
    try:
        members = iter_archive(data, name="fuzz.zip", limits=limits)
    except Ae4adError as error:
        assert str(error).startswith("fuzz.zip: ") and "\n" not in str(error)
    else:
        assert all(isinstance(name, str) and isinstance(content, bytes) for name, content in members)
        assert all(".." not in name.split("/") and not name.startswith("/") for name, _ in members)
    files, errors = expand_uploads([("fuzz.zip", data)], limits=limits)
    assert isinstance(files, list) and isinstance(errors, list)
    for name, reason in errors:
        assert name == "fuzz.zip" and reason.startswith("fuzz.zip: ") and "\n" not in reason, reason


@FUZZ
@given(st.lists(mutated(DICOM_SEEDS + PILLOW_SEEDS), min_size=1, max_size=4))
def test_mutated_batches_never_raise(batch: list[bytes]) -> None:
    sources = [(f"file{index}", data) for index, data in enumerate(batch)]
    names = [name for name, _ in sources]
    images, errors = read_images(sources, max_pixels=MAX_PIXELS)
    assert len(images) + len(errors) >= 1
    for name, reason in errors:
        # Reported under a file of the batch, or under the series its files were stacked into ("file0 (+2
        # files)"); either way the reason starts with exactly that name.
        series = re.fullmatch(r"(file\d+) \(\+\d+ files\)", name)
        assert name in names or (series is not None and series.group(1) in names), (name, reason)
        assert reason.startswith(f"{name}: "), (name, reason)
        assert "\n" not in reason and "\r" not in reason
