"""Which scan is this? MR sequence, modality and body part from a DICOM header, a file name and the pixels.

The real-patient models were each trained on one MR sequence of the brain (FLAIR or post-contrast T1), so the
app must know what an upload is before it picks a model. :func:`detect_sequence` reads what an
:class:`~ae4ad_core.io.Image` offers and returns a :class:`SequenceGuess` with the reasons in plain words:

* **DICOM**: Modality and Body Part Examined; the series description and protocol name (``"AX FLAIR"``,
  ``"T1 MPRAGE POST"``, ``"t2_tse_tra"``); the timing (Repetition, Echo and Inversion Time) and Scanning
  Sequence, which decide when the words do not (FLAIR: inversion recovery with TI about 2000-2800 ms and a
  long TR and TE; T1: short TR and TE, or an inversion of about 600-1200 ms with short TE; T2: long TR and
  TE, no inversion); a contrast agent (Contrast/Bolus Agent) turns a T1 into T1c.
* **NIfTI, PNG and other files without a header**: the file name's tokens, as the public collections name
  their files (BraTS 2021 ``_flair``/``_t1ce``/``_t1``/``_t2``, BraTS 2023
  ``-t2f``/``-t1c``/``-t1n``/``-t2w``, BraTS 2013 ``Flair_``/``T1c_``, TCGA ``_flair``/``_t1c``...), then
  simple statistics of the pixels (Hounsfield units mean CT; a constant background around a z-scored region
  means an image already skull-stripped and standardised).

:func:`sequence_from_header` also takes a :class:`pydicom.Dataset` or a plain dict of DICOM keywords. The
de-identified :attr:`Image.metadata` of the DICOM reader keeps Modality, Body Part Examined, the descriptions,
Scanning Sequence and the three times, but not Sequence Variant, Sequence Name or Contrast/Bolus Agent (they
are not in :data:`ae4ad_core.io.dicom._DICOM_METADATA_FIELDS`), so for an uploaded DICOM the contrast is known
only from the words of the description; a dataset passed directly is read in full.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = [
    "SEQUENCE_NAMES",
    "SequenceGuess",
    "detect_sequence",
    "sequence_from_header",
    "sequence_from_name",
    "sequence_from_pixels",
]

SEQUENCE_NAMES = ("flair", "t1", "t1c", "t2", "other", "unknown")
"""``other``: an MR sequence none of the models knows (diffusion, SWI, PD, a localiser...) or not MR at all;
``unknown``: nothing said which sequence it is."""

_SEQUENCE_WORDS = {
    "flair": "FLAIR",
    "t1": "T1",
    "t1c": "T1 post-contrast (T1c)",
    "t2": "T2",
    "other": "another kind of image",
    "unknown": "an unknown sequence",
}

_MODALITY_WORDS = {
    "MR": "MRI",
    "CT": "CT",
    "CR": "X-ray",
    "DX": "X-ray",
    "DR": "X-ray",
    "MG": "mammogram",
    "US": "ultrasound",
    "PT": "PET",
    "NM": "nuclear medicine",
    "XA": "angiography",
    "RF": "fluoroscopy",
    "OT": "other",
}

# Body Part Examined values and description words -> our body part names.
_BODY_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "brain",
        ("brain", "head", "skull", "neuro", "cerebr", "cranium", "cranial", "kopf", "schaedel", "hirn"),
    ),
    ("chest", ("chest", "thorax", "lung", "thx", "cxr", "pulmo", "breast")),
    ("abdomen", ("abdomen", "abd", "liver", "pancrea", "kidney", "renal", "bowel", "colon")),
    ("pelvis", ("pelvis", "prostate", "hip", "bladder", "uterus")),
    ("spine", ("spine", "cspine", "tspine", "lspine", "lumbar", "cervical", "thoracic spine", "sacrum")),
    ("knee", ("knee",)),
    ("shoulder", ("shoulder",)),
    ("extremity", ("hand", "wrist", "ankle", "foot", "elbow", "extremity", "leg", "arm")),
    ("neck", ("neck",)),
    ("heart", ("heart", "cardiac", "cardio", "coronary")),
)

# Words of a series description / protocol name / file name, checked in this order (first match wins).
_NAME_RULES: tuple[tuple[str, str], ...] = (
    (
        "other",
        r"\b(dwi|diff\w*|adc|trace|dti|swi|susc\w*|perf\w*|dsc|dce|asl|bold|fmri|localizer|localiser|"
        r"scout|survey|t2star|gre\s*t2|mra|tof|pd|pdw|proton|seg|mask|brainmask|label|labels)\b|t2\s*\*",
    ),
    ("t1", r"\bt1\s*w?\s*flair\b|\bflair\s*t1\b"),
    ("flair", r"(flair|\bt2f\b|\btirm\b|dark\s*fluid|darkfluid|\bt2[\s_-]*fl\b|\bfl[\s_-]*t2\b)"),
    (
        "t1c",
        r"(\bt1\s*(c|ce|gd|km|post|pc|\+\s*c|\+\s*gd|\+)(?![a-z0-9])|\bt1c\b|\bt1ce\b|\bt1gd\b|"
        r"\bt1\w*\s*(post|gad\w*|gd|contrast|\+c|c\+|km|pc)\b|\bpost\s*(gad\w*|gd|contrast)\b)",
    ),
    ("t1", r"(\bt1(w|n)?\b|\bt1w?[\s_-]|\bt1_|mprage|mp-rage|\bspgr\b|\btfl\b|\bbravo\b|\bt1\b)"),
    ("t2", r"(\bt2(w)?\b|\bt2w?[\s_-]|\bt2_)"),
)
_CONTRAST_WORDS = r"(\bpost\b|\+\s*c\b|\bc\s*\+|\bgad\w*|\bgd\b|\bcontrast\b|\bkm\b|\bce\b|\benhanc\w*)"
_NON_BRAIN_WORDS = ("cxr", "xray", "x-ray", "radiograph", "mammo")


@dataclass(frozen=True)
class SequenceGuess:
    """What a scan appears to be.

    Attributes
    ----------
    sequence : {"flair", "t1", "t1c", "t2", "other", "unknown"}
        The MR sequence (see :data:`SEQUENCE_NAMES`).
    modality : str
        DICOM modality code (``"MR"``, ``"CT"``, ``"CR"``, ``"DX"``...) or ``"unknown"``.
    body_part : str
        ``"brain"``, ``"chest"``, ``"abdomen"``, ``"knee"``... or ``"unknown"``.
    confidence : float
        0 (a guess from nothing) to 1 (the header's words and its timing agree).
    reasons : list of str
        Why, in plain words, one line per clue (e.g. "series description 'AX FLAIR' says FLAIR").
    """

    sequence: str
    modality: str = "unknown"
    body_part: str = "unknown"
    confidence: float = 0.0
    reasons: list = field(default_factory=list)

    @property
    def is_brain_mr(self) -> bool:
        """True unless something says it is not MR or not the head."""
        return self.modality in ("MR", "unknown") and self.body_part in ("brain", "unknown")

    def describe(self) -> str:
        """One sentence, e.g. "FLAIR MRI of the brain (confidence 0.95)"."""
        what = _MODALITY_WORDS.get(self.modality, self.modality) if self.modality != "unknown" else "image"
        seq = (
            ""
            if self.sequence in ("other", "unknown") or self.modality not in ("MR", "unknown")
            else (_SEQUENCE_WORDS[self.sequence] + " ")
        )
        part = "" if self.body_part == "unknown" else f" of the {self.body_part}"
        return f"{seq}{what}{part} (confidence {self.confidence:.2f})"

    def to_record(self) -> dict:
        """JSON-ready dict for the analysis JSON/CSV/PDF."""
        return {
            "sequence": self.sequence,
            "modality": self.modality,
            "body_part": self.body_part,
            "confidence": round(float(self.confidence), 2),
            "reasons": list(self.reasons),
            "description": self.describe(),
        }


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return str(getattr(value, "value", value)).strip()


def _number(value: Any) -> float | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _normalise_words(text: str) -> str:
    """Lower case; separators that names use (``_``, ``-``, ``.``) as spaces so word boundaries apply."""
    return re.sub(r"[_\-.]+", " ", text.lower())


def _sequence_from_words(text: str) -> str | None:
    words = _normalise_words(text)
    for sequence, pattern in _NAME_RULES:
        if re.search(pattern, words):
            return sequence
    return None


def _body_part(value: str) -> str | None:
    words = _normalise_words(value)
    for part, keys in _BODY_PARTS:
        if any(re.search(rf"\b{re.escape(k)}" + (r"\b" if len(k) <= 4 else ""), words) for k in keys):
            return part
    return None


def _header_value(header: Any, keyword: str, snake: str) -> Any:
    """A field of a pydicom Dataset (by keyword) or of a dict (keyword or the reader's snake-case key)."""
    if isinstance(header, Mapping):
        return header.get(keyword, header.get(snake))
    return getattr(header, keyword, None) if hasattr(header, keyword) else None


def _sequence_from_timing(
    tr: float | None, te: float | None, ti: float | None, scanning: str
) -> tuple[str | None, str]:
    """(sequence, reason) from Repetition/Echo/Inversion Time (ms) and Scanning Sequence."""
    times = ", ".join(f"{n} {v:g} ms" for n, v in (("TR", tr), ("TE", te), ("TI", ti)) if v is not None)
    inversion = ti is not None or "IR" in scanning.upper().split("\\")
    if ti is not None and ti >= 1500 and (te is None or te >= 60):
        return "flair", f"inversion recovery with a long inversion ({times}) nulls the fluid: FLAIR"
    if inversion and ti is not None and 300 <= ti < 1500 and (te is None or te < 30):
        return (
            "t1",
            f"inversion recovery with TI {ti:g} ms and a short TE ({times}): T1-weighted (e.g. MPRAGE)",
        )
    if tr is not None and te is not None:
        if tr < 1200 and te < 30:
            return "t1", f"short TR and TE ({times}): T1-weighted"
        if tr >= 2000 and te >= 60 and not inversion:
            return "t2", f"long TR and TE without inversion ({times}): T2-weighted"
        if tr >= 2000 and te < 40 and not inversion:
            return "other", f"long TR, short TE ({times}): proton density, which no model here knows"
    if times:
        return None, f"timing ({times}) does not settle the sequence"
    return None, ""


def sequence_from_header(header: Any) -> SequenceGuess:
    """Guess from a DICOM header: a :class:`pydicom.Dataset`, a dict of DICOM keywords, or the
    :attr:`Image.metadata` of the DICOM reader (snake-case keys).

    Returns
    -------
    SequenceGuess
        ``modality`` from Modality; ``body_part`` from Body Part Examined, else the descriptions; for MR the
        sequence from the descriptions and the timing (agreeing clues give confidence 0.95, words alone 0.85,
        timing alone 0.7; a contrast agent or words like "post"/"+C"/"Gd" turn T1 into T1c).
    """
    modality = _text(_header_value(header, "Modality", "modality")).upper() or "unknown"
    body = _text(_header_value(header, "BodyPartExamined", "body_part"))
    series = _text(_header_value(header, "SeriesDescription", "series_description"))
    protocol = _text(_header_value(header, "ProtocolName", "protocol_name"))
    study = _text(_header_value(header, "StudyDescription", "study_description"))
    sequence_name = _text(_header_value(header, "SequenceName", "sequence_name"))
    scanning = _text(_header_value(header, "ScanningSequence", "scanning_sequence"))
    variant = _text(_header_value(header, "SequenceVariant", "sequence_variant"))
    agent = _text(_header_value(header, "ContrastBolusAgent", "contrast_agent"))
    tr = _number(_header_value(header, "RepetitionTime", "repetition_time"))
    te = _number(_header_value(header, "EchoTime", "echo_time"))
    ti = _number(_header_value(header, "InversionTime", "inversion_time"))
    reasons: list[str] = []

    part = _body_part(body) if body else None
    if part:
        reasons.append(f"Body Part Examined '{body}' says {part}")
    else:
        for label, text in (
            ("series description", series),
            ("protocol", protocol),
            ("study description", study),
        ):
            part = _body_part(text) if text else None
            if part:
                reasons.append(f"{label} '{text}' mentions the {part}")
                break
    if modality != "unknown":
        reasons.insert(0, f"Modality {modality} ({_MODALITY_WORDS.get(modality, 'unlisted')})")
    if modality not in ("MR", "unknown"):
        return SequenceGuess("other", modality, part or "unknown", 0.95, reasons)

    by_words, source = None, ""
    for label, text in (
        ("series description", series),
        ("protocol", protocol),
        ("sequence name", sequence_name),
    ):
        by_words = _sequence_from_words(text) if text else None
        if by_words:
            source = f"{label} '{text}'"
            break
    if by_words is None and re.search(r"(^|\W)\*?tir", sequence_name.lower()):
        by_words, source = "flair", f"sequence name '{sequence_name}' (turbo inversion recovery)"
    if by_words:
        reasons.append(f"{source} says {_SEQUENCE_WORDS[by_words]}")
    by_timing, timing_reason = _sequence_from_timing(tr, te, ti, scanning + "\\" + variant)
    if timing_reason:
        reasons.append(timing_reason)

    if by_words and by_timing:
        agree = by_words == by_timing or (by_words == "t1c" and by_timing == "t1")
        sequence = by_words
        confidence = 0.95 if agree else 0.6
        if not agree:
            reasons.append(f"the words ({by_words}) and the timing ({by_timing}) disagree; the words win")
    elif by_words:
        sequence, confidence = by_words, 0.85
    elif by_timing:
        sequence, confidence = by_timing, 0.7
    else:
        sequence, confidence = "unknown", 0.0
    if sequence == "t1":
        contrast_text = " ".join(t for t in (series, protocol) if t)
        if agent:
            sequence = "t1c"
            reasons.append(f"a contrast agent is recorded ('{agent}'): T1 after contrast")
        elif contrast_text and re.search(_CONTRAST_WORDS, _normalise_words(contrast_text)):
            sequence = "t1c"
            reasons.append(f"'{contrast_text}' says after contrast: T1c")
    if modality == "unknown" and sequence not in ("unknown", "other"):
        modality = "MR"
    return SequenceGuess(sequence, modality, part or "unknown", confidence, reasons)


def sequence_from_name(name: str) -> SequenceGuess:
    """Guess from a file name (``TCGA-FG-6692_flair.nii.gz``, ``BraTS-GLI-00000-000-t1c.nii.gz``,
    ``T1c_subtrMeanDivStd.nii.gz``, ``chest_xray.png``). The folder part of a path is ignored."""
    stem = PurePath(str(name)).name
    stem = re.sub(
        r"(\.nii(\.gz)?|\.dcm|\.dicom|\.png|\.jpe?g|\.tiff?|\.bmp|\.gif|\.webp|\.gz)+$",
        "",
        stem,
        flags=re.IGNORECASE,
    )
    words = _normalise_words(stem)
    reasons = []
    part = _body_part(stem)
    modality = "unknown"
    if re.search(r"\b(ct|cect|ncct|hu)\b", words):
        modality = "CT"
    elif any(w in words.replace(" ", "") for w in _NON_BRAIN_WORDS) or re.search(r"\b(cr|dx)\b", words):
        modality = "DX"
    if modality != "unknown":
        reasons.append(f"file name '{stem}' says {_MODALITY_WORDS[modality]}")
    if part:
        reasons.append(f"file name '{stem}' mentions the {part}")
    if modality not in ("unknown", "MR"):
        return SequenceGuess("other", modality, part or "unknown", 0.7, reasons)
    sequence = _sequence_from_words(stem)
    if sequence is None:
        reasons.append(f"file name '{stem}' names no sequence")
        return SequenceGuess("unknown", modality, part or "unknown", 0.0, reasons)
    reasons.append(f"file name '{stem}' says {_SEQUENCE_WORDS[sequence]}")
    if sequence != "other":
        modality = "MR"
    return SequenceGuess(sequence, modality, part or "unknown", 0.8 if sequence != "other" else 0.6, reasons)


def sequence_from_pixels(pixels: np.ndarray) -> tuple[str | None, list[str], dict]:
    """Clues in the intensities alone: ``(modality or None, reasons, facts)``.

    ``facts`` has ``hounsfield_like`` (air near -1000 and values above 300: CT), ``constant_background`` (one
    lowest value covers at least a third of the image: zero-filled air, or the background of a skull-stripped
    image) and ``standardised`` (the rest has mean about 0 and standard deviation about 1: skull-stripped and
    z-scored inside the brain, as BraTS prepares it)."""
    x = np.asarray(pixels, dtype=np.float32)
    finite = x[np.isfinite(x)]
    facts = {"hounsfield_like": False, "constant_background": False, "standardised": False}
    reasons: list[str] = []
    if finite.size == 0:
        return None, reasons, facts
    lo, hi = float(finite.min()), float(finite.max())
    if lo <= -900 and hi >= 300 and float(np.mean(finite < -900)) > 0.05:
        facts["hounsfield_like"] = True
        reasons.append(
            f"intensities from {lo:.0f} to {hi:.0f} with air near -1000 look like Hounsfield units: CT"
        )
        return "CT", reasons, facts
    values, counts = np.unique(finite[:: max(1, finite.size // 200_000)], return_counts=True)
    mode = float(values[int(np.argmax(counts))])
    background = finite == mode
    share = float(background.mean())
    if share >= 1 / 3 and mode <= float(np.percentile(finite, 1)) + 1e-6 and share < 0.99:
        facts["constant_background"] = True
        rest = finite[~background]
        mean, std = float(rest.mean()), float(rest.std())
        if abs(mean) < 0.3 and 0.7 < std < 1.4:
            facts["standardised"] = True
            reasons.append(
                f"a constant background ({share:.0%}) around values of mean {mean:.2f} and SD "
                f"{std:.2f}: already skull-stripped and z-scored"
            )
    return None, reasons, facts


def detect_sequence(image) -> SequenceGuess:
    """What an :class:`~ae4ad_core.io.Image` appears to be: the DICOM header when it has one, else the file
    name, with the pixel statistics of :func:`sequence_from_pixels` added (CT by Hounsfield units when nothing
    else said the modality)."""
    meta = image.metadata or {}
    if str(meta.get("format", image.format)).startswith("dicom") or meta.get("modality"):
        guess = sequence_from_header(meta)
        if guess.sequence == "unknown":
            by_name = sequence_from_name(image.name)
            if by_name.sequence != "unknown":
                guess = SequenceGuess(
                    by_name.sequence,
                    guess.modality if guess.modality != "unknown" else by_name.modality,
                    guess.body_part if guess.body_part != "unknown" else by_name.body_part,
                    min(by_name.confidence, 0.6),
                    guess.reasons + by_name.reasons,
                )
    else:
        guess = sequence_from_name(image.name)
    modality, reasons, facts = sequence_from_pixels(image.pixels)
    if modality == "CT" and guess.modality in ("unknown", "CT"):
        return SequenceGuess(
            "other", "CT", guess.body_part, max(guess.confidence, 0.7), guess.reasons + reasons
        )
    if reasons:
        guess = SequenceGuess(
            guess.sequence, guess.modality, guess.body_part, guess.confidence, guess.reasons + reasons
        )
        if facts["standardised"] and guess.body_part == "unknown" and guess.modality in ("MR", "unknown"):
            guess = SequenceGuess(guess.sequence, guess.modality, "brain", guess.confidence, guess.reasons)
    return guess
