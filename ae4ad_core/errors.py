"""The library's exception hierarchy and its one error formatter.

Every failure a user can cause (a bad file, an unknown model, a mode a model cannot do, an unknown option, a
slice that is not there) raises a subclass of :class:`Ae4adError` whose message is one line: what was
received, why it is refused, and what to do. Each subclass also derives from the built-in exception a caller
would expect (``ValueError``, ``KeyError``, ``IndexError``), so ``except ValueError`` keeps working.

:func:`format_error` is the one place where an exception becomes a one-line reason for a report, a log line or
an error message (``"<subject>: <message>"``, with the type name of exceptions the library did not raise).
"""

from __future__ import annotations

import re

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
    "InvalidOptionError",
    "SliceSelectionError",
    "look_up_option",
    "format_error",
    "one_line",
]

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


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


class InvalidOptionError(Ae4adError, ValueError):
    """A name that is not one of the valid options (raised by :func:`look_up_option`, with a suggestion)."""


class SliceSelectionError(Ae4adError, IndexError):
    """A frame or slice index outside the image (``frames=`` of ``read_image``, ``Image.slice``)."""


def look_up_option(value: str, options, *, what: str = "option") -> str:
    """Return ``value`` if it is one of ``options``, else raise :class:`InvalidOptionError` naming the valid ones.

    The message suggests the closest valid name (MONAI's ``look_up_option`` does the same).
    :class:`InvalidOptionError` is a ``ValueError`` too.
    """
    import difflib

    options = list(options)
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InvalidOptionError(f"Unknown {what} {value!r}; valid: {', '.join(map(str, options))}.{hint}")


def one_line(text: str) -> str:
    """``text`` with every run of control characters (newlines, tabs, NUL...) replaced by one space."""
    return _CONTROL_CHARACTERS.sub(" ", str(text))


def format_error(error: BaseException, subject: str | None = None, *, limit: int | None = None) -> str:
    """Describe ``error`` in one line, optionally prefixed with the file or item it is about.

    Parameters
    ----------
    error : BaseException
        The exception. The message of an :class:`Ae4adError` is kept as written (control characters become
        spaces); any other exception is shown as ``"TypeName: message"`` with runs of whitespace collapsed,
        or just ``"TypeName"`` when it has no message.
    subject : str, optional
        What the error is about (a file name, a series, a job). The text is prefixed with ``"<subject>: "``
        unless it already starts that way, so every reason names its subject exactly once.
    limit : int, optional
        Cut the message of a foreign exception to this many characters (ending with ``"..."``); library
        messages are never cut.

    Returns
    -------
    str
        One line, no newline or other control character.
    """
    if isinstance(error, Ae4adError):
        text = one_line(str(error)).strip() or type(error).__name__
    else:
        text = " ".join(one_line(str(error)).split())
        if limit is not None and len(text) > limit:
            text = text[: max(limit - 3, 0)] + "..."
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if subject is not None:
        subject = one_line(subject).strip()
        if subject and not text.startswith(f"{subject}: "):
            text = f"{subject}: {text}"
    return text
