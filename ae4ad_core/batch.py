"""Score a batch of uploads: files, DICOM series and ZIP archives of them, ranked by anomaly score.

:func:`score_uploads` is the one call behind the app's Batch page (and usable from scripts):

``uploads --archive.expand_uploads--> files --io.read_images--> images (a DICOM series = one volume)
--analysis.analyze_image (detect the scan, choose the model, extract and standardise the brain, score every
slice)--> per-slice rows + one row per volume (max slice score) + thumbnails``

Without a model given, each scan gets the model trained on its sequence; a scan no model fits (CT, X-ray,
another sequence) gets a "no model fits" row (no score, the reason as its verdict) instead of a meaningless
score. A model given is used for every scan, with a warning in the rows it does not fit.

A file that cannot be expanded, read or scored becomes one ``(name, reason)`` entry of
:attr:`BatchResult.errors`; it never stops the others. Patient identifiers (from DICOM headers) are read only
when asked (``include_identifiers=True``) and leave the result only when an export is asked for them too.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .analysis import analyze_image
from .archive import expand_uploads
from .errors import format_error
from .io import Image, read_images
from .registry import LoadedModel
from .scoring import check_mode

__all__ = [
    "IDENTIFIER_FIELDS",
    "THUMBNAIL_SIZE",
    "BatchResult",
    "PER_SCAN",
    "score_uploads",
    "thumbnail_pngs",
    "png_data_url",
]

IDENTIFIER_FIELDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyDate",
    "InstitutionName",
)
"""DICOM identifying fields carried into exports when identifiers are asked for (others are never shown)."""

THUMBNAIL_SIZE = 112
"""Longest side of the thumbnails, in pixels."""

_VOLUME_COLUMNS = (
    "rank",
    "volume_id",
    "name",
    "format",
    "n_slices",
    "best_slice",
    "score",
    "threshold",
    "fpr",
    "above_threshold",
    "n_slices_above",
    "score_percentile",
    "verdict",
    "warnings",
    "model",
    "mode",
    "sequence",
    "fits",
    "brain_fraction",
)


@dataclass(frozen=True)
class BatchResult:
    """Scores of a batch of uploads.

    Attributes
    ----------
    model_name, mode : str
        ``model_name`` is :data:`PER_SCAN` when each scan got the model that fits it.
    threshold, fpr : float
        The model's calibrated image threshold in ``mode`` and its false-positive rate on normal images (NaN
        when the model was chosen per scan: see each volume's ``threshold``).
    rows : list of dict
        One per scored slice: ``volume_id``, ``name``, ``slice`` (0-based) and the fields of
        :meth:`ae4ad_core.analysis.Analysis.records`.
    volumes : list of dict
        One per file or DICOM series, ranked by ``score`` (the maximum slice score, highest first):
        ``rank``, ``volume_id``, ``name``, ``format``, ``n_slices``, ``best_slice``, ``score``, ``threshold``,
        ``fpr``, ``above_threshold`` (any slice), ``n_slices_above``, ``score_percentile`` (of the best
        slice), ``verdict`` (the sentence for the best slice), ``warnings``, ``model``, ``mode``,
        ``sequence`` (detected), ``fits`` (a model trained on this kind of scan scored it) and
        ``brain_fraction`` (share of the image inside the extracted brain). A scan no model fits has no score
        (NaN), ranks last, and its verdict is the reason.
    errors : list of (str, str)
        ``(name, one-line reason)`` of every upload, file or series that could not be expanded, read or scored.
    thumbnails : dict
        ``volume_id -> (image_png, overlay_png)``: the best slice windowed for display and the anomaly map over
        it (fixed scale from normal images, cyan threshold outline), at most :data:`THUMBNAIL_SIZE` px.
    identifiers : dict
        ``volume_id -> {field: value}`` for :data:`IDENTIFIER_FIELDS`; empty unless scored with
        ``include_identifiers=True``.
    sources : dict
        ``volume_id -> [(file name, bytes), ...]``: the files each volume was read from (kept to reopen a
        volume in the Analyze page; not exported).
    """

    model_name: str
    mode: str
    threshold: float
    fpr: float
    rows: list[dict] = field(default_factory=list)
    volumes: list[dict] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    thumbnails: dict[str, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)
    identifiers: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    sources: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict, repr=False)

    @property
    def n_above(self) -> int:
        """Volumes with at least one slice above the threshold."""
        return sum(1 for v in self.volumes if v["above_threshold"])

    @property
    def n_unfit(self) -> int:
        """Volumes no model fits (not scored)."""
        return sum(1 for v in self.volumes if v["model"] is None)

    def identifier_columns(self, include_identifiers: bool = True) -> list[str]:
        """The identifier fields present in this result (raises when asked for and none were read)."""
        if not include_identifiers:
            return []
        if self.volumes and not self.identifiers:
            raise ValueError(
                "These results were scored without identifiers: score again with include_identifiers=True."
            )
        return [f for f in IDENTIFIER_FIELDS if any(f in ids for ids in self.identifiers.values())]

    def to_dataframe(
        self, level: str = "volume", *, thumbnails: bool = False, include_identifiers: bool = False
    ) -> pd.DataFrame:
        """The ranked volumes (``level="volume"``) or every slice (``level="slice"``) as a table.

        Parameters
        ----------
        level : {"volume", "slice"}
        thumbnails : bool
            Add ``image`` and ``map`` columns holding PNG data URLs (volume level; e.g. for
            ``st.column_config.ImageColumn``).
        include_identifiers : bool
            Add the identifier columns (only for results scored with identifiers).
        """
        if level not in ("volume", "slice"):
            raise ValueError(f"level must be 'volume' or 'slice', got {level!r}.")
        id_cols = self.identifier_columns(include_identifiers)
        if level == "volume":
            df = pd.DataFrame(self.volumes, columns=list(_VOLUME_COLUMNS))
            if thumbnails:
                df.insert(
                    3,
                    "image",
                    [
                        png_data_url(self.thumbnails[v][0]) if v in self.thumbnails else None
                        for v in df["volume_id"]
                    ],
                )
                df.insert(
                    4,
                    "map",
                    [
                        png_data_url(self.thumbnails[v][1]) if v in self.thumbnails else None
                        for v in df["volume_id"]
                    ],
                )
        else:
            df = pd.DataFrame(self.rows)
            if df.empty:
                df = pd.DataFrame(
                    columns=["volume_id", "name", "slice", "score", "threshold", "above_threshold"]
                )
        for k, col in enumerate(id_cols):
            df.insert(3 + k, col, [self.identifiers.get(v, {}).get(col, "") for v in df["volume_id"]])
        return df

    def ranked_table(self) -> pd.DataFrame:
        """The volumes as a page shows them: ranked, thumbnails as PNG data URLs, slices numbered from 1."""
        df = self.to_dataframe("volume", thumbnails=True)
        return pd.DataFrame(
            {
                "rank": df["rank"],
                "image": df["image"],
                "map": df["map"],
                "file / series": df["name"],
                "slices": df["n_slices"],
                "best slice": df["best_slice"] + 1,
                "score": df["score"],
                "percentile": df["score_percentile"],
                "verdict": np.where(
                    df["model"].isna(),
                    "no model fits",
                    np.where(df["above_threshold"], "above normal range", "within normal range"),
                ),
                "model": df["model"],
                "sequence": df["sequence"],
                "fits": df["fits"],
                "brain fraction": df["brain_fraction"],
                "slices above": df["n_slices_above"],
                "warnings": df["warnings"],
                "volume_id": df["volume_id"],
            }
        )

    def to_csv(self, *, include_identifiers: bool = False) -> bytes:
        """Every slice row, ranked by volume then slice, plus one row per failure (``error`` column), as UTF-8
        CSV bytes. No identifiers unless ``include_identifiers`` (and the result holds them)."""
        rank = {v["volume_id"]: v["rank"] for v in self.volumes}
        slices = self.to_dataframe("slice", include_identifiers=include_identifiers)
        slices.insert(0, "volume_rank", slices["volume_id"].map(rank).astype("Int64"))
        slices["slice"] = slices["slice"].astype("Int64")
        slices = slices.sort_values(["volume_rank", "slice"], kind="mergesort")
        slices["error"] = ""
        unfit = [v for v in self.volumes if v["model"] is None]
        failures = pd.DataFrame(
            {
                "volume_rank": pd.array(
                    [v["rank"] for v in unfit] + [None] * len(self.errors), dtype="Int64"
                ),
                "volume_id": [v["volume_id"] for v in unfit] + [None] * len(self.errors),
                "name": [v["name"] for v in unfit] + [n for n, _ in self.errors],
                "error": [f"no model fits: {v['verdict']}" for v in unfit] + [r for _, r in self.errors],
            }
        )
        table = pd.concat([slices, failures], ignore_index=True) if len(failures) else slices
        return table.to_csv(index=False).encode("utf-8")

    def analyze_request(self, volume_id: str) -> dict:
        """What the Analyze page needs to reopen a volume (``st.session_state["analyze_request"]``).

        Returns
        -------
        dict
            ``{"name": str, "data": bytes, "slice": int, "model": str, "mode": str}``. ``data`` is the file's
            content; a volume read from several files (a DICOM series) comes as an uncompressed ZIP of them
            (``name`` ends in ``.zip``), which :func:`ae4ad_core.archive.expand_uploads` and
            :func:`ae4ad_core.io.read_images` turn back into the same volume. ``slice`` is the 0-based index of
            the highest-scoring slice in that volume's slice order.
        """
        volume = next((v for v in self.volumes if v["volume_id"] == volume_id), None)
        if volume is None:
            raise KeyError(
                f"Unknown volume {volume_id!r}; known: {', '.join(v['volume_id'] for v in self.volumes)}."
            )
        files = self.sources[volume_id]
        if len(files) == 1:
            name, data = files[0]
        else:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
                for member, content in files:
                    zf.writestr(member.replace("\\", "/").lstrip("/"), content)
            name, data = f"{volume['name'].rstrip('/').replace('/', '_')}.zip", buf.getvalue()
        return {
            "name": name,
            "data": data,
            "slice": int(volume["best_slice"]),
            "model": volume["model"] or self.model_name,
            "mode": self.mode,
        }


def png_data_url(png: bytes) -> str:
    """``data:image/png;base64,...`` for a PNG."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(rgb: np.ndarray, size: int) -> bytes:
    from PIL import Image as PILImage

    pic = PILImage.fromarray(np.ascontiguousarray(rgb))
    scale = size / max(pic.size)
    if scale != 1:
        pic = pic.resize(
            (max(1, round(pic.size[0] * scale)), max(1, round(pic.size[1] * scale))),
            PILImage.Resampling.LANCZOS if scale < 1 else PILImage.Resampling.BILINEAR,
        )
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def thumbnail_pngs(
    image: Image, analysis, i: int, *, preprocessing, size: int = THUMBNAIL_SIZE
) -> tuple[bytes, bytes]:
    """``(image_png, overlay_png)`` of slice ``i`` of an analysis of ``image``, drawn as the Analyze page draws
    them (:func:`ae4ad_core.render.view_images`, automatic window, fixed map scale, threshold outline), resized
    to ``size`` px on the longest side. ``preprocessing`` is the model card's."""
    from .render import is_ct, view_images, window_for

    raw = image.pixels[analysis.slice_indices[i]]
    window = window_for(raw, "auto", default_window=image.default_window, ct=is_ct(image.metadata))
    gray, _, overlay = view_images(
        raw, analysis, i, window=window, preprocessing=preprocessing, opacity=0.6, show_outlines=True
    )
    return _png(gray, size), _png(overlay, size)


def _card_of(whole, loaded):
    """The card of the model that scored ``whole`` (the given one, or the one chosen for the scan)."""
    if loaded is not None:
        return loaded.card
    from .registry import load_shared_model

    return load_shared_model(whole.analysis.model_name).card


def _unique_names(files: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Give repeated upload names a ``" (2)"`` suffix so every name identifies one file."""
    seen: dict[str, int] = {}
    out = []
    for name, data in files:
        n = seen.get(name, 0) + 1
        seen[name] = n
        out.append((name if n == 1 else f"{name} ({n})", data))
    return out


PER_SCAN = "per scan"
""":attr:`BatchResult.model_name` when each scan got the model that fits it."""


def score_uploads(
    files: Sequence[tuple[str, bytes]],
    loaded: LoadedModel | None = None,
    *,
    mode: str = "reconstruction",
    cards: Sequence | None = None,
    include_identifiers: bool = False,
    thumbnail_size: int = THUMBNAIL_SIZE,
    progress: Callable[[float, str], None] | None = None,
) -> BatchResult:
    """Expand, read and score uploads; rank volumes by anomaly score.

    Parameters
    ----------
    files : sequence of (str, bytes)
        Uploaded ``(name, content)`` pairs; ZIP archives are expanded safely, DICOM files of one series are
        stacked into one volume.
    loaded : LoadedModel, optional
        The model for every scan; by default each scan gets the one trained on its sequence
        (:func:`ae4ad_core.model_choice.choose_model`) or a "no model fits" row.
    mode : {"reconstruction", "kl", "combined"}
        Checked once up front for a given model: a mode it cannot do raises ``UnsupportedModeError``.
    cards : sequence of cards, optional
        The models to choose from (the registry's by default).
    include_identifiers : bool
        Read the :data:`IDENTIFIER_FIELDS` of DICOM headers into :attr:`BatchResult.identifiers`.
    thumbnail_size : int
        Longest side of the thumbnails in pixels.
    progress : callable, optional
        ``progress(fraction in [0, 1], message)`` after reading and after each volume.

    Returns
    -------
    BatchResult
    """
    from .analysis import calibration_of

    card = loaded.card if loaded is not None else None
    if loaded is not None:
        check_mode(loaded.inference, mode, model_name=f"model {card.name!r}")
        cal = calibration_of(loaded)

    def tell(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(min(max(fraction, 0.0), 1.0)), message)

    tell(0.0, f"Reading {len(files)} upload(s)…")
    expanded, errors = expand_uploads(_unique_names(list(files)))
    by_name = dict(expanded)
    images, read_errors = read_images(expanded, include_identifiers=include_identifiers)
    errors = list(errors) + list(read_errors)
    tell(0.05, f"Read {len(images)} image(s); scoring…")

    rows: list[dict] = []
    volumes: list[dict] = []
    thumbnails: dict[str, tuple[bytes, bytes]] = {}
    identifiers: dict[str, dict[str, str]] = {}
    sources: dict[str, list[tuple[str, bytes]]] = {}
    for k, image in enumerate(images):
        vid = f"V{k + 1:03d}"
        try:
            whole = analyze_image(image, loaded, cards=cards, mode=mode)
            res = whole.analysis
            if res is not None:
                best = int(np.argmax(res.scores))
                thumbnails[vid] = thumbnail_pngs(
                    image, res, best, preprocessing=_card_of(whole, loaded).preprocessing, size=thumbnail_size
                )
        except Exception as exc:  # noqa: BLE001 - one volume's failure must not stop the batch
            errors.append((image.name, format_error(exc, image.name)))
            tell(0.05 + 0.95 * (k + 1) / len(images), f"Scored {k + 1} of {len(images)}")
            continue
        prep = whole.preparation or {}
        found = {
            "volume_id": vid,
            "name": image.name,
            "format": image.format,
            "n_slices": image.n_slices,
            "mode": mode,
            "sequence": whole.guess.sequence,
            "fits": whole.fits,
            "brain_fraction": prep.get("brain_fraction"),
        }
        if res is None:
            volumes.append(
                {
                    **found,
                    "best_slice": 0,
                    "score": float("nan"),
                    "threshold": float("nan"),
                    "fpr": float("nan"),
                    "above_threshold": False,
                    "n_slices_above": 0,
                    "score_percentile": float("nan"),
                    "verdict": whole.choice.reason,
                    "warnings": "",
                    "model": None,
                }
            )
        else:
            for rec in res.records():
                rows.append({"volume_id": vid, "name": image.name, **rec})
            warnings = ([whole.warning] if whole.warning else []) + list(
                dict.fromkeys(w for ws in res.warnings for w in ws)
            )
            volumes.append(
                {
                    **found,
                    "best_slice": best,
                    "score": float(res.scores[best]),
                    "threshold": res.threshold,
                    "fpr": res.fpr,
                    "above_threshold": res.volume_above_threshold,
                    "n_slices_above": int(np.sum(res.above_threshold)),
                    "score_percentile": float(res.score_percentiles[best]),
                    "verdict": res.verdict(best),
                    "warnings": "; ".join(warnings),
                    "model": res.model_name,
                }
            )
        names = image.metadata.get("files") if image.format == "dicom-series" else None
        sources[vid] = [(n, by_name[n]) for n in (names or [image.name]) if n in by_name]
        if include_identifiers:
            found = image.metadata.get("identifiers") or {}
            identifiers[vid] = {f: str(found[f]) for f in IDENTIFIER_FIELDS if found.get(f) not in (None, "")}
        tell(0.05 + 0.95 * (k + 1) / len(images), f"Scored {k + 1} of {len(images)}: {image.name}")

    volumes.sort(key=lambda v: (v["model"] is None, -v["score"] if v["model"] is not None else 0.0))
    for r, v in enumerate(volumes, start=1):
        v["rank"] = r
    tell(1.0, f"Done: {len(volumes)} volume(s), {len(errors)} failure(s).")
    return BatchResult(
        model_name=card.name if card is not None else PER_SCAN,
        mode=mode,
        threshold=cal.modes[mode].threshold if card is not None else float("nan"),
        fpr=cal.fpr if card is not None else float("nan"),
        rows=rows,
        volumes=[{c: v[c] for c in _VOLUME_COLUMNS} for v in volumes],
        errors=errors,
        thumbnails=thumbnails,
        identifiers=identifiers,
        sources=sources,
    )
