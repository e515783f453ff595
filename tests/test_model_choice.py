"""Which model fits a scan: preselection among same-sequence patient models, refusals, override warnings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ae4ad_core.model_choice import (
    choose_model,
    is_patient_model,
    model_sequence,
    override_warning,
    rank_models,
)
from ae4ad_core.sequence import SequenceGuess

BRATS = "BraTS 2013 glioma patients pat0003-pat0006"


def _card(name, sequence, *, source=BRATS, crossval=None, pixel_ap=None):
    training = {"crossval": crossval} if crossval is not None else {}
    metrics = {"reconstruction": {"pixel_ap": pixel_ap}} if pixel_ap is not None else {}
    return SimpleNamespace(
        name=name, training_data={"sequence": sequence, "source": source}, training=training, metrics=metrics
    )


def _cv(ap, mode="reconstruction"):
    return [{"model": "x", "mode": mode, "pixel_ap": ap}, {"model": "x", "mode": "mse", "pixel_ap": 0.99}]


CARDS = [
    _card("flair-ae-d16", "flair", crossval=_cv(0.60), pixel_ap=0.9),
    _card("flair-intensity", "flair", crossval=_cv(0.70), pixel_ap=0.5),
    _card("flair-dae", "flair", crossval=_cv(0.50)),
    _card("t1c-intensity", "t1c", pixel_ap=0.30),
    _card("t1c-ae-d16", "t1c", pixel_ap=0.40),
    _card("ae-d16", "t1", source=None),
]


def _guess(sequence, modality="MR", body_part="brain", confidence=0.9):
    return SequenceGuess(sequence, modality, body_part, confidence, ["test"])


def test_dae_first_then_crossvalidated_pixel_ap():
    assert [c.name for c in rank_models(CARDS, "flair")] == ["flair-dae", "flair-intensity", "flair-ae-d16"]
    choice = choose_model(_guess("flair"), CARDS)
    assert choice.model == "flair-dae" and choice.fits
    assert choice.candidates == ["flair-dae", "flair-intensity", "flair-ae-d16"]
    assert "FLAIR" in choice.reason and "denoising" in choice.reason


def test_card_pixel_ap_when_no_crossvalidation():
    choice = choose_model(_guess("t1c"), CARDS)
    assert choice.model == "t1c-ae-d16" and choice.candidates == ["t1c-ae-d16", "t1c-intensity"]
    assert "0.40" in choice.reason


def test_crossvalidated_beats_single_patient_figure():
    cards = [_card("flair-a", "flair", pixel_ap=0.95), _card("flair-b", "flair", crossval=_cv(0.6))]
    assert choose_model(_guess("flair"), cards).model == "flair-b"


@pytest.mark.parametrize(
    ("guess", "words"),
    [
        (
            _guess("other", "CT", "abdomen"),
            "This looks like a CT scan of the abdomen; every model here was trained "
            "on brain MRI (FLAIR, T1c) — no map is shown.",
        ),
        (_guess("other", "DX", "chest"), "an X-ray of the chest"),
        (_guess("other", "CR", "unknown"), "an X-ray;"),
        (_guess("t2", "MR", "knee"), "a T2 MRI of the knee"),
        (_guess("other", "MR", "brain"), "of a kind no model here was trained on"),
        (_guess("t2"), "a T2 MRI of the brain; the patient models here were trained on FLAIR, T1c"),
        (_guess("unknown", "unknown", "unknown", 0.0), "could not be told"),
    ],
)
def test_no_model_fits(guess, words):
    choice = choose_model(guess, CARDS)
    assert choice.model is None and not choice.fits and choice.candidates == []
    assert words in choice.reason


def test_t1_points_at_the_teaching_models():
    choice = choose_model(_guess("t1"), CARDS)
    assert choice.model is None
    assert "ae-d16" in choice.reason and "teaching" in choice.reason


def test_override_warnings():
    flair, t1c, teaching = CARDS[2], CARDS[3], CARDS[5]
    assert override_warning(_guess("flair"), flair) is None
    warning = override_warning(_guess("flair"), t1c)
    assert "T1c" in warning and "FLAIR" in warning
    assert "means nothing" in override_warning(_guess("other", "CT", "abdomen"), flair)
    assert "teaching model" in override_warning(_guess("flair"), teaching)
    assert "unknown" in override_warning(_guess("unknown", confidence=0.0), flair)


def test_card_helpers():
    assert model_sequence(CARDS[0]) == "flair" and is_patient_model(CARDS[0])
    assert not is_patient_model(CARDS[5]) and model_sequence(SimpleNamespace(name="x")) is None


def test_the_shipped_registry():
    from ae4ad_core.cards import list_card_summaries

    cards = list_card_summaries()
    names = {c.name for c in cards}
    choice = choose_model(_guess("flair"), cards)
    flair_models = [c.name for c in cards if is_patient_model(c) and model_sequence(c) == "flair"]
    if flair_models:
        assert choice.fits and choice.model in flair_models
    assert choose_model(_guess("other", "CT", "abdomen"), cards).model is None
    assert choose_model(_guess("other", "CT", "abdomen")).model is None  # default: the registry
    assert all(n in names for n in choice.candidates)
    assert choice.to_record()["model"] == choice.model
