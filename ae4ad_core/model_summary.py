"""What the pages and reports say about a model: picker summaries, the zoo table, stored evaluations, caveats.

Everything here reads a :class:`~ae4ad_core.registry.ModelCard` only (no weights, no images).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "ANATOMY_CAVEAT_RHO",
    "card_sequence",
    "card_data",
    "card_summary",
    "default_model_name",
    "default_model_for",
    "sequence_note",
    "reconstruction_note",
    "zoo_rows",
    "zoo_markdown",
    "crossval_rows",
    "load_crossval_report",
    "crossval_sweep_rows",
    "crossval_d_choice",
    "evaluation_result",
    "ae_sweep_rows",
    "anatomy_caveat",
]


def _metric(card, key: str, mode: str = "reconstruction"):
    value = (card.metrics or {}).get(mode, {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


SEQUENCE_WORDS = {"flair": "FLAIR", "t1c": "T1c", "t1": "T1", "t2": "T2"}
_KIND_NAMES = {"intensity": "Plain-intensity baseline", "dae": "Denoising U-Net"}
_NO_LATENT = ("intensity", "dae")  # no latent size worth showing


def _training_data(card) -> dict:
    data = getattr(card, "training_data", None)
    return data if isinstance(data, Mapping) else {}


def card_sequence(card) -> str | None:
    """The MRI sequence a model was trained on (``"flair"``, ``"t1c"``, ``"t1"``), from its card's
    ``training_data.sequence`` or a ``<sequence>-<name>`` name; None when the card does not say."""
    seq = _training_data(card).get("sequence")
    if isinstance(seq, str) and seq:
        return seq.lower()
    head = str(card.name).split("-", 1)[0].lower()
    return head if "-" in str(card.name) and head in SEQUENCE_WORDS else None


def card_data(card) -> str:
    """What a model was trained on: ``"real patients"`` or ``"template brains"`` (the card's
    ``training_data.data_kind``; else real when the card names a demo patient, BraTS, or a
    ``<sequence>-<name>`` name)."""
    td = _training_data(card)
    kind = td.get("data_kind")
    if isinstance(kind, str) and kind:
        return kind
    head = str(card.name).split("-", 1)[0].lower()
    real = td.get("demo_patient") or "brats" in str(td.get("source", "")).lower() or (
        "-" in str(card.name) and head in SEQUENCE_WORDS)
    return "real patients" if real else "template brains"


def is_patient_model(card) -> bool:
    """True for a model trained on real patients (see :func:`card_data`)."""
    return card_data(card) == "real patients"


_is_real = is_patient_model


def _image_size(card) -> int | None:
    arch = getattr(card, "architecture", None)
    return getattr(arch, "image_size", None) if arch is not None else getattr(card, "image_size", None)


def _licence_short(licence: str) -> str:
    """``"CC BY-NC-SA 3.0 CH (non-commercial; ...)"`` -> ``"CC BY-NC-SA 3.0 CH (non-commercial)"``."""
    head = str(licence).split(" (")[0].strip()
    return f"{head} (non-commercial)" if "NC" in head.split() or "-NC" in head else head


def card_summary(card) -> str:
    """One line for a model picker: type, d, input size, training data (with sequence and licence for real
    patients), latent entropy, AUROC on the held-out data."""
    kind = card.kind
    if kind in _KIND_NAMES:
        parts = [f"**{_KIND_NAMES[kind]}**"]
    else:
        parts = [f"**{kind.upper()}**, d = {card.latent_dim}"]
    parts.append(f"{_image_size(card)} px input")
    td = _training_data(card)
    seq = card_sequence(card)
    if td.get("licence"):
        data = card_data(card)
        if data == "real patients" and "brats" in str(td.get("source", "")).lower():
            data = "real glioma patients (BraTS 2013)"
        parts.append(f"trained on {data}" + (f", {SEQUENCE_WORDS.get(seq, seq)}" if seq else ""))
        parts.append(f"licence {_licence_short(td['licence'])}")
    else:
        data = _short(td.get("description") or "")
        if data:
            parts.append(f"trained on {data}")
    ent = (card.latent or {}).get("entropy_gaussian_nats")
    if kind not in _NO_LATENT and isinstance(ent, (int, float)) and math.isfinite(ent):
        parts.append(f"latent entropy {ent:.1f} nats")
    auroc = _metric(card, "image_auroc")
    if auroc is not None:
        if td.get("demo_patient"):
            where = "held-out patient"
        else:
            where = "demo" if "demo" in str(td.get("description", "")).lower() else "test"
        parts.append(f"{where} AUROC {auroc:.2f}")
    return " · ".join(parts)


def _short(text: str, limit: int = 60) -> str:
    """The first clause of a long description (before a parenthesis, semicolon or sentence end)."""
    head = re.split(r"\s\(|;|\.\s", str(text).strip(), maxsplit=1)[0].strip()
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


def default_model_name(cards: Sequence) -> str | None:
    """The model a page selects first: an AE with d = 16 (the paper's usual setting) if there is one."""
    if not cards:
        return None
    for card in cards:
        if card.kind == "ae" and card.latent_dim == 16:
            return card.name
    return cards[0].name


def _cv_pixel_ap(card) -> float | None:
    """The card's cross-validated mean pixel AP (its reconstruction-mode row, else its best mode)."""
    rows = [r for r in ((getattr(card, "training", None) or {}).get("crossval") or []) if isinstance(r, Mapping)]
    values = {r.get("mode"): r.get("pixel_ap") for r in rows if isinstance(r.get("pixel_ap"), (int, float))}
    if not values:
        return None
    return float(values["reconstruction"]) if "reconstruction" in values else float(max(values.values()))


def rank_for_sequence(cards: Sequence, sequence: str) -> list:
    """The real-patient models trained on ``sequence``, best first: ``<sequence>-dae`` if it exists, then by
    their cards' cross-validated pixel AP (highest first), models without one after by their held-out pixel AP,
    then by name. The one ranking rule of the demo cases and of uploads (:mod:`ae4ad_core.model_choice`)."""
    seq = sequence.lower()
    same = [c for c in cards if is_patient_model(c) and card_sequence(c) == seq]

    def rank(c):
        cv, held_out = _cv_pixel_ap(c), _metric(c, "pixel_ap")
        return (c.name != f"{seq}-dae", cv is None, -(cv or 0.0), held_out is None, -(held_out or 0.0), c.name)

    return sorted(same, key=rank)


def default_model_for(cards: Sequence, sequence: str | None) -> str | None:
    """The model a demo case of ``sequence`` preselects: the first of :func:`rank_for_sequence`; for None (a
    template-brain case) or a sequence no model was trained on: :func:`default_model_name` over the
    template-brain models (all models when there are none).
    """
    if sequence:
        ranked = rank_for_sequence(cards, sequence)
        if ranked:
            return ranked[0].name
    template = [c for c in cards if not is_patient_model(c)]
    return default_model_name(template or list(cards))


def sequence_note(card, case_sequence: str | None) -> str | None:
    """A warning when the model was trained on another sequence (or other data) than the demo case's;
    ``case_sequence`` None means a template-brain case (T1-weighted, intensities in [0, 1])."""
    model = (_is_real(card), card_sequence(card) if _is_real(card) else None)
    case = (case_sequence is not None, case_sequence.lower() if case_sequence else None)
    if model == case:
        return None

    def words(real, seq):
        return (f"real {SEQUENCE_WORDS.get(seq, seq or 'patient')} slices" if real
                else "template-brain slices (T1-weighted, intensities in [0, 1])")

    return (f"This model was trained on {words(*model)}, but this case is one of the {words(*case)}: its "
            "scores and threshold do not apply here. Pick a model of the case's sequence for a fair result.")


def reconstruction_note(card) -> str | None:
    """What the Reconstruction view means for a model that redraws nothing (the plain-intensity baseline)."""
    if card.kind != "intensity":
        return None
    return ("This baseline redraws nothing (the flat grey is the brain's mean intensity): its anomaly map is the "
            "standardised intensity itself, so anything brighter than normal brain lights up. Every learned "
            "model should beat it to earn its place.")


ZOO_COLUMNS = ("model", "mode", "type", "sequence", "data", "d", "input (px)", "image AUROC",
               "level-matched AUROC", "image AP", "pixel AP", "vs baseline", "Dice (calibrated)",
               "latent entropy (nats)", "k-NN entropy (nats)", "effective dim", "score vs anatomy")
"""The zoo table's columns, in order (the Models page and ``ae4ad models --markdown``)."""


def _baseline_pixel_ap(cards: Sequence) -> dict[str, float]:
    """Pixel AP of each sequence's plain-intensity baseline (its intensity map, reconstruction mode)."""
    out = {}
    for c in cards:
        ap = _metric(c, "pixel_ap")
        if c.kind == "intensity" and ap is not None:
            out.setdefault((card_data(c), card_sequence(c)), ap)
    return out


def _zoo_order(cards: Sequence) -> list:
    """Real-patient models first, by sequence with the baseline first; then the template-brain zoo as given."""
    seqs = list(SEQUENCE_WORDS)
    real = [c for c in cards if _is_real(c)]
    real.sort(key=lambda c: (seqs.index(card_sequence(c)) if card_sequence(c) in seqs else len(seqs),
                             c.kind != "intensity"))
    return real + [c for c in cards if not _is_real(c)]


def zoo_rows(cards: Sequence) -> list[dict]:
    """One row per model and evaluated mode for the zoo table (:data:`ZOO_COLUMNS`): what the model is, its
    training data and sequence, the evaluation metrics (held-out patient for real-patient models, the demo test
    split for the template-brain zoo), and "vs baseline": pixel AP minus the same-sequence plain-intensity
    baseline's pixel AP. Every model is listed, whether it beats the baseline or not."""
    baseline = _baseline_pixel_ap(cards)
    rows = []
    for c in _zoo_order(cards):
        lat = c.latent or {}
        seq = card_sequence(c)
        modes = [m for m, v in (c.metrics or {}).items() if isinstance(v, Mapping)] or ["reconstruction"]
        for mode in modes:
            ap = _metric(c, "pixel_ap", mode)
            base = baseline.get((card_data(c), seq))
            rho = _metric(c, "anatomy_correlation", mode)
            rows.append(
                {
                    "model": c.name,
                    "mode": mode,
                    "type": _KIND_NAMES.get(c.kind, c.kind.upper()),
                    "sequence": SEQUENCE_WORDS.get(seq, seq) if seq else "",
                    "data": card_data(c),
                    "d": None if c.kind in _NO_LATENT else c.latent_dim,
                    "input (px)": _image_size(c),
                    "image AUROC": _metric(c, "image_auroc", mode),
                    "level-matched AUROC": _metric(c, "level_matched_auroc", mode),
                    "image AP": _metric(c, "image_ap", mode),
                    "pixel AP": ap,
                    "vs baseline": None if ap is None or base is None else ap - base,
                    "Dice (calibrated)": _metric(c, "calibrated_dice", mode),
                    "latent entropy (nats)": None if c.kind in _NO_LATENT else lat.get("entropy_gaussian_nats"),
                    "k-NN entropy (nats)": None if c.kind in _NO_LATENT else lat.get("entropy_knn_nats"),
                    "effective dim": None if c.kind in _NO_LATENT else lat.get("effective_dim"),
                    "score vs anatomy": rho,
                }
            )
    return rows


def _cell(value, key: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if key == "vs baseline":
            return f"{value:+.3f}"
        if key == "score vs anatomy":
            return f"{value:+.2f}"
        return f"{value:.1f}" if "nats" in key or key == "effective dim" else f"{value:.3f}"
    return str(value)


def zoo_markdown(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """``rows`` (:func:`zoo_rows` or :func:`crossval_rows`) as a Markdown table."""
    columns = list(columns or (rows[0].keys() if rows else ZOO_COLUMNS))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(k), k) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


_CV_METRICS = (("pixel_ap", "pixel AP"), ("image_auroc", "slice AUROC"),
               ("level_matched_auroc", "level-matched AUROC"), ("best_dice", "best Dice"),
               ("calibrated_dice", "Dice (calibrated)"))


def _mean_std(entry: Mapping, key: str) -> str:
    mean, std = entry.get(key), entry.get(f"{key}_std")
    if not isinstance(mean, (int, float)):
        return ""
    return f"{mean:.3f} ± {std:.3f}" if isinstance(std, (int, float)) else f"{mean:.3f}"


def _cv_model_key(name: str) -> tuple:
    from .cards import _natural_key

    return (name != "intensity", not name.startswith("ae-d"), _natural_key(name))


CROSSVAL_FILE = "crossval.json"
"""Shipped summary of the real-patient cross-validation (:func:`ae4ad_core.crossval.crossval_report`), in
``assets/real/``."""


def load_crossval_report(path=None) -> dict | None:
    """The shipped cross-validation report (``assets/real/crossval.json``), or None when absent. Torch-free, so
    ``ae4ad models`` can read it too."""
    import json
    from pathlib import Path

    from .assets import assets_dir

    p = Path(path) if path is not None else assets_dir() / "real" / CROSSVAL_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def crossval_rows(report: Mapping | None, sequence: str) -> list[dict]:
    """The cross-validated table of one sequence (:func:`ae4ad_core.crossval.load_crossval_report`): one row
    per model and mode, "mean ± std" over the leave-one-patient-out folds, the intensity baseline first."""
    entry = (report or {}).get(sequence) or {}
    summary = [e for e in entry.get("summary") or [] if isinstance(e, Mapping)]
    summary.sort(key=lambda e: (_cv_model_key(str(e.get("model"))), str(e.get("mode")) != "reconstruction",
                                str(e.get("mode"))))
    return [{"model": f"{sequence}-{e.get('model')}", "mode": e.get("mode"), "folds": e.get("folds"),
             **{label: _mean_std(e, key) for key, label in _CV_METRICS}} for e in summary]


def crossval_sweep_rows(report: Mapping | None, sequence: str, mode: str = "reconstruction") -> list[dict]:
    """The AE sweep over d of one sequence, cross-validated: per d, mean and std over folds of slice AUROC,
    pixel AP and the latent entropy (Gaussian, nats), sorted by d."""
    entry = (report or {}).get(sequence) or {}
    rows = []
    for e in entry.get("summary") or []:
        name = str(e.get("model", ""))
        if not name.startswith("ae-d") or e.get("mode") != mode or not name[4:].isdigit():
            continue
        row = {"d": int(name[4:])}
        for key, label in (("image_auroc", "slice AUROC"), ("pixel_ap", "pixel AP"),
                           ("entropy_gaussian_nats", "latent entropy (nats)")):
            row[label] = e.get(key)
            row[f"{label} std"] = e.get(f"{key}_std")
        rows.append(row)
    return sorted(rows, key=lambda r: r["d"])


def crossval_d_choice(report: Mapping | None, sequence: str) -> dict | None:
    """The label-free choice of d against the test-set oracle for one sequence: ``{"label_free", "oracle",
    "gap_points", "per_fold", "sentence"}``, or None when the report holds no such choice."""
    entry = (report or {}).get(sequence) or {}
    choice = entry.get("label_free") or {}
    if "chosen" not in choice or entry.get("oracle_d") is None:
        return None
    chosen, oracle = int(choice["chosen"]), int(entry["oracle_d"])
    gap = entry.get("auroc_gap_points")
    gap = float(gap) if isinstance(gap, (int, float)) else None
    word = SEQUENCE_WORDS.get(sequence, sequence)
    if chosen == oracle:
        sentence = (f"On {word}, the label-free rule picks d = {chosen}, the same d that the tumour labels "
                    "would have picked: nothing is lost by not looking at them.")
    else:
        sentence = (f"On {word}, the label-free rule picks d = {chosen}; the tumour labels of the test patients "
                    f"would have picked d = {oracle}"
                    + (f", {gap:.1f} slice-AUROC points better on average." if gap is not None else "."))
    return {"label_free": chosen, "oracle": oracle, "gap_points": gap,
            "per_fold": dict(choice.get("per_fold") or {}), "sentence": sentence}


def evaluation_result(card, mode: str = "reconstruction"):
    """The card's stored :class:`~ae4ad_core.evaluation.EvaluationResult` for ``mode`` (curves included), or
    None when the model was not evaluated in that mode."""
    from .evaluation import EvaluationResult

    data = (card.metrics or {}).get(mode)
    if not isinstance(data, Mapping) or "curves" not in data:
        return None
    fields = {f.name for f in dataclasses.fields(EvaluationResult)}
    try:
        return EvaluationResult(**{k: v for k, v in data.items() if k in fields})
    except TypeError:  # a card written by another version of the library
        return None


def ae_sweep_rows(cards: Sequence) -> list[dict]:
    """Plain AEs of the same input size and data (the largest such group) for AUROC-vs-d and entropy-vs-d."""
    groups: dict[tuple, list] = {}
    for c in cards:
        if c.kind == "ae":
            key = (c.architecture.image_size, (c.training_data or {}).get("description", ""))
            groups.setdefault(key, []).append(c)
    if not groups:
        return []
    best = max(groups.values(), key=len)
    if len({c.latent_dim for c in best}) < 2:
        return []
    return sorted(
        (
            {
                "d": c.latent_dim,
                "model": c.name,
                "image AUROC": _metric(c, "image_auroc"),
                "latent entropy (nats)": (c.latent or {}).get("entropy_gaussian_nats"),
                "effective dim": (c.latent or {}).get("effective_dim"),
            }
            for c in best
        ),
        key=lambda r: r["d"],
    )


ANATOMY_CAVEAT_RHO = 0.5


def anatomy_caveat(card, mode: str) -> str | None:
    """A warning when this model's score in ``mode`` follows how much anatomy a slice holds.

    The evaluation stores the Spearman correlation between normal test slices' scores and their brain area
    (``anatomy_correlation``); above ``ANATOMY_CAVEAT_RHO`` in magnitude, a high or low score may reflect the
    slice level rather than an anomaly, and the reader should compare with neighbouring slices.
    """
    rho = _metric(card, "anatomy_correlation", mode)
    if rho is None or abs(rho) < ANATOMY_CAVEAT_RHO:
        return None
    direction = "more" if rho > 0 else "less"
    return (
        f"Read with care: on normal test slices this model's score rises with {direction} brain in the slice "
        f"(Spearman ρ = {rho:+.2f}), so part of any score reflects the slice level, not an anomaly. "
        "Compare with neighbouring slices and look at where the map lights up."
    )
