"""ae4ad_core.errors: one hierarchy, look_up_option's error, the slice-selection error and format_error."""

from __future__ import annotations

import inspect
import zlib

import numpy as np
import pytest
from _fixtures_io import png_bytes, tiff_pages_bytes

import ae4ad_core.errors as errors_module
from ae4ad_core.errors import (
    Ae4adError,
    InvalidOptionError,
    SliceSelectionError,
    UnknownModelError,
    UnreadableImageError,
    format_error,
    look_up_option,
    one_line,
)
from ae4ad_core.io import Image, read_image


def test_every_library_error_derives_from_ae4ad_error_and_a_builtin() -> None:
    classes = [
        value
        for name in errors_module.__all__
        if inspect.isclass(value := getattr(errors_module, name)) and name != "Ae4adError"
    ]
    assert len(classes) >= 11
    for error_class in classes:
        assert issubclass(error_class, Ae4adError), error_class
        builtins = [base for base in error_class.__mro__ if base.__module__ == "builtins"]
        assert builtins[0] is not Exception, f"{error_class.__name__} should also be a ValueError/KeyError/..."


def test_look_up_option_returns_a_valid_value_and_refuses_with_a_suggestion() -> None:
    assert look_up_option("axial", ("axial", "coronal"), what="slice axis") == "axial"
    with pytest.raises(InvalidOptionError) as caught:
        look_up_option("coronl", ("axial", "coronal", "sagittal"), what="slice axis")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, Ae4adError)
    assert str(caught.value) == (
        "Unknown slice axis 'coronl'; valid: axial, coronal, sagittal. Did you mean 'coronal'?"
    )
    with pytest.raises(ValueError, match=r"^Unknown option 'zzz'; valid: a, b\.$"):  # nothing close: no hint
        look_up_option("zzz", ["a", "b"])
    with pytest.raises(InvalidOptionError, match="Did you mean 'axial'"):
        read_image(png_bytes(np.zeros((2, 2), np.uint8)), slice_axis="axal")


def test_out_of_range_frames_and_slices_raise_the_library_error_that_is_also_an_index_error() -> None:
    pages = tiff_pages_bytes([np.zeros((3, 4), np.uint8), np.ones((3, 4), np.uint8)])
    with pytest.raises(SliceSelectionError, match=r"^pages.tif: frame index 2 is out of range; the file has 2"):
        read_image(pages, name="pages.tif", frames=[0, 2])
    image = Image(pixels=np.zeros((2, 3, 4), np.float32), name="x", format="png")
    with pytest.raises(SliceSelectionError) as caught:
        image.slice(-3)
    assert isinstance(caught.value, IndexError) and isinstance(caught.value, Ae4adError)
    assert str(caught.value) == "x: slice index -3 is out of range; the image has 2 slice(s)."


def test_format_error_keeps_library_messages_and_names_foreign_exception_types() -> None:
    library = UnreadableImageError("scan.dcm: the file is empty")
    assert format_error(library) == "scan.dcm: the file is empty"
    assert format_error(library, "scan.dcm") == "scan.dcm: the file is empty"  # the subject only once
    assert format_error(library, "series") == "series: scan.dcm: the file is empty"
    assert format_error(UnknownModelError("Unknown model 'x'")) == "Unknown model 'x'"  # no KeyError quotes
    assert format_error(Ae4adError()) == "Ae4adError"

    assert format_error(RuntimeError("out of\n   memory"), "vol.nii") == "vol.nii: RuntimeError: out of memory"
    assert format_error(zlib.error()) == "error"
    assert format_error(ValueError("x" * 300), limit=160) == "ValueError: " + "x" * 157 + "..."
    assert format_error(UnreadableImageError("a\nb\x00c"), "na\nme") == "na me: a b c"
    for text in (format_error(OSError("a\r\nb\tc")), one_line("a\r\n\x00b")):
        assert "\n" not in text and "\r" not in text and "\x00" not in text and "\t" not in text
