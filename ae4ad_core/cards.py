"""Model cards read as JSON only, without torch: a fast listing of the registry (``ae4ad models``).

:func:`ae4ad_core.registry.list_models` builds full :class:`~ae4ad_core.registry.ModelCard` objects, whose
architecture and preprocessing classes live next to the torch modules; importing them costs about a second.
Listing needs none of that. :func:`list_card_summaries` reads each ``card.json``, checks what a listing relies
on (a JSON object of the supported card version with a name, an architecture and a preprocessing section) and
returns :class:`CardSummary` rows. The architecture itself is validated when the model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelCardError

__all__ = ["CardSummary", "read_card_summary", "list_card_summaries", "registry_digest"]


@dataclass(frozen=True)
class CardSummary:
    """What a listing shows of a model card.

    Attributes
    ----------
    name, description : str
    kind : {"ae", "vae", "rdae"}
    latent_dim, image_size : int
        ``d`` and the model input side in pixels.
    metrics, latent : dict
        The card's evaluation results per mode and latent statistics (as in :class:`ModelCard`).
    training_data : dict
        The card's training data section (sequence, source and licence for real-patient models).
    training : dict
        The card's training section without its loss history (``crossval`` summary rows among others).
    folder : Path
        The model folder.
    """

    name: str
    kind: str
    latent_dim: int
    image_size: int
    description: str = ""
    metrics: dict = field(default_factory=dict)
    latent: dict = field(default_factory=dict)
    folder: Path | None = None
    training_data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


_PARSED: dict[tuple[str, bytes], CardSummary] = {}
_PARSED_LOCK = threading.Lock()
_PARSED_MAX = 256


def read_card_summary(folder: Path | str) -> CardSummary:
    """Read ``card.json`` of a model folder as a :class:`CardSummary` (shared: use it read-only).

    Cards carry their calibration scores (about 100 kB of JSON each), and the Analyze page lists the registry
    for every upload to choose a model, so a summary is kept per folder and *content* of its card: the file is
    read and hashed every time (a few milliseconds for the zoo), parsed only when it changed.

    Raises
    ------
    ModelCardError
        No card, not JSON, not a JSON object, another card version, or a missing or malformed field.
    """
    from .registry import CARD_FILE, CARD_VERSION

    folder = Path(folder)
    source = f"{folder.name}/{CARD_FILE}"
    raw = _card_bytes(folder)
    key = (str(folder), hashlib.blake2b(raw, digest_size=16).digest())
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
    if cached is not None:
        return cached
    summary = _parse_summary(raw, folder, source, CARD_VERSION)
    with _PARSED_LOCK:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = summary
    return summary


def _card_bytes(folder: Path) -> bytes:
    """The bytes of a model folder's ``card.json``; a missing or unreadable card is a :class:`ModelCardError`."""
    from .registry import CARD_FILE

    try:
        return (folder / CARD_FILE).read_bytes()
    except FileNotFoundError:
        raise ModelCardError(f"{folder.name}: no {CARD_FILE} in {folder}.") from None
    except OSError as exc:
        raise ModelCardError(f"{folder.name}/{CARD_FILE}: cannot be read ({exc}).") from None


def _parse_summary(raw: bytes, folder: Path, source: str, card_version: int) -> CardSummary:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ModelCardError(f"{source}: not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise ModelCardError(f"{source}: a model card must be a JSON object.")
    if data.get("version") != card_version:
        raise ModelCardError(f"{source}: card version {data.get('version')!r} is not supported.")
    arch = data.get("architecture")
    if not isinstance(arch, dict) or not isinstance(data.get("preprocessing"), dict) or "name" not in data:
        raise ModelCardError(f"{source}: the card needs a name, an architecture and a preprocessing section.")
    try:
        return CardSummary(
            name=str(data["name"]),
            kind=str(arch.get("kind", "ae")),
            latent_dim=int(arch.get("latent_dim", 16)),
            image_size=int(arch.get("image_size", 64)),
            description=str(data.get("description", "")),
            metrics=dict(data.get("metrics", {})),
            latent=dict(data.get("latent", {})),
            folder=folder,
            training_data=dict(data.get("training_data") or {}),
            training={k: v for k, v in dict(data.get("training") or {}).items() if k != "history"},
        )
    except (TypeError, ValueError) as exc:
        raise ModelCardError(f"{source}: {exc}") from None


def read_registry(read, roots: list[Path] | None = None) -> list:
    """``read(folder)`` of every model folder under the registry roots (default
    :func:`ae4ad_core.registry.registry_roots`): folders whose card cannot be read are skipped, the first root
    wins a name, and the result is sorted by name with numbers in numeric order (``ae-d2`` before ``ae-d16``).
    The one registry walk of :func:`list_card_summaries` and :func:`ae4ad_core.registry.list_models`."""
    from .registry import CARD_FILE, registry_roots

    found: dict = {}
    for root in registry_roots() if roots is None else roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(".") or not (folder / CARD_FILE).is_file():
                continue
            try:
                item = read(folder)
            except ModelCardError:
                continue
            found.setdefault(item.name, item)
    return sorted(found.values(), key=lambda item: _natural_key(item.name))


def list_card_summaries(roots: list[Path] | None = None) -> list[CardSummary]:
    """Summaries of every model under the registry roots, as :func:`read_registry` walks them."""
    return read_registry(read_card_summary, roots)


@dataclass(frozen=True)
class _CardDigest:
    name: str
    digest: str


def _card_digest(folder: Path) -> _CardDigest:
    return _CardDigest(folder.name, hashlib.blake2b(_card_bytes(folder), digest_size=16).hexdigest())


def registry_digest(roots: list[Path] | None = None) -> str:
    """A digest of the registry's *content*: the folder name and card bytes of every model
    :func:`read_registry` walks. It changes when a model is added, removed, renamed or re-carded, so a cache of
    the cards keyed by it is never stale and never re-read for nothing (reading and hashing the 18 shipped
    cards takes a few milliseconds; parsing them takes a few hundred)."""
    items = read_registry(_card_digest, roots)
    return hashlib.blake2b("".join(f"{i.name}:{i.digest};" for i in items).encode(), digest_size=16).hexdigest()


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
