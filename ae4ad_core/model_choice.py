"""Which registered model fits a scan, or a plain statement that none does.

Each real-patient model (``flair-*``, ``t1c-*``: ``training_data.source`` starting with "BraTS") was trained
on one MR sequence of the brain (``training_data.sequence``); the template-brain models (``ae-d*``...) are
teaching models trained on template T1 brains, not on patients. :func:`choose_model` takes the
:class:`~ae4ad_core.sequence.SequenceGuess` of an upload and the model cards, and returns a
:class:`ModelChoice`:

* a brain MRI of a sequence some real model was trained on -> that sequence's preferred model: ``<seq>-dae``
  (the denoising AE, the strongest AE-family model on BraTS, Kascenas et al., MIDL 2022), then the others by
  cross-validated pixel AP (``card.training["crossval"]``, the product scoring mode), else by the held-out
  pixel AP on the card (``metrics["reconstruction"]["pixel_ap"]``);
* anything else -> no model, and a sentence saying why (CT, X-ray, another body part, a sequence no model was
  trained on, or a sequence nobody could tell).

:func:`override_warning` gives the warning to show when the user picks a model trained on another sequence
(or a teaching model for a patient scan). Cards may be :class:`~ae4ad_core.cards.CardSummary` rows (no torch)
or full :class:`~ae4ad_core.registry.ModelCard` objects; both have ``name``, ``training_data``, ``training``
and ``metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .sequence import SequenceGuess

__all__ = [
    "ModelChoice",
    "choose_model",
    "override_warning",
    "model_sequence",
    "is_patient_model",
    "rank_models",
]

_SEQUENCE_WORDS = {"flair": "FLAIR", "t1": "T1", "t1c": "T1c", "t2": "T2"}
_MODALITY_PHRASES = {
    "CT": "a CT scan",
    "CR": "an X-ray",
    "DX": "an X-ray",
    "DR": "an X-ray",
    "MG": "a mammogram",
    "US": "an ultrasound image",
    "PT": "a PET scan",
    "NM": "a nuclear medicine image",
    "XA": "an angiogram",
    "RF": "a fluoroscopy image",
    "MR": "an MRI",
}


@dataclass(frozen=True)
class ModelChoice:
    """The model preselected for a scan.

    Attributes
    ----------
    model : str or None
        The preselected model name; ``None`` when no model fits.
    reason : str
        One or two sentences for the page, the CLI and the report.
    fits : bool
        True when ``model`` was trained on this kind of scan.
    candidates : list of str
        Every model trained on the scan's sequence, best first (empty when none fits).
    """

    model: str | None
    reason: str
    fits: bool
    candidates: list = field(default_factory=list)

    def to_record(self) -> dict:
        """JSON-ready dict for the analysis JSON/CSV/PDF."""
        return {
            "model": self.model,
            "reason": self.reason,
            "fits": self.fits,
            "candidates": list(self.candidates),
        }


def model_sequence(card) -> str | None:
    """The sequence a card says its model was trained on (:func:`ae4ad_core.model_summary.card_sequence`)."""
    from .model_summary import card_sequence

    return card_sequence(card)


def is_patient_model(card) -> bool:
    """True for a model trained on real patients (:func:`ae4ad_core.model_summary.is_patient_model`)."""
    from .model_summary import is_patient_model as real

    return real(card)


def rank_models(cards: Sequence, sequence: str) -> list:
    """The patient models trained on ``sequence``, best first (:func:`ae4ad_core.model_summary.rank_for_sequence`:
    ``<sequence>-dae``, then by cross-validated pixel AP, then by the held-out patient's, then by name)."""
    from .model_summary import rank_for_sequence

    return rank_for_sequence(cards, sequence)


def _pixel_ap(card) -> tuple[int, float]:
    """(source rank, pixel AP) as the ranking reads it: cross-validated (2), held-out patient (1), none (0)."""
    from .model_summary import _cv_pixel_ap, _metric

    cv, held_out = _cv_pixel_ap(card), _metric(card, "pixel_ap")
    if cv is not None:
        return 2, cv
    return (1, float(held_out)) if held_out is not None else (0, 0.0)


def _what(guess: SequenceGuess) -> str:
    """ "a CT scan of the abdomen", "a T2 MRI of the brain", "an image"."""
    modality = (
        guess.modality if guess.modality != "unknown" else ("MR" if guess.sequence != "unknown" else "")
    )
    if modality == "MR" and guess.sequence in _SEQUENCE_WORDS:
        phrase = f"a {_SEQUENCE_WORDS[guess.sequence]} MRI"
    elif modality:
        phrase = _MODALITY_PHRASES.get(modality, f"a {modality} image")
    else:
        phrase = "an image"
    if guess.body_part != "unknown":
        phrase += f" of the {guess.body_part}"
    return phrase


def _trained_on(cards: Sequence) -> str:
    seqs = sorted(
        {model_sequence(c) for c in cards if is_patient_model(c)} - {None},
        key=lambda s: list(_SEQUENCE_WORDS).index(s) if s in _SEQUENCE_WORDS else 99,
    )
    return ", ".join(_SEQUENCE_WORDS.get(s, s) for s in seqs) or "no patient sequence"


def _default_cards() -> list:
    from .cards import list_card_summaries

    return list_card_summaries()


def choose_model(guess: SequenceGuess, cards: Sequence | None = None) -> ModelChoice:
    """The model to preselect for a scan described by ``guess``.

    Parameters
    ----------
    guess : SequenceGuess
        From :func:`ae4ad_core.sequence.detect_sequence`.
    cards : sequence of CardSummary or ModelCard, optional
        The registered models; :func:`ae4ad_core.cards.list_card_summaries` by default.

    Returns
    -------
    ModelChoice
        E.g. ``ModelChoice("flair-dae", "This looks like a FLAIR MRI ...; flair-dae was trained on FLAIR ...",
        True, [...])`` or ``ModelChoice(None, "This looks like a CT scan of the abdomen; every model here was
        trained on brain MRI (FLAIR, T1c) — no map is shown.", False)``.
    """
    cards = list(_default_cards() if cards is None else cards)
    trained = _trained_on(cards)
    what = _what(guess)
    if not guess.is_brain_mr:
        return ModelChoice(
            None,
            f"This looks like {what}; every model here was trained on brain MRI ({trained}) "
            "— no map is shown.",
            False,
        )
    if guess.sequence == "unknown":
        return ModelChoice(
            None,
            "The sequence could not be told from the header, the file name or the pixels; "
            f"the patient models here were trained on brain MRI ({trained}) — choose the one "
            "for this scan's sequence.",
            False,
        )
    ranked = rank_models(cards, guess.sequence)
    if not ranked:
        if guess.sequence == "other":
            return ModelChoice(
                None,
                f"This looks like {what} of a kind no model here was trained on (they were "
                f"trained on {trained}) — no map is shown.",
                False,
            )
        teaching = [c.name for c in cards if not is_patient_model(c) and model_sequence(c) == guess.sequence]
        extra = (
            f" The {_SEQUENCE_WORDS.get(guess.sequence, guess.sequence)} models here "
            f"({', '.join(teaching[:3])}{'...' if len(teaching) > 3 else ''}) are teaching models trained "
            "on template brains, not patient scans."
            if teaching
            else ""
        )
        return ModelChoice(
            None,
            f"This looks like {what}; the patient models here were trained on {trained} — "
            f"none fits, so no map is shown.{extra}",
            False,
        )
    best = ranked[0]
    rank, ap = _pixel_ap(best)
    if best.name.endswith("-dae"):
        why = "the denoising autoencoder, the strongest of this family on BraTS"
    elif len(ranked) == 1:
        why = "the only model here for this sequence"
    elif rank:
        source = "cross-validated" if rank == 2 else "held-out"
        why = f"the best {source} pixel AP ({ap:.2f}) among {len(ranked)}"
    else:
        why = f"the first by name among {len(ranked)} without pixel AP"
    seq_word = _SEQUENCE_WORDS.get(guess.sequence, guess.sequence)
    reason = (
        f"This looks like {what} (confidence {guess.confidence:.2f}); {best.name} was trained on {seq_word} "
        f"slices of glioma patients: {why}."
    )
    return ModelChoice(best.name, reason, True, [c.name for c in ranked])


def override_warning(guess: SequenceGuess, card) -> str | None:
    """The warning to show when the user runs ``card``'s model on a scan described by ``guess``; ``None`` when
    the model fits the scan."""
    seq = model_sequence(card)
    seq_word = _SEQUENCE_WORDS.get(seq or "", seq or "an unstated sequence")
    what = _what(guess)
    if not guess.is_brain_mr:
        return (
            f"{card.name} was trained on brain MRI ({seq_word}); this looks like {what}. Its map compares "
            "the "
            "image with brains and means nothing here."
        )
    if not is_patient_model(card):
        return (
            f"{card.name} is a teaching model trained on template {seq_word + ' ' if seq else ''}brains, not on "
            "patient scans; "
            "its map of a patient scan is for illustration only."
        )
    if guess.sequence == "unknown":
        return (
            f"The scan's sequence is unknown; {card.name} expects {seq_word}. On another sequence its map "
            "marks normal tissue as abnormal."
        )
    if seq != guess.sequence:
        return (
            f"{card.name} was trained on {seq_word} slices; this scan looks like {what} "
            f"(confidence {guess.confidence:.2f}). On another sequence normal tissue has other intensities, "
            "so the map marks it as abnormal: read it with care."
        )
    return None
