"""Tests of :mod:`ae4ad_core.model_summary`: what the pages say about a model card."""

from __future__ import annotations

from types import SimpleNamespace

from ae4ad_core import model_summary


def _card(name, kind="ae", d=16, auroc=None, entropy=None, data="demo brains"):
    arch = SimpleNamespace(image_size=64)
    metrics = {"reconstruction": {"image_auroc": auroc}} if auroc is not None else {}
    return SimpleNamespace(
        name=name,
        kind=kind,
        latent_dim=d,
        architecture=arch,
        metrics=metrics,
        latent={"entropy_gaussian_nats": entropy, "effective_dim": 3.0},
        training_data={"description": data},
        training={"config": {"epochs": 5}},
    )


def test_card_summary_names_type_d_size_data_entropy_and_auroc():
    text = model_summary.card_summary(_card("vae-d16", "vae", 16, auroc=0.873, entropy=12.34))
    assert "VAE" in text and "d = 16" in text and "64 px" in text and "demo brains" in text
    assert "12.3 nats" in text and "AUROC 0.87" in text


def test_default_model_prefers_an_ae_with_d16():
    cards = [_card("ae-d2", d=2), _card("ae-d16", d=16), _card("vae-d16", "vae")]
    assert model_summary.default_model_name(cards) == "ae-d16"
    assert model_summary.default_model_name(cards[:1]) == "ae-d2"
    assert model_summary.default_model_name([]) is None


def test_sweep_rows_need_two_latent_sizes_and_are_sorted_by_d():
    cards = [
        _card("ae-d16", d=16, auroc=0.8, entropy=20.0),
        _card("ae-d2", d=2, auroc=0.5, entropy=3.0),
        _card("vae-d16", "vae"),
    ]
    rows = model_summary.ae_sweep_rows(cards)
    assert [r["d"] for r in rows] == [2, 16]
    assert rows[1]["image AUROC"] == 0.8
    assert model_summary.ae_sweep_rows(cards[:1]) == []


def test_zoo_rows_have_the_metrics_columns():
    rows = model_summary.zoo_rows([_card("ae-d16", auroc=0.9, entropy=1.0)])
    assert rows[0]["image AUROC"] == 0.9 and rows[0]["type"] == "AE"
    assert {"pixel AP", "Dice (calibrated)", "effective dim", "latent entropy (nats)"} <= set(rows[0])


def test_evaluation_result_is_rebuilt_from_the_card():
    metrics = {
        "mode": "reconstruction",
        "n_normal": 2,
        "n_abnormal": 2,
        "image_auroc": 0.75,
        "image_ap": 0.8,
        "pixel_auroc": None,
        "pixel_ap": None,
        "best_dice": None,
        "best_dice_threshold": None,
        "calibrated_dice": None,
        "calibrated_image_fpr": 0.0,
        "calibrated_image_tpr": 0.5,
        "anatomy_correlation": None,
        "curves": {"image": {"fpr": [0, 1], "tpr": [0, 1]}},
    }
    card = SimpleNamespace(metrics={"reconstruction": metrics})
    result = model_summary.evaluation_result(card, "reconstruction")
    assert result.image_auroc == 0.75 and result.curves["image"]["tpr"] == [0, 1]
    assert model_summary.evaluation_result(card, "kl") is None



def test_anatomy_caveat_follows_the_card():
    card = SimpleNamespace(
        metrics={"reconstruction": {"anatomy_correlation": 0.76}, "kl": {"anatomy_correlation": -0.1}}
    )
    assert "ρ = +0.76" in model_summary.anatomy_caveat(card, "reconstruction")
    assert model_summary.anatomy_caveat(card, "kl") is None and model_summary.anatomy_caveat(card, "combined") is None
