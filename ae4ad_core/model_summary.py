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
    "card_summary",
    "default_model_name",
    "zoo_rows",
    "evaluation_result",
    "ae_sweep_rows",
    "anatomy_caveat",
]


def _metric(card, key: str, mode: str = "reconstruction"):
    value = (card.metrics or {}).get(mode, {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def card_summary(card) -> str:
    """One line for a model picker: type, d, input size, training data, latent entropy, demo AUROC."""
    kind = card.kind.upper()
    parts = [f"**{kind}**, d = {card.latent_dim}", f"{card.architecture.image_size} px input"]
    data = _short((card.training_data or {}).get("description") or "")
    if data:
        parts.append(f"trained on {data}")
    ent = (card.latent or {}).get("entropy_gaussian_nats")
    if isinstance(ent, (int, float)) and math.isfinite(ent):
        parts.append(f"latent entropy {ent:.1f} nats")
    auroc = _metric(card, "image_auroc")
    if auroc is not None:
        on_demo = "demo" in str((card.training_data or {}).get("description", "")).lower()
        parts.append(f"{'demo' if on_demo else 'test'} AUROC {auroc:.2f}")
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


def zoo_rows(cards: Sequence) -> list[dict]:
    """One row per model for the zoo table: card fields that matter and evaluation metrics."""
    rows = []
    for c in cards:
        lat = c.latent or {}
        rows.append(
            {
                "model": c.name,
                "type": c.kind.upper(),
                "d": c.latent_dim,
                "input (px)": c.architecture.image_size,
                "image AUROC": _metric(c, "image_auroc"),
                "image AP": _metric(c, "image_ap"),
                "pixel AP": _metric(c, "pixel_ap"),
                "Dice (calibrated)": _metric(c, "calibrated_dice"),
                "latent entropy (nats)": lat.get("entropy_gaussian_nats"),
                "k-NN entropy (nats)": lat.get("entropy_knn_nats"),
                "effective dim": lat.get("effective_dim"),
                "trained on": (c.training_data or {}).get("description", ""),
                "epochs": ((c.training or {}).get("config") or {}).get("epochs"),
            }
        )
    return rows


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
