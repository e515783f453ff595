"""A PDF report of a batch: the model, the ranked volumes with thumbnails, the failures, and the notice that
this is a research and teaching tool, not for diagnosis.

Built with fpdf2 and its core Helvetica font, so text is stored as plain (compressed) PDF strings: characters
outside Latin-1 in file names are transliterated or replaced by ``?``. Patient identifiers appear only with
``include_identifiers=True`` *and* a result scored with identifiers (see :func:`ae4ad_core.batch.score_uploads`).
"""

from __future__ import annotations

import io
import time
import unicodedata

from .batch import IDENTIFIER_FIELDS, BatchResult
from .registry import ModelCard

__all__ = ["NOTICE", "build_pdf_report", "card_lines"]

NOTICE = "Research and teaching tool - not for diagnosis."
"""The notice printed at the top of the report and in every page footer."""

_KIND_NAMES = {
    "ae": "Autoencoder (AE)",
    "vae": "Variational autoencoder (VAE)",
    "rdae": "Rate-distortion autoencoder",
}


def _latin1(text) -> str:
    """Text the core PDF fonts can draw: common punctuation mapped to ASCII, accents kept, the rest ``?``."""
    s = str(text).replace("\u2014", " - ").replace("\u2013", "-").replace("\u2026", "...")
    s = s.replace("\u2018", "'").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    out = []
    for ch in s:
        try:
            ch.encode("latin-1")
            out.append(ch)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch).encode("latin-1", "ignore").decode("latin-1")
            out.append(base or "?")
    return "".join(out)


def card_lines(card: ModelCard, *, mode: str, threshold: float, fpr: float) -> list[tuple[str, str]]:
    """``(label, value)`` rows summarising a model card for a report."""
    data = card.training_data or {}
    trained_on = data.get("description") or "not recorded"
    counts = []
    if data.get("n_train") is not None:
        counts.append(f"{data['n_train']} training images")
    if data.get("n_val_normal") is not None:
        counts.append(f"{data['n_val_normal']} normal validation images")
    return [
        ("Model", card.name),
        (
            "Type",
            f"{_KIND_NAMES.get(card.kind, card.kind)}, latent size d = {card.latent_dim}, "
            f"{card.architecture.image_size} px input",
        ),
        ("Trained on", trained_on + (f" ({', '.join(counts)})" if counts else "")),
        ("Scoring mode", mode),
        (
            "Threshold",
            f"{threshold:.4g}: set on normal validation images for a {fpr:.0%} false-positive rate",
        ),
        ("Trained", str((card.provenance or {}).get("date") or "date not recorded")),
    ]


def build_pdf_report(
    result: BatchResult,
    card: ModelCard | None,
    *,
    include_identifiers: bool = False,
    title: str = "AE4AD batch screening report",
) -> bytes:
    """Render a batch result as a PDF.

    Parameters
    ----------
    result : BatchResult
    card : ModelCard or None
        The card of the model that scored the batch (``result.model_name``); ``None`` when the model was
        chosen per scan (each row names its model).
    include_identifiers : bool
        Add an identifier column (patient name, ID...). Needs a result scored with identifiers.
    title : str

    Returns
    -------
    bytes
        The PDF document (starts with ``%PDF``).
    """
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    if card is not None and card.name != result.model_name:
        raise ValueError(
            f"The card is of model {card.name!r} but the batch was scored with {result.model_name!r}."
        )
    ids_by_volume = {}
    if include_identifiers:
        result.identifier_columns(True)  # raises when the result holds no identifiers
        ids_by_volume = {
            vid: "\n".join(f"{ids[f]}" for f in IDENTIFIER_FIELDS if f in ids)
            for vid, ids in result.identifiers.items()
        }

    class _Report(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", "I", 8)
            self.set_text_color(120, 0, 0)
            self.cell(0, 5, _latin1(f"{NOTICE}   Page {self.page_no()}/{{nb}}"), align="C")
            self.set_text_color(0, 0, 0)

    pdf = _Report(orientation="landscape", unit="mm", format="A4")
    pdf.set_title(_latin1(title))
    pdf.set_creator("AE4AD Studio")
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.alias_nb_pages()
    pdf.add_page()
    width = pdf.epw

    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(
        0, 5, time.strftime("Generated %Y-%m-%d %H:%M UTC", time.gmtime()), new_x="LMARGIN", new_y="NEXT"
    )
    pdf.ln(2)

    pdf.set_draw_color(180, 0, 0)
    pdf.set_fill_color(255, 235, 235)
    pdf.set_text_color(150, 0, 0)
    pdf.set_font("Helvetica", "B", 12)
    pdf.multi_cell(
        width,
        7,
        _latin1(
            f"{NOTICE} Scores say how unlike the model's normal training images a "
            "slice is; they are not a clinical finding."
        ),
        border=1,
        fill=True,
        align="C",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(0, 0, 0)
    pdf.set_fill_color(255, 255, 255)
    pdf.ln(3)

    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 6, "Model", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    lines = (
        card_lines(card, mode=result.mode, threshold=result.threshold, fpr=result.fpr)
        if card is not None
        else [
            ("Model", "chosen per scan: the model trained on each scan's sequence (named in each row)"),
            ("Scoring mode", result.mode),
            ("Not scored", f"{result.n_unfit} scan(s) no model fits (CT, X-ray, another sequence...)"),
        ]
    )
    for label, value in lines:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(32, 5, _latin1(label))
        pdf.set_font("Helvetica", "", 9)
        pdf.multi_cell(width - 32, 5, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    n_vol = len(result.volumes)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(
        0,
        6,
        _latin1(
            f"Volumes ranked by anomaly score ({n_vol} scored, {result.n_above} above the "
            f"threshold, {len(result.errors)} failed)"
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(
        width,
        4,
        _latin1(
            "Volume score = the highest slice score. Image: the highest-scoring slice; Map: the anomaly map over it "
            "on a fixed scale from normal images (inferno), cyan outline = pixels above the calibrated pixel "
            "threshold. Percentile = share of normal validation images scoring at or below."
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(1)

    if n_vol:
        headers = [
            "#",
            "Image",
            "Map",
            "File / series",
            "Slices",
            "Best slice",
            "Score",
            "Percentile",
            "Verdict",
        ]
        widths = [8, 22, 22, 76, 14, 16, 20, 20, 38]
        if include_identifiers:
            headers.insert(4, "Identifiers")
            widths = [8, 22, 22, 58, 46, 12, 14, 18, 18, 34]
        scale = width / sum(widths)
        with pdf.table(
            col_widths=[w * scale for w in widths],
            line_height=4.5,
            text_align="LEFT",
            headings_style=FontFace(emphasis="BOLD", fill_color=(230, 230, 230)),
            v_align="MIDDLE",
            first_row_as_headings=True,
        ) as table:
            head = table.row()
            for h in headers:
                head.cell(h)
            for v in result.volumes:
                row = table.row()
                row.cell(str(v["rank"]))
                thumbs = result.thumbnails.get(v["volume_id"])
                for png in thumbs if thumbs else (None, None):
                    if png is None:
                        row.cell("-")
                    else:
                        row.cell(img=io.BytesIO(png), img_fill_width=True)
                found = [v.get("model") or "no model fits", v.get("sequence") or ""]
                if isinstance(v.get("brain_fraction"), (int, float)):
                    found.append(f"brain {v['brain_fraction']:.0%}")
                row.cell(_latin1(f"{v['name']}\n{', '.join(f for f in found if f)}"))
                if include_identifiers:
                    row.cell(_latin1(ids_by_volume.get(v["volume_id"], "")))
                row.cell(str(v["n_slices"]))
                row.cell(str(v["best_slice"] + 1))
                if v.get("model", result.model_name) is None:
                    row.cell("-")
                    row.cell("-")
                    row.cell("No model fits")
                    continue
                row.cell(f"{v['score']:.4g}")
                row.cell(f"{v['score_percentile']:.0f}")
                above = v["above_threshold"]
                row.cell(
                    "Above normal range" if above else "Within normal range",
                    style=FontFace(emphasis="BOLD", color=(160, 0, 0)) if above else None,
                )
        pdf.set_font("Helvetica", "", 7)
        pdf.multi_cell(
            width,
            4,
            "Slices are numbered from 1 in the order the file (or the sorted series) holds them.",
            new_x="LMARGIN",
            new_y="NEXT",
        )

    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(
        0, 6, f"Files that could not be read or scored ({len(result.errors)})", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.set_font("Helvetica", "", 8)
    if not result.errors:
        pdf.cell(0, 5, "None.", new_x="LMARGIN", new_y="NEXT")
    for name, reason in result.errors:
        text = reason if reason.startswith(name) else f"{name}: {reason}"
        pdf.multi_cell(width, 4, _latin1(text), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
