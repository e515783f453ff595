"""Widgets and cached loaders the pages share: the registry's cards, a model, the demo cases, uploaded files
read once per content, and the model and scoring-mode picker.

Caches of anything read from bytes are keyed by a hash of those bytes (:mod:`ae4ad_core.content_hash`), never
by a file's name and size or an upload widget's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from ae4ad_core.analysis import calibration_of
from ae4ad_core.archive import expand_uploads
from ae4ad_core.cards import registry_digest
from ae4ad_core.content_hash import content_digest, named_digests_key
from ae4ad_core.demo_cases import DemoCase, all_demo_cases
from ae4ad_core.explanations import MODE_HELP, MODE_LABELS
from ae4ad_core.io import Image, read_images
from ae4ad_core.model_summary import card_summary, default_model_name
from ae4ad_core.read_only import freeze_arrays
from ae4ad_core.registry import (
    LoadedModel,
    ModelCard,
    find_model_dir,
    list_models,
    load_shared_model,
    user_models_dir,
)
from ae4ad_core.scoring import modes_for

__all__ = [
    "ModelChoice",
    "get_cards",
    "get_model",
    "model_stamp",
    "get_demo_cases",
    "demo_case_key",
    "upload_key",
    "read_or_stop",
    "model_picker",
]

NO_MODELS = "No models found in assets/models or the user's models folder: train one on the Train page."


@dataclass(frozen=True, eq=False)
class ModelChoice:
    """What the model picker returns.

    Attributes
    ----------
    card : the chosen model's card
    model : the loaded model (from the process-wide cache, never mutated)
    mode : the chosen scoring mode
    stamp : modification time of the card file, part of cache keys so a retrained model is not served stale
        results
    """

    card: ModelCard
    model: LoadedModel
    mode: str
    stamp: float

    @property
    def name(self) -> str:
        return self.card.name


@st.cache_resource(max_entries=4, show_spinner=False)  # cards are frozen and read-only: no copy per rerun
def _cards(user_models: str, digest: str) -> list[ModelCard]:
    return list_models()


def get_cards() -> list[ModelCard]:
    """The registry's cards (shipped zoo and user models), parsed again only when a card's content, the set of
    models or the user models folder (``AE4AD_HOME``) changed (:func:`ae4ad_core.cards.registry_digest`)."""
    return _cards(str(user_models_dir()), registry_digest())


def get_model(name: str) -> LoadedModel:
    """The model, from the library's process-wide cache (shared by every page and session)."""
    return load_shared_model(name)


def model_stamp(name: str) -> float:
    """Modification time of the model's card: a cache-key part that changes when the model is retrained."""
    return (find_model_dir(name) / "card.json").stat().st_mtime


@st.cache_resource(show_spinner="Loading demo cases…")
def get_demo_cases() -> list[DemoCase]:
    """Real-patient cases first, then the template-brain cases (:func:`~ae4ad_core.demo_cases.all_demo_cases`);
    one read-only set shared by every session."""
    return freeze_arrays(all_demo_cases())


def demo_case_key(case: DemoCase) -> str:
    """A content key of a demo case: the hash of its pixels and mask."""
    mask = b"" if case.mask is None else case.mask.tobytes()
    return content_digest(case.pixels.tobytes(), mask)


def upload_key(files: Sequence) -> str:
    """A content key of uploaded files (Streamlit ``UploadedFile``): their names and the hash of each file's
    bytes. Each upload is hashed once per session (an upload's bytes never change under its ``file_id``)."""
    digests = st.session_state.setdefault("_upload_digests", {})
    for f in files:
        if f.file_id not in digests:
            digests[f.file_id] = content_digest(f.getvalue())
    return named_digests_key((f.name, digests[f.file_id]) for f in files)


@st.cache_resource(max_entries=4, ttl=3600, show_spinner="Reading files…")
def _read(key: str, _files: list[tuple[str, bytes]]):
    """The decoded upload, once per content, shared read-only (no copy per session or rerun)."""
    files, zip_errors = expand_uploads(_files)
    images, errors = read_images(files)
    return freeze_arrays(images), zip_errors + errors


def read_or_stop(key: str, files: list[tuple[str, bytes]]) -> list[Image]:
    """The readable images of ``files`` (cached under ``key``, a content key of the files); one error line
    per file that could not be read; stop the page if none could."""
    images, errors = _read(key, files)
    for failed, reason in errors:
        st.error(reason if reason.startswith(failed) else f"{failed}: {reason}", icon=":material/error:")
    if not images:
        st.stop()
    return images


def model_picker(*, model_key: str = "model", mode_key: str = "mode") -> ModelChoice:
    """The model selectbox (an AE with d = 16 first) with its summary, and the scoring-mode radio.

    Modes the model cannot score are shown greyed out with the reason. Call it inside ``st.sidebar``. Stops
    the page when the registry is empty.
    """
    cards = get_cards()
    if not cards:
        st.error(NO_MODELS, icon=":material/error:")
        st.stop()
    names = [c.name for c in cards]
    if st.session_state.get(model_key) not in names:
        st.session_state[model_key] = default_model_name(cards)
    name = st.selectbox("Model", names, key=model_key)
    card = cards[names.index(name)]
    st.caption(card_summary(card))
    loaded = get_model(name)
    calibrated = calibration_of(loaded).modes
    # Modes the model cannot score are shown with the reason; modes it could score but its card holds no
    # calibration for (the paper's "mse" where it equals "reconstruction") are left out.
    modes = {m: r for m, r in modes_for(loaded.inference).items() if r is not None or m in calibrated}
    available = [m for m, reason in modes.items() if reason is None]
    if st.session_state.get(mode_key) not in available:
        st.session_state[mode_key] = available[0]
    shown = available if len(available) > 1 else list(modes)
    mode = st.radio(
        "Scoring mode",
        shown,
        key=mode_key,
        format_func=lambda m: MODE_LABELS.get(m, m),
        disabled=len(available) == 1,
        captions=[MODE_HELP.get(m, "") for m in shown],
    )
    for reason in dict.fromkeys(r for r in modes.values() if r):
        off = " and ".join(MODE_LABELS.get(m, m) for m, r in modes.items() if r == reason)
        st.caption(f":material/block: {off} unavailable for this model: {reason}.")
    return ModelChoice(card, loaded, mode, model_stamp(name))
