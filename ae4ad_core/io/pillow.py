"""PNG, JPEG, TIFF, BMP, GIF and WebP through Pillow; multi-page TIFF and animated GIF/WebP as frames.

EXIF orientation is applied, 1-bit pixels become 0/255 and colour becomes BT.601 luminance; every conversion is
listed in ``metadata["applied"]``.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np

from ..errors import Ae4adError, ImageTooLargeError, UnreadableImageError, UnsupportedImageError
from .image import (
    _MAX_PIXELS_ENVIRONMENT_VARIABLE,
    Image,
    ImageReader,
    ReadOptions,
    _luminance,
    _reason,
    _replace_non_finite,
    _select,
)

__all__ = ["PillowReader"]

_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "gif": "GIF", "webp": "WEBP"}
_GRAY_PILLOW_MODES = frozenset({"L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_COLOUR_PILLOW_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "P", "PA", "LA", "La"})


class PillowReader(ImageReader):
    """Reads the ordinary image formats Pillow decodes, each opened with its own Pillow plugin only."""

    name = "pillow"
    kinds = frozenset(_PILLOW_FORMATS)
    title = "PNG/JPEG/TIFF/BMP/GIF/WebP"

    def read(self, data: bytes, label: str, options: ReadOptions, *, kind: str | None = None) -> Image:
        kind = self._checked_kind(data, label, kind)
        return _read_pillow(
            data,
            label,
            kind,
            frames=options.frames,
            include_identifiers=options.include_identifiers,
            max_pixels=options.max_pixels,
            applied=list(options.applied),
        )


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
