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


# ------------------------------------------------------------------------------------ real-patient models


def _real(name, kind="ae", seq="flair", cv_ap=None, ap=None, d=16, licence="CC BY-NC-SA 3.0 CH (non-commercial; x)"):
    card = _card(name, kind, d)
    card.training_data = {"sequence": seq, "licence": licence, "demo_patient": "brats_2013_pat0006_1",
                          "source": "BraTS 2013 glioma patients"}
    card.training = {"crossval": [] if cv_ap is None else [{"mode": "reconstruction", "pixel_ap": cv_ap}]}
    if ap is not None:
        card.metrics = {"reconstruction": {"pixel_ap": ap, "level_matched_auroc": 0.7, "image_auroc": 0.8}}
    return card


def _template(name, **kw):
    card = _card(name, **kw)
    card.training_data = {"description": "Demo: template brains", "sequence": "t1", "data_kind": "template brains"}
    return card


def test_default_model_for_prefers_dae_then_cross_validated_pixel_ap():
    cards = [_template("ae-d16"), _real("flair-ae-d8", cv_ap=0.5), _real("flair-intensity", "intensity", cv_ap=0.8),
             _real("flair-vae-d16", "vae"), _real("t1c-intensity", "intensity", seq="t1c", cv_ap=0.3)]
    assert model_summary.default_model_for(cards, "flair") == "flair-intensity"
    assert model_summary.default_model_for(cards, "t1c") == "t1c-intensity"
    assert model_summary.default_model_for(cards + [_real("flair-dae", "dae", cv_ap=0.1)], "flair") == "flair-dae"
    # Template-brain cases (no sequence) and sequences without a model get the template zoo's default.
    assert model_summary.default_model_for(cards, None) == "ae-d16"
    assert model_summary.default_model_for(cards, "t2") == "ae-d16"
    assert model_summary.default_model_for([], "flair") is None
    # Without cross-validation in the cards, the held-out pixel AP decides.
    held_out = [_real("flair-ae-d16", ap=0.5), _real("flair-intensity", "intensity", ap=0.9)]
    assert model_summary.default_model_for(held_out, "flair") == "flair-intensity"


def test_sequence_note_warns_only_on_a_mismatch():
    flair, template = _real("flair-intensity", "intensity"), _template("ae-d16")
    assert model_summary.sequence_note(flair, "flair") is None
    assert model_summary.sequence_note(template, None) is None
    assert "real FLAIR slices" in model_summary.sequence_note(flair, "t1c")
    assert "real T1c slices" in model_summary.sequence_note(flair, "t1c")
    assert "template-brain" in model_summary.sequence_note(template, "flair")
    assert "template-brain" in model_summary.sequence_note(flair, None)


def test_card_summary_states_data_sequence_and_licence():
    text = model_summary.card_summary(_real("flair-intensity", "intensity", ap=0.9))
    assert "Plain-intensity baseline" in text and "d =" not in text
    assert "real glioma patients (BraTS 2013), FLAIR" in text
    assert "licence CC BY-NC-SA 3.0 CH (non-commercial)" in text and "held-out patient AUROC 0.80" in text


def test_zoo_rows_put_the_baseline_beside_the_models_with_the_difference():
    cards = [_template("ae-d16", auroc=0.6), _real("flair-ae-d8", ap=0.5), _real("flair-intensity", "intensity", ap=0.8)]
    rows = model_summary.zoo_rows(cards)
    assert [r["model"] for r in rows] == ["flair-intensity", "flair-ae-d8", "ae-d16"]  # nothing hidden
    base, ae, template = rows
    assert base["type"] == "Plain-intensity baseline" and base["sequence"] == "FLAIR" and base["data"] == "real patients"
    assert abs(ae["vs baseline"] - (0.5 - 0.8)) < 1e-12 and base["vs baseline"] == 0.0
    assert ae["level-matched AUROC"] == 0.7 and template["vs baseline"] is None
    assert template["data"] == "template brains" and template["sequence"] == "T1"
    assert list(rows[0]) == list(model_summary.ZOO_COLUMNS)
    table = model_summary.zoo_markdown(rows)
    assert table.startswith("| model | mode | type | sequence | data |") and "-0.300" in table


REPORT = {
    "flair": {
        "summary": [
            {"model": m, "mode": "reconstruction", "folds": 4, "pixel_ap": ap, "pixel_ap_std": 0.1,
             "image_auroc": au, "image_auroc_std": 0.05, "entropy_gaussian_nats": h, "entropy_gaussian_nats_std": 1.0}
            for m, ap, au, h in (("ae-d16", 0.3, 0.70, 20.0), ("intensity", 0.85, 0.9, -3.0), ("ae-d2", 0.2, 0.75, 5.0))
        ],
        "label_free": {"chosen": 16, "per_fold": {"p3": 16, "p4": 16}},
        "oracle_d": 2,
        "auroc_gap_points": 5.0,
    }
}


def test_crossval_tables_and_the_choice_of_d():
    rows = model_summary.crossval_rows(REPORT, "flair")
    assert [r["model"] for r in rows] == ["flair-intensity", "flair-ae-d2", "flair-ae-d16"]  # baseline first
    assert rows[0]["pixel AP"] == "0.850 ± 0.100" and rows[0]["folds"] == 4
    sweep = model_summary.crossval_sweep_rows(REPORT, "flair")
    assert [r["d"] for r in sweep] == [2, 16] and sweep[0]["slice AUROC"] == 0.75
    assert sweep[1]["latent entropy (nats) std"] == 1.0
    choice = model_summary.crossval_d_choice(REPORT, "flair")
    assert (choice["label_free"], choice["oracle"], choice["gap_points"]) == (16, 2, 5.0)
    assert "d = 16" in choice["sentence"] and "d = 2" in choice["sentence"] and "5.0" in choice["sentence"]
    assert model_summary.crossval_rows(None, "flair") == [] and model_summary.crossval_d_choice(None, "t1c") is None


def test_cli_markdown_is_the_page_table_then_the_crossvalidation(tmp_path, monkeypatch):
    import json

    import ae4ad_core.assets as assets
    from ae4ad_core.cli import zoo_markdown_table

    cards = [_real("flair-intensity", "intensity", ap=0.8), _real("flair-ae-d8", ap=0.5)]
    monkeypatch.setattr(assets, "assets_dir", lambda: tmp_path)
    assert zoo_markdown_table(cards) == model_summary.zoo_markdown(model_summary.zoo_rows(cards))
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "crossval.json").write_text(json.dumps(REPORT))
    out = zoo_markdown_table(cards)
    assert out.startswith("| model | mode |") and "Cross-validated over patients, FLAIR (mean ± std)" in out
    assert "| flair-intensity | reconstruction | 4 | 0.850 ± 0.100 |" in out


def test_reconstruction_note_only_for_the_baseline():
    assert "redraws nothing" in model_summary.reconstruction_note(_real("flair-intensity", "intensity"))
    assert model_summary.reconstruction_note(_real("flair-ae-d8")) is None
