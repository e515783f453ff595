"""The library's exception hierarchy.

Every failure a user can cause (a bad file, an unknown model, a mode a model cannot do) raises a subclass of
:class:`Ae4adError` whose message is one line: what was received, why it is refused, and what to do.
"""

from __future__ import annotations

__all__ = [
    "Ae4adError",
    "UnreadableImageError",
    "ImageTooLargeError",
    "UnsupportedImageError",
    "MissingDecoderError",
    "UnsafeArchiveError",
    "UnknownModelError",
    "ModelCardError",
    "UnsupportedModeError",
    "DataError",
    "look_up_option",
]


class Ae4adError(Exception):
    """Base class of every error the library raises on purpose."""


class UnreadableImageError(Ae4adError, ValueError):
    """A file that is not an image we can read: wrong type, corrupt, truncated, empty, no pixel data."""


class ImageTooLargeError(UnreadableImageError):
    """The header declares more pixels than the configured cap (checked before decoding)."""


class UnsupportedImageError(UnreadableImageError):
    """A readable file in a form we do not support (colour model, transfer syntax, dimensionality)."""


class MissingDecoderError(UnsupportedImageError):
    """Compressed pixel data whose decoder plugin is not installed."""


class UnsafeArchiveError(UnreadableImageError):
    """An archive refused before extraction (path traversal, symlink, bomb, too deep)."""


class UnknownModelError(Ae4adError, KeyError):
    """A model name or path that the registry does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one readable line
        return str(self.args[0]) if self.args else ""


class ModelCardError(Ae4adError, ValueError):
    """A model card or weights file that is invalid, unsafe or inconsistent with its architecture."""


class UnsupportedModeError(Ae4adError, ValueError):
    """A scoring mode the chosen model cannot compute (e.g. ``kl`` for a plain autoencoder)."""


class DataError(Ae4adError, ValueError):
    """A dataset folder or array set that does not have the expected layout or content."""


def look_up_option(value: str, options, *, what: str = "option") -> str:
    """Return ``value`` if it is one of ``options``, else raise ``ValueError`` naming the valid ones.

    The message suggests the closest valid name (MONAI's ``look_up_option`` does the same).
    """
    import difflib

    options = list(options)
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown {what} {value!r}; valid: {', '.join(map(str, options))}.{hint}")
