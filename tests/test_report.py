"""PDF report and de-identification of exports: a synthetic DICOM with made-up identifiers is batch-scored and
exported to CSV and PDF; its identifiers appear only when asked for."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
from _fixtures_io import dicom_bytes, png_bytes

from ae4ad_core.batch import score_uploads
from ae4ad_core.registry import load_model
from ae4ad_core.report import NOTICE, build_pdf_report

IDENTIFIERS = ("Doe^Jane", "ID-12345", "St Example Hospital")


def pdf_text(pdf: bytes) -> str:
    """Every stream of the PDF, decompressed where it is Flate-encoded, plus the uncompressed objects."""
    parts = [pdf]
    # The end-of-line before "endstream" is left in the capture: a compressed stream whose last byte is \r
    # would lose it to an optional "\r?" in the pattern (about one report in 256 failed that way). A
    # decompressor object stops at the end of the zlib data and ignores what follows.
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            parts.append(zlib.decompressobj().decompress(stream))
        except zlib.error:
            parts.append(stream)
    return b"\n".join(parts).decode("latin-1")


@pytest.fixture(scope="module")
def scored(tiny_ae_dir):
    loaded = load_model(tiny_ae_dir, device="cpu")
    rng = np.random.default_rng(1)
    files = [
        ("patient.dcm", dicom_bytes((rng.random((32, 32)) * 1000).astype(np.int16))),  # Doe^Jane, ID-12345...
        ("slice.png", png_bytes((rng.random((32, 32)) * 255).astype(np.uint8))),
        ("noise.bin", rng.bytes(200)),
    ]
    plain = score_uploads(files, loaded)
    with_ids = score_uploads(files, loaded, include_identifiers=True)
    return loaded, plain, with_ids


def test_pdf_has_notice_model_table_and_errors(scored):
    loaded, plain, _ = scored
    pdf = build_pdf_report(plain, loaded.card, title="Ward 7 screening")
    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf)
    assert "not for diagnosis" in text and NOTICE in text
    for needle in (
        "Ward 7 screening",
        loaded.card.name,
        "patient.dcm",
        "slice.png",
        "noise.bin",
        f"{plain.threshold:.4g}",
        "5% false-positive rate",
        "Volumes ranked by anomaly score",
    ):
        assert needle in text, needle
    assert text.count("/Subtype /Image") >= 4  # image + overlay thumbnails of both volumes


def test_no_identifiers_in_csv_or_pdf_unless_asked(scored):
    loaded, plain, with_ids = scored
    outputs = {
        "csv (scored without identifiers)": plain.to_csv().decode(),
        "csv (identifiers read, not exported)": with_ids.to_csv().decode(),
        "pdf (scored without identifiers)": pdf_text(build_pdf_report(plain, loaded.card)),
        "pdf (identifiers read, not exported)": pdf_text(build_pdf_report(with_ids, loaded.card)),
    }
    for what, text in outputs.items():
        for secret in IDENTIFIERS:
            assert secret not in text, f"{secret!r} leaked into the {what}"
    assert plain.identifiers == {}

    csv_text = with_ids.to_csv(include_identifiers=True).decode()
    pdf = pdf_text(build_pdf_report(with_ids, loaded.card, include_identifiers=True))
    for secret in IDENTIFIERS:  # the check above is not vacuous: asked for, they are there
        assert secret in csv_text and secret in pdf
    with pytest.raises(ValueError, match="without identifiers"):
        build_pdf_report(plain, loaded.card, include_identifiers=True)


def test_unicode_names_and_empty_results(scored, tiny_ae_dir):
    loaded, _, _ = scored
    result = score_uploads(
        [("Gehirn_Ø_脑.png", png_bytes(np.full((16, 16), 90, np.uint8))), ("x.bin", b"\x00")], loaded
    )
    text = pdf_text(build_pdf_report(result, loaded.card))
    assert "Gehirn_" in text and "x.bin" in text
    nothing = score_uploads([("x.bin", b"\x00\x01")], loaded)
    assert build_pdf_report(nothing, loaded.card).startswith(b"%PDF")
    other = load_model(tiny_ae_dir.parent / "tiny-vae-d4", device="cpu")
    with pytest.raises(ValueError, match="card is of model"):
        build_pdf_report(result, other.card)
