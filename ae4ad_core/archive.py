"""Safe in-memory expansion of ZIP uploads (batches of DICOM, NIfTI or PNG files).

Nothing is ever written to disk: members come back as ``(path, bytes)`` pairs. Each archive is vetted from its
central directory before any member is read, and refused as a whole (:class:`~ae4ad_core.errors.
UnsafeArchiveError`, one line naming the archive, the member and the reason) when it holds:

* a member path that climbs out of the archive: a ``..`` component, an absolute path, a drive letter, or the
  same tricks written with backslashes (names with plain backslash separators are accepted and normalised);
* a symbolic link (Unix mode ``S_IFLNK`` in ``external_attr``) or an encrypted member;
* more members than :attr:`ArchiveLimits.max_files`, a declared uncompressed size over
  :attr:`ArchiveLimits.max_member_bytes` (one member) or :attr:`ArchiveLimits.max_total_bytes` (all of them);
* a compression ratio over :attr:`ArchiveLimits.max_ratio`, for one member or for the archive as a whole, once
  the uncompressed size reaches 1 MiB (small, very compressible files such as blank masks stay accepted);
* ZIP files nested deeper than :attr:`ArchiveLimits.max_depth`.

Declared sizes can lie, so members are also read in chunks and refused as soon as the bytes actually produced
exceed the declared size or a cap; a CRC mismatch is refused too. Directories and desktop junk (``__MACOSX/``,
``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, AppleDouble ``._*`` files) are skipped silently.
"""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Ae4adError, UnreadableImageError, UnsafeArchiveError, format_error, one_line

__all__ = ["ArchiveLimits", "is_zip", "iter_archive", "expand_uploads"]

_CHUNK_BYTES = 1024 * 1024
_RATIO_FLOOR_BYTES = 1024 * 1024  # compression ratios are only judged from this many uncompressed bytes on
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".localized"})
_JUNK_FOLDERS = frozenset({"__macosx"})
_DRIVE_PATTERN = re.compile(r"^[A-Za-z]:")
_REASON_CHARACTERS = 160  # a foreign exception quoted inside one of our messages is cut to this length


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied to one uploaded archive, nested archives included.

    Parameters
    ----------
    max_total_bytes : int
        Cap on the uncompressed bytes of all members together (declared and actually read).
    max_files : int
        Cap on the number of members (directories and junk included, nested archives' members too).
    max_ratio : float
        Cap on uncompressed / compressed size, for each member and for the archive, judged from 1 MiB of
        uncompressed data on.
    max_depth : int
        How many archive levels may be opened, the uploaded archive counting as 1: with 2, a ZIP inside the
        upload is expanded, a ZIP inside that one is refused.
    max_member_bytes : int
        Cap on the uncompressed bytes of one member.
    """

    max_total_bytes: int = 2 * 1024**3
    max_files: int = 10000
    max_ratio: float = 200.0
    max_depth: int = 2
    max_member_bytes: int = 1024**3

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_files", "max_depth", "max_member_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ArchiveLimits.{name} must be a positive integer, got {value!r}.")
        if not self.max_ratio > 1:
            raise ValueError(f"ArchiveLimits.max_ratio must be a number above 1, got {self.max_ratio!r}.")


@dataclass
class _Budget:
    """What has been used so far across the uploaded archive and its nested archives."""

    limits: ArchiveLimits
    files: int = 0
    bytes_read: int = 0
    members: list[tuple[str, bytes]] = field(default_factory=list)


def is_zip(data: bytes) -> bool:
    """Tell whether ``data`` starts like a ZIP archive (local file header or empty-archive record).

    Parameters
    ----------
    data : bytes
        File content; the first four bytes are enough.

    Returns
    -------
    bool
    """
    return bytes(data[:4]) in (b"PK\x03\x04", b"PK\x05\x06")


def iter_archive(
    source: bytes | str | os.PathLike,
    *,
    name: str = "archive.zip",
    limits: ArchiveLimits = ArchiveLimits(),
) -> list[tuple[str, bytes]]:
    """Return the regular files of a ZIP archive, nested archives expanded, after vetting them.

    Parameters
    ----------
    source : bytes or path
        The archive content, or its path.
    name : str
        Name of the archive in error messages (the file name of a path by default).
    limits : ArchiveLimits
        Caps on size, count, ratio and nesting.

    Returns
    -------
    list of (str, bytes)
        Member path (``/``-separated; members of a nested archive are prefixed with the nested archive's
        path, e.g. ``"scans/day1.zip/img001.dcm"``) and content, in archive order.

    Raises
    ------
    UnsafeArchiveError
        Path traversal, symbolic link, encrypted member, bomb (size, ratio, count, lying sizes) or nesting too
        deep; nothing is returned then.
    UnreadableImageError
        Not a ZIP archive, or a corrupt one.
    """
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and name == "archive.zip":
        name = path.name
    name = one_line(name).strip() or "archive.zip"  # messages stay one line
    if path is None:
        data = bytes(source)
    else:
        try:
            if path.stat().st_size > limits.max_total_bytes:
                raise UnsafeArchiveError(
                    f"{name}: the archive itself is larger than the {limits.max_total_bytes}-byte cap"
                )
            data = path.read_bytes()
        except OSError as error:
            raise UnreadableImageError(f"{name}: cannot read the archive ({type(error).__name__})") from None
    budget = _Budget(limits=limits)
    try:
        _expand(data, archive=name, prefix="", depth=1, budget=budget)
    except Ae4adError:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile on corrupt input: IndexError, struct.error, ...
        raise UnreadableImageError(f"{name}: not a readable ZIP archive ({_reason(error)})") from None
    return budget.members


def expand_uploads(
    files: Sequence[tuple[str, bytes]],
    *,
    limits: ArchiveLimits = ArchiveLimits(),
) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """Expand the ZIP archives among uploaded files and pass the other files through.

    Parameters
    ----------
    files : sequence of (str, bytes)
        Uploaded ``(name, content)`` pairs.
    limits : ArchiveLimits
        Caps applied to each archive separately.

    Returns
    -------
    files : list of (str, bytes)
        Non-archive uploads unchanged, and the members of each accepted archive named
        ``"<archive name>/<member path>"``, in upload order.
    errors : list of (str, str)
        ``(archive name, one-line reason)`` for every refused archive; its members are all left out.
    """
    expanded: list[tuple[str, bytes]] = []
    errors: list[tuple[str, str]] = []
    for file_name, data in files:
        if not is_zip(data):
            expanded.append((file_name, data))
            continue
        try:
            members = iter_archive(data, name=file_name, limits=limits)
        except Ae4adError as error:
            errors.append((file_name, format_error(error, file_name)))
            continue
        expanded.extend((f"{file_name}/{member}", content) for member, content in members)
    return expanded, errors


def _expand(data: bytes, *, archive: str, prefix: str, depth: int, budget: _Budget) -> None:
    """Vet one archive from its central directory, then read its members (recursing into nested ZIPs)."""
    limits = budget.limits
    try:
        handle = zipfile.ZipFile(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - BadZipFile, struct.error, ValueError, OSError...
        raise UnreadableImageError(f"{archive}: not a readable ZIP archive ({_reason(error)})") from None
    with handle:
        try:
            entries = handle.infolist()
        except Exception as error:  # noqa: BLE001
            raise UnreadableImageError(f"{archive}: not a readable ZIP archive ({_reason(error)})") from None
        plan = _vet(entries, data_size=len(data), archive=archive, prefix=prefix, budget=budget)
        for entry, member in plan:
            content = _read_member(handle, entry, archive=archive, member=member, budget=budget)
            if is_zip(content):
                if depth >= limits.max_depth:
                    raise UnsafeArchiveError(
                        f"{archive}: member {member!r} refused: a ZIP nested deeper than max_depth={limits.max_depth}"
                    )
                _expand(content, archive=archive, prefix=f"{member}/", depth=depth + 1, budget=budget)
            else:
                budget.members.append((member, content))


def _vet(
    entries: Sequence[zipfile.ZipInfo], *, data_size: int, archive: str, prefix: str, budget: _Budget
) -> list[tuple[zipfile.ZipInfo, str]]:
    """Check every entry's path, type and declared sizes; return the regular files to read and their paths."""
    limits = budget.limits
    budget.files += len(entries)
    if budget.files > limits.max_files:
        raise UnsafeArchiveError(
            f"{archive}: refused: {budget.files} members, more than max_files={limits.max_files}"
        )
    plan = []
    declared_total = 0
    for entry in entries:
        raw_name = entry.filename
        if not raw_name:
            raise UnreadableImageError(f"{archive}: a member has an empty name (a corrupt archive?)")
        member = prefix + _safe_member_path(raw_name, archive=archive, shown=prefix + raw_name)
        mode = entry.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {member!r} refused: a symbolic link")
        if entry.flag_bits & 0x1:
            raise UnsafeArchiveError(f"{archive}: member {member!r} refused: encrypted")
        if raw_name.endswith(("/", "\\")) or stat.S_ISDIR(mode) or _is_junk(member):
            continue
        if entry.file_size > limits.max_member_bytes:
            raise UnsafeArchiveError(
                f"{archive}: member {member!r} refused: declares {entry.file_size} bytes, more than "
                f"max_member_bytes={limits.max_member_bytes}"
            )
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size >= _RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
            raise UnsafeArchiveError(
                f"{archive}: member {member!r} refused: compression ratio {ratio:.0f}, more than "
                f"max_ratio={limits.max_ratio:g} (a zip bomb?)"
            )
        declared_total += entry.file_size
        plan.append((entry, member))
    if budget.bytes_read + declared_total > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"{archive}: refused: members declare {budget.bytes_read + declared_total} bytes in all, more than "
            f"max_total_bytes={limits.max_total_bytes}"
        )
    ratio = declared_total / max(data_size, 1)
    if declared_total >= _RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
        raise UnsafeArchiveError(
            f"{archive}: refused: the archive expands {ratio:.0f} times, more than max_ratio={limits.max_ratio:g} "
            f"(a zip bomb?)"
        )
    return plan


def _safe_member_path(raw_name: str, *, archive: str, shown: str) -> str:
    """Normalised ``/``-separated member path, or :class:`UnsafeArchiveError` for one that escapes the archive."""
    if "\x00" in raw_name:
        raise UnsafeArchiveError(f"{archive}: member {shown!r} refused: a NUL byte in the name")
    name = raw_name.replace("\\", "/")
    if name.startswith("/") or _DRIVE_PATTERN.match(name):
        raise UnsafeArchiveError(f"{archive}: member {shown!r} refused: an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise UnsafeArchiveError(f"{archive}: member {shown!r} refused: path traversal ('..')")
    if any(_DRIVE_PATTERN.match(part) for part in parts):
        raise UnsafeArchiveError(f"{archive}: member {shown!r} refused: a drive letter inside the path")
    return "/".join(parts) + ("/" if name.endswith("/") else "")


def _is_junk(member: str) -> bool:
    parts = [part for part in member.split("/") if part]
    if not parts:
        return True
    base = parts[-1].lower()
    return (
        base in _JUNK_NAMES or base.startswith("._") or any(part.lower() in _JUNK_FOLDERS for part in parts)
    )


def _read_member(
    handle: zipfile.ZipFile, entry: zipfile.ZipInfo, *, archive: str, member: str, budget: _Budget
) -> bytes:
    """Read one member in chunks, refusing it once it produces more than declared or than the caps allow."""
    limits = budget.limits
    allowed = min(entry.file_size, limits.max_member_bytes, limits.max_total_bytes - budget.bytes_read)
    chunks = []
    produced = 0
    try:
        with handle.open(entry) as stream:
            while True:
                chunk = stream.read(_CHUNK_BYTES)
                if not chunk:
                    break
                produced += len(chunk)
                if produced > allowed:
                    raise UnsafeArchiveError(
                        f"{archive}: member {member!r} refused: expands past its declared size or the caps "
                        f"({produced} > {allowed} bytes)"
                    )
                chunks.append(chunk)
    except Ae4adError:
        raise
    except zipfile.BadZipFile as error:
        raise UnsafeArchiveError(
            f"{archive}: member {member!r} refused: its data does not match its header ({_reason(error)})"
        ) from None
    except Exception as error:  # noqa: BLE001 - zlib.error, NotImplementedError (method), EOFError, ...
        raise UnreadableImageError(
            f"{archive}: member {member!r} cannot be read ({_reason(error)})"
        ) from None
    if produced != entry.file_size:
        raise UnsafeArchiveError(
            f"{archive}: member {member!r} refused: {produced} bytes read, {entry.file_size} declared"
        )
    budget.bytes_read += produced
    return b"".join(chunks)


def _reason(error: BaseException) -> str:
    """One-line ``"TypeName: message"`` of a foreign exception, to quote inside one of our messages."""
    return format_error(error, limit=_REASON_CHARACTERS)
