"""Downloads of one analysis: per-slice CSV, JSON with what was analysed, and safe file names.

Results hold scores and settings only: no pixel data and no patient identifiers.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping

__all__ = ["records_csv", "result_json", "download_name", "preparation_columns"]


def records_csv(analysis, *, extra: Mapping | None = None) -> str:
    """The per-slice records of an analysis as CSV text (one row per slice, no pixel data, no identifiers)."""
    rows = [{**(extra or {}), **r} for r in analysis.records()]
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def result_json(
    analysis,
    *,
    image=None,
    device: str | None = None,
    demo_case: str | None = None,
    extra: Mapping | None = None,
) -> str:
    """:meth:`Analysis.to_json` plus what was analysed (file name, format, shape), on which device, and
    ``extra`` (e.g. :meth:`ae4ad_core.analysis.ImageAnalysis.to_record`: the model choice and the brain
    extraction and standardisation)."""
    extra = dict(extra or {})
    if image is not None:
        extra["input"] = {"name": image.name, "format": image.format, "shape": list(image.pixels.shape)}
    if demo_case is not None:
        extra["demo_case"] = demo_case
    if device is not None:
        extra["device"] = device
    return analysis.to_json(extra=extra)


def download_name(image_name: str, model: str, mode: str, suffix: str) -> str:
    """A safe file name for a download, e.g. ``scan_ae-d16_reconstruction.json``."""
    stem = image_name.rsplit(".", 1)[0] if not image_name.endswith(".nii.gz") else image_name[:-7]
    text = f"{stem}_{model}_{mode}{suffix}"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def preparation_columns(result) -> dict:
    """Flat columns of the whole-head path for a CSV row (an :class:`~ae4ad_core.analysis.ImageAnalysis`):
    ``sequence``, ``model_fits``, ``brain_fraction``, ``brain_extraction`` and ``model_choice``."""
    prep = result.preparation or {}
    return {
        "sequence": result.guess.sequence,
        "model_fits": result.fits,
        "brain_fraction": prep.get("brain_fraction"),
        "brain_extraction": (prep.get("brain_extraction") or {}).get("method", ""),
        "model_choice": result.choice.reason,
    }
