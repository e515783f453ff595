"""Content hashes: cache keys that change exactly when the bytes change.

A key made of a file's name and size (or an upload widget's id) is not content: two different series with the
same name and size would share a cached result. Every cache of something read from bytes is keyed by
:func:`content_digest` of those bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["content_digest", "files_digest", "named_digests_key"]

_DIGEST_SIZE = 16  # bytes: 128-bit BLAKE2b, collisions are out of reach for cache keys


def content_digest(*parts: bytes | str) -> str:
    """A short hex BLAKE2b hash of ``parts`` (bytes, or text encoded as UTF-8), in order.

    Parts are separated so that ``("ab", "c")`` and ``("a", "bc")`` differ.
    """
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    for p in parts:
        data = p.encode() if isinstance(p, str) else bytes(p)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def named_digests_key(named: Iterable[tuple[str, str]]) -> str:
    """One key for files given as ``(name, content_digest(data))`` pairs, in order (for callers that keep each
    file's digest, so that a large upload is hashed once)."""
    return content_digest(*(part for pair in named for part in pair))


def files_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """One key for a list of ``(name, data)`` files: their names and the hashes of their bytes, in order."""
    return named_digests_key((name, content_digest(data)) for name, data in files)
