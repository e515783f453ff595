"""Results shared between callers without copies: every NumPy array inside made read-only.

The app keeps one analysis and one decoded upload per content for every session (``st.cache_resource``): no
pickled copy is stored and none is unpickled on each rerun, which for a 48-slice volume saves about 20 MB per
cache entry and the time to copy it back on every slider move. Sharing is only safe when nobody writes into the
shared arrays, so :func:`freeze_arrays` turns their ``writeable`` flag off: a caller that tries raises
``ValueError: assignment destination is read-only`` instead of silently changing what other sessions see.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import numpy as np

__all__ = ["freeze_arrays"]

T = TypeVar("T")


def freeze_arrays(obj: T) -> T:
    """Make every NumPy array reachable from ``obj`` read-only, in place, and return ``obj``.

    Walks dataclass fields, lists, tuples and dict values (arrays inside other objects are left as they are).
    """
    seen: set[int] = set()

    def walk(value) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(obj)
    return obj
