"""Screen an archive: score every slice of every file under some folders, resumably, on one or many processes.

``screen(paths, model, out=Path("results.csv"))`` walks the paths recursively (sorted by relative path, hidden
files and folders skipped), decodes and preprocesses each file (:func:`ae4ad_core.io.read_image`, then
:func:`ae4ad_core.preprocess.prepare_arrays`, neither of which needs torch), scores the slices in batches of
``batch_size`` with :func:`ae4ad_core.scoring.score_in_batches` (the card's map scoring, as the Analyze page)
on the model's fused inference copy, and writes one row per slice:

``file`` (path relative to the scanned folder), ``slice``, ``score``, ``threshold``, ``above_threshold``,
``percentile`` (of the score among the model's normal validation images), ``model``, ``mode``, ``error``.

A file that cannot be read or scored gives one row with ``slice``, ``score`` and ``above_threshold`` empty and
the one-line reason in ``error``; it never stops the run. Each file is read on its own (``read_image``): the
slices of a DICOM series spread over several files are scored file by file, and the volume-level verdict is the
maximum over the rows of its files.

Output and resumption
---------------------
The output format follows the suffix of ``out``: ``.csv`` or ``.parquet``. Completed files are written every
``chunk_size`` files as a *part* file (CSV) in the hidden folder ``.<out name>.parts`` next to ``out``; each part
is written to a temporary name and renamed, so a part is either complete or absent. At the end the previous
output, every part and nothing else are merged, sorted by ``(file, slice)``, written to a temporary file and
atomically renamed onto ``out``; the parts folder is then removed. So:

* a killed run leaves the previous ``out`` untouched (or no ``out``), plus the parts of the chunks it finished;
* with ``resume=True`` (the default) files found in ``out`` *or* in a part are skipped, so the next run only
  scores what is missing (files that failed are not retried; rerun with ``resume=False`` to redo everything);
* resuming with another model or mode than the one recorded in ``out`` is refused.

Decoding processes
------------------
With ``num_workers`` > 0 a pool of that many processes decodes and preprocesses files while the main process
scores. The pool starts *before* the model is loaded: in a fresh process (``ae4ad screen``) torch is not yet
imported at that point, so the workers fork cheaply and decode while the main process spends a second or two
importing torch and loading the weights. The default (:func:`default_num_workers`) is one worker per CPU but the
one that scores; once the workers have decoded every file, scoring uses their CPUs too.

Several processes
-----------------
Under ``torchrun --nproc_per_node=N -m ae4ad_core.screening PATH --model M --out results.csv`` the process group
is initialised (NCCL on CUDA, gloo on CPU) and rank ``r`` of ``N`` scores ``files[r::N]`` of the full sorted list
(skipping its files that are already done), so the shard of a file never depends on what an earlier run did.
Every rank writes its own parts; after a barrier rank 0 merges. One process is the same code with ``N = 1``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .distributed import distributed_info, init_distributed
from .errors import Ae4adError, ModelCardError, format_error
from .io import read_image
from .preprocess import PreprocessConfig, prepare_arrays
from .registry import LoadedModel, find_model_dir, load_card, load_model

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = [
    "COLUMNS",
    "ScreenSummary",
    "default_num_workers",
    "find_files",
    "screen",
    "read_results",
    "build_parser",
    "main",
]

COLUMNS = ("file", "slice", "score", "threshold", "above_threshold", "percentile", "model", "mode", "error")
"""Columns of a screening output, in order."""

_WRITERS = (".csv", ".parquet")


@dataclass(frozen=True)
class ScreenSummary:
    """What a :func:`screen` run did.

    Attributes
    ----------
    out : Path
        The merged output file.
    model, mode : str
    n_files : int
        Files found under the paths.
    n_skipped : int
        Files already in the output (or in parts of an interrupted run) and not scored again.
    n_processed : int
        Files read and scored by this run (all ranks), failures included.
    n_rows, n_errors, n_above : int
        Totals of the whole output: slice rows, files that failed, slices above the threshold.
    seconds : float
        Wall time of this run.
    files_per_second : float
        ``n_processed / seconds``.
    decode_seconds, preprocess_seconds, score_seconds : float
        Time spent reading files, preprocessing slices and scoring batches, summed over ranks and DataLoader
        workers (with workers these overlap with the wall time).
    world_size : int
    """

    out: Path
    model: str
    mode: str
    n_files: int
    n_skipped: int
    n_processed: int
    n_rows: int
    n_errors: int
    n_above: int
    seconds: float
    files_per_second: float
    decode_seconds: float
    preprocess_seconds: float
    score_seconds: float
    world_size: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


# ------------------------------------------------------------------------------------------------ files


def find_files(
    paths: str | os.PathLike | Sequence[str | os.PathLike], *, exclude: Iterable[Path] = ()
) -> list[tuple[Path, str]]:
    """Every file under ``paths``, as ``(path, key)`` sorted by ``key``.

    ``key`` is the POSIX path relative to the common folder of the inputs (for a single folder: relative to it;
    for a single file: its name). Hidden files and folders (names starting with ``.``) and the paths in
    ``exclude`` (and anything below them) are skipped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    roots = [Path(p).resolve() for p in paths]
    if not roots:
        raise ValueError("No path to screen was given.")
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder.")
    excluded = [Path(e).resolve() for e in exclude]
    base = Path(os.path.commonpath([r if r.is_dir() else r.parent for r in roots]))

    def skip(p: Path) -> bool:
        return any(p == e or e in p.parents for e in excluded)

    found: dict[str, Path] = {}
    for root in roots:
        if root.is_file():
            if not skip(root):
                found[root.relative_to(base).as_posix()] = root
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fname in filenames:
                p = Path(dirpath) / fname
                if fname.startswith(".") or skip(p) or not p.is_file():
                    continue
                found[p.relative_to(base).as_posix()] = p
    return [(found[k], k) for k in sorted(found)]


@dataclass(frozen=True)
class _Item:
    """One decoded file. ``x`` is ``(N, 1, S, S)`` float32 as a NumPy array: from a worker it is pickled as
    bytes, whereas a tensor would be passed through a shared-memory file descriptor (about 3 ms per item)."""

    key: str
    x: np.ndarray | None
    error: str
    decode_seconds: float
    preprocess_seconds: float


class _FileSlices:
    """Decodes and preprocesses one file per item; a failure becomes an item with ``error`` set. For a model
    trained on real patients (``card`` given), each scan first goes through the Analyze page's whole-head step
    (:func:`ae4ad_core.standardise.prepare_whole_head`: brain extraction, standardisation inside the brain), so
    an archive is scored exactly as a single upload is; a scan that is not brain MRI (CT, an X-ray, another body
    part: :func:`ae4ad_core.sequence.detect_sequence`) is not scored, and its row says why."""

    def __init__(self, files: list[tuple[Path, str]], preprocessing: PreprocessConfig, card=None) -> None:
        self.files = files
        self.preprocessing = preprocessing
        self.card = card

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> _Item:
        path, key = self.files[index]
        t0 = time.perf_counter()
        try:
            # rows need the pixels only, unless the header must say whether a patient model fits the scan
            image = read_image(path, name=key, metadata="minimal" if self.card is None else "full")
        except Exception as exc:  # noqa: BLE001 - a bad file is a row, never the end of the run
            return _Item(key, None, format_error(exc), time.perf_counter() - t0, 0.0)
        t1 = time.perf_counter()
        try:
            pixels = image.pixels
            if self.card is not None:
                from .model_choice import override_warning
                from .sequence import detect_sequence
                from .standardise import prepare_whole_head

                guess = detect_sequence(image)
                if not guess.is_brain_mr:  # CT, an X-ray, a knee: a brain model's score would mean nothing
                    return _Item(key, None, f"{key}: not scored: {override_warning(guess, self.card)}", t1 - t0,
                                 time.perf_counter() - t1)
                pixels = prepare_whole_head(image, self.card, guess=guess)[0]
            x, _ = prepare_arrays(pixels, self.preprocessing)
        except Exception as exc:  # noqa: BLE001
            return _Item(
                key,
                None,
                f"{key}: preprocessing failed ({format_error(exc)})",
                t1 - t0,
                time.perf_counter() - t1,
            )
        return _Item(key, x, "", t1 - t0, time.perf_counter() - t1)


_WORKER_FILES: _FileSlices | None = None  # the dataset of a decoding worker (set by its initializer)


def keep_freed_memory() -> bool:
    """Make this process's ``malloc`` keep freed blocks of up to 64 MB for reuse (glibc only; ``False`` elsewhere).

    By default glibc serves a block of 128 kB or more with a fresh ``mmap`` and unmaps it when freed, until a
    freed block raises that threshold. A process that decodes slice after slice (a 512 x 512 slice is 1 MB as
    float32) then takes a page fault for every 4 kB of every new buffer: measured on a 2-CPU virtual machine,
    12 ms per CT file to decode and preprocess instead of 6.5 ms. Screening allocates buffers of the same few
    sizes over and over, so the heap keeps them (and returns memory above 128 MB of free space).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 64 << 20)) and bool(mallopt(m_trim_threshold, 128 << 20))


def _worker_init(dataset: _FileSlices) -> None:
    """A decoding worker: freed buffers kept for the next file (:func:`keep_freed_memory`), one BLAS thread
    (the resize is a small matrix product; the CPUs are shared out as processes), and the dataset to decode
    from."""
    global _WORKER_FILES
    _WORKER_FILES = dataset
    keep_freed_memory()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _worker_items(start: int, stop: int) -> list[_Item]:
    return [_WORKER_FILES[index] for index in range(start, stop)]


class _Decoded:
    """The decoded items of ``dataset`` in order: from a pool of ``num_workers`` processes, started at
    construction (so the work begins before anything else the caller does next), or, with no worker, decoded
    in this process as they are asked for."""

    def __init__(self, dataset: _FileSlices, num_workers: int) -> None:
        self.dataset = dataset
        self.pool = None
        self.chunks: list = []  # multiprocessing AsyncResults of consecutive runs of items, in order
        self.n_ready = 0  # the leading chunks known to be decoded
        if num_workers > 0 and len(dataset):
            self.pool = multiprocessing.get_context().Pool(num_workers, initializer=_worker_init,
                                                           initargs=(dataset,))
            size = max(1, min(8, len(dataset) // (4 * num_workers)))
            self.chunks = [self.pool.apply_async(_worker_items, (start, min(start + size, len(dataset))))
                           for start in range(0, len(dataset), size)]

    def __iter__(self) -> Iterator[_Item]:
        if self.pool is None:
            return (self.dataset[i] for i in range(len(self.dataset)))
        return (item for chunk in self.chunks for item in chunk.get())

    def decoding_done(self) -> bool:
        """Whether the workers have decoded every item (no worker: ``True``, this process decodes on demand).
        Amortised constant time: the chunks found ready are not asked again."""
        while self.n_ready < len(self.chunks) and self.chunks[self.n_ready].ready():
            self.n_ready += 1
        return self.n_ready == len(self.chunks)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


class _NoBar:
    """Stands for the tqdm bar when there is none (tqdm is then not even imported)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _needs_whole_head_step(card) -> bool:
    """True for a model trained on real patients (their scans are extracted and standardised first)."""
    from .model_summary import is_patient_model

    return is_patient_model(card)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_workers(n_files: int, *, world_size: int = 1) -> int:
    """Decoding workers that fit the machine: one per CPU this process may use (its share when ``world_size``
    processes run on the node) less the one that scores, at most 8, at most one per 16 files, and none for
    fewer than 16 files or a single CPU. With two CPUs that is one worker, which decodes while the main
    process imports torch and loads the model, then while it scores.
    """
    cpus = max(1, _available_cpus() // max(1, world_size))
    return max(0, min(cpus - 1, 8, n_files // 16))


# ------------------------------------------------------------------------------------------------ tables


# Rows are dicts of plain Python values: ``slice`` int or None; ``score``, ``threshold``, ``percentile`` float or
# None; ``above_threshold`` bool or None; the text columns str. CSV parts and outputs are read and written with the
# csv module, byte for byte as pandas writes the normalised frame; pandas is imported for Parquet only (and by
# :func:`read_results`, which returns a DataFrame).

_FLOAT_COLUMNS = ("score", "threshold", "percentile")
_TEXT_COLUMNS = ("model", "mode", "error")


def _number(value) -> float | None:
    """A float, or None for an empty cell, NaN or a missing value (None, pandas.NA)."""
    if value is None or isinstance(value, str) and value.strip() == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):  # pandas.NA, or text that is not a number
        return None
    return None if math.isnan(number) else number


def _row(raw: dict) -> dict:
    """One row with the column types above, from the scorer, a CSV record or a Parquet record."""
    position = _number(raw.get("slice"))
    above = raw.get("above_threshold")
    if isinstance(above, str):
        above = None if above == "" else above.lower() in ("true", "1")
    elif above is None or (isinstance(above, float) and math.isnan(above)) or str(above) == "<NA>":
        above = None
    else:
        above = bool(above)
    row = {
        "file": str(raw.get("file")),
        "slice": None if position is None else int(position),
        "above_threshold": above,
    }
    for column in _FLOAT_COLUMNS:
        row[column] = _number(raw.get(column))
    for column in _TEXT_COLUMNS:
        value = raw.get(column)
        row[column] = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return {column: row[column] for column in COLUMNS}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([_cell(row[column]) for column in COLUMNS] for row in rows)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [_row(record) for record in csv.DictReader(handle)]


def _frame(rows: list[dict]) -> pd.DataFrame:
    import pandas as pd

    return _normalise(pd.DataFrame(rows, columns=list(COLUMNS)))


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in order with stable dtypes (so CSV and Parquet round trips compare equal)."""
    import pandas as pd

    df = df.reindex(columns=list(COLUMNS))
    out = pd.DataFrame(
        {
            "file": df["file"].astype(str),
            "slice": pd.to_numeric(df["slice"], errors="coerce").astype("Int64"),
            "score": pd.to_numeric(df["score"], errors="coerce").astype("float64"),
            "threshold": pd.to_numeric(df["threshold"], errors="coerce").astype("float64"),
            "above_threshold": df["above_threshold"]
            .map(
                lambda v: (
                    pd.NA
                    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
                    else str(v).lower() in ("true", "1")
                )
            )
            .astype("boolean"),
            "percentile": pd.to_numeric(df["percentile"], errors="coerce").astype("float64"),
            "model": df["model"].fillna("").astype(str),
            "mode": df["mode"].fillna("").astype(str),
            "error": df["error"].fillna("").astype(str),
        }
    )
    return out.reset_index(drop=True)


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a screening output (CSV or Parquet, by suffix) with the dtypes :func:`screen` writes."""
    import pandas as pd

    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(
            path,
            dtype={"file": str, "model": str, "mode": str, "error": str},
            keep_default_na=False,
            na_values={
                "slice": [""],
                "score": [""],
                "percentile": [""],
                "threshold": [""],
                "above_threshold": [""],
            },
        )
    return _normalise(df)


def _read_rows(path: Path) -> list[dict]:
    """The rows of a screening output or part (CSV or Parquet, by suffix)."""
    if _suffix(path) == ".parquet":
        import pandas as pd

        return [_row(record) for record in pd.read_parquet(path).to_dict("records")]
    return _read_csv(path)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _WRITERS:
        raise ValueError(f"{path.name}: the output must end in .csv or .parquet.")
    return suffix


def _write_atomic(rows: list[dict], path: Path) -> None:
    """Write ``rows`` next to ``path`` under a temporary name, then rename it onto ``path``."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if _suffix(path) == ".parquet":
            _frame(rows).to_parquet(tmp, index=False)
        else:
            _write_csv(rows, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _parts_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.parts"


def _read_previous(out: Path) -> list[dict]:
    rows = _read_rows(out) if out.is_file() else []
    return rows + _read_parts_only(_parts_dir(out))


def _read_parts_only(parts: Path) -> list[dict]:
    return [row for p in sorted(parts.glob("*.csv")) for row in _read_csv(p)] if parts.is_dir() else []


def _merge(rows: list[dict]) -> list[dict]:
    """One row per ``(file, slice)`` (the last one wins), sorted by file then slice (a file's error row first)."""
    unique = {(row["file"], row["slice"]): row for row in rows}
    return sorted(
        unique.values(),
        key=lambda row: (row["file"], row["slice"] is not None, row["slice"] if row["slice"] is not None else 0),
    )


def _check_same_run(previous: list[dict], model: str, mode: str, out: Path) -> None:
    for column, value in (("model", model), ("mode", mode)):
        seen = {row[column] for row in previous if row[column] != ""}
        if seen - {value}:
            raise Ae4adError(
                f"{out.name} holds results of {column} {sorted(seen)[0]!r}, not {value!r}: pass another --out, "
                "or resume=False (--no-resume) to start again."
            )


# ------------------------------------------------------------------------------------------------ distributed


def _barrier(world: int) -> None:
    if world > 1:
        import torch

        torch.distributed.barrier()


def _all_sum(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    import torch

    dev = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.distributed.get_backend() == "nccl"
        else torch.device("cpu")
    )
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    torch.distributed.all_reduce(t)
    return t.cpu().tolist()


# ------------------------------------------------------------------------------------------------ screening


class _Scorer:
    """Accumulates preprocessed slices of several files and scores them in fixed-size batches."""

    def __init__(self, loaded: LoadedModel, mode: str, batch_size: int) -> None:
        from .analysis import calibration_of

        cal = calibration_of(loaded)
        if mode not in cal.modes:
            raise ModelCardError(f"{loaded.card.name}: mode {mode!r} was not calibrated.")
        self.loaded, self.mode, self.batch_size = loaded, mode, batch_size
        self.kl_gradient_scale = cal.kl_gradient_scale
        self.calibration = cal.modes[mode]
        self.queue: list[tuple[str, int, torch.Tensor]] = []  # (key, slice, (1, S, S))
        self.queued = 0
        self.rows: dict[str, list[dict]] = {}
        self.remaining: dict[str, int] = {}
        self.seconds = 0.0

    def add(self, key: str, x: torch.Tensor) -> None:
        self.remaining[key] = len(x)
        self.rows[key] = []
        for i in range(len(x)):
            self.queue.append((key, i, x[i]))
        self.queued += len(x)

    def ready(self, *, final: bool = False) -> list[dict]:
        """Score full batches (and the rest when ``final``); return the rows of files now complete."""
        done: list[dict] = []
        while self.queue and (final or len(self.queue) >= self.batch_size):
            batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
            done += self._score(batch)
        return done

    def _score(self, batch: list[tuple[str, int, torch.Tensor]]) -> list[dict]:
        import torch

        from .scoring import score_in_batches

        t0 = time.perf_counter()
        x = torch.stack([t for _, _, t in batch]).to(self.loaded.device)
        res = score_in_batches(self.loaded.inference, x, mode=self.mode, kl_gradient_scale=self.kl_gradient_scale,
                               scoring=self.loaded.card.map_scoring, batch_size=len(x))
        scores = res.scores.float().cpu().numpy().astype(np.float64)
        self.seconds += time.perf_counter() - t0
        percentiles = self.calibration.percentile(scores)
        threshold = self.calibration.threshold
        complete: list[dict] = []
        for (key, index, _), score, pct in zip(batch, scores, percentiles, strict=True):
            self.rows[key].append(
                {
                    "file": key,
                    "slice": index,
                    "score": float(score),
                    "threshold": threshold,
                    "above_threshold": bool(score > threshold),
                    "percentile": float(pct),
                    "model": self.loaded.card.name,
                    "mode": self.mode,
                    "error": "",
                }
            )
            self.remaining[key] -= 1
            if self.remaining[key] == 0:
                complete += self.rows.pop(key)
                del self.remaining[key]
        return complete


def _error_row(key: str, error: str, model: str, mode: str) -> dict:
    return {
        "file": key,
        "slice": None,
        "score": None,
        "threshold": None,
        "above_threshold": None,
        "percentile": None,
        "model": model,
        "mode": mode,
        "error": error,
    }


def _progress_bar(show: bool, total: int, desc: str):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file")


def _score_items(
    decoded: _Decoded,
    loaded: LoadedModel,
    mode: str,
    *,
    rank: int,
    world: int,
    parts: Path,
    batch_size: int,
    chunk_size: int,
    num_workers: int,
    bar,
) -> tuple[float, float, float]:
    """Score the decoded items, writing the rows of completed files as part files every ``chunk_size`` files;
    returns the decoding, preprocessing and scoring seconds."""
    import torch

    from .scoring import check_mode

    name = loaded.card.name
    check_mode(loaded.inference, mode, model_name=f"model {name!r}")
    scorer = _Scorer(loaded, mode, batch_size)
    token = uuid.uuid4().hex[:8]
    seq = 0
    pending: list[dict] = []
    pending_files = 0

    def flush() -> None:
        nonlocal seq, pending, pending_files
        if not pending:
            return
        parts.mkdir(parents=True, exist_ok=True)
        _write_atomic([_row(row) for row in pending], parts / f"r{rank:03d}-{token}-{seq:06d}.csv")
        seq += 1
        pending, pending_files = [], 0

    def collect(rows: list[dict]) -> None:
        nonlocal pending_files
        pending.extend(rows)
        pending_files += len({r["file"] for r in rows})
        if pending_files >= chunk_size:
            flush()

    decode_s = prep_s = 0.0
    # The scoring process gets the CPUs the decoding workers leave (decoding in this process is NumPy), and
    # theirs too once they have decoded everything (a backlog of decoded slices is then scored on every CPU).
    threads = torch.get_num_threads()
    cpus = max(1, _available_cpus() // max(1, world))
    torch.set_num_threads(max(1, min(threads, cpus - num_workers)))
    widened = num_workers == 0
    try:
        for item in decoded:
            if not widened and decoded.decoding_done():
                torch.set_num_threads(max(1, min(threads, cpus)))
                widened = True
            decode_s += item.decode_seconds
            prep_s += item.preprocess_seconds
            if item.error:
                collect([_error_row(item.key, item.error, name, mode)])
            else:
                scorer.add(item.key, torch.from_numpy(item.x))
                collect(scorer.ready())
            bar.update(1)
        collect(scorer.ready(final=True))
    finally:
        torch.set_num_threads(threads)
    flush()
    bar.close()
    return decode_s, prep_s, scorer.seconds


def screen(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    loaded_or_name: LoadedModel | str | os.PathLike,
    *,
    out: str | os.PathLike,
    mode: str = "reconstruction",
    batch_size: int = 64,
    num_workers: int | None = None,
    resume: bool = True,
    chunk_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ScreenSummary:
    """Score every slice of every file under ``paths`` and write the rows to ``out`` (see the module notes).

    Parameters
    ----------
    paths : path or sequence of paths
        Folders (searched recursively) and/or files.
    loaded_or_name : LoadedModel, registry name or model folder
    out : path
        ``.csv`` or ``.parquet`` output; replaced atomically at the end.
    mode : {"reconstruction", "kl", "combined"}
    batch_size : int
        Slices per scoring batch.
    num_workers : int, optional
        DataLoader worker processes decoding and preprocessing files (0: in the main process); by default
        :func:`default_num_workers` (fits the CPUs and the number of files).
    resume : bool
        Skip files already in ``out`` or in the parts of an interrupted run; ``False`` starts from scratch.
    chunk_size : int
        Completed files per part file (the work a killed run can lose is at most one chunk per rank).
    device : str or torch.device, optional
        Where to score when a name is given (default: the best available).
    progress : bool
        Show a tqdm bar (rank 0).

    Returns
    -------
    ScreenSummary
        On every rank, after the output is merged.
    """
    t_start = time.perf_counter()
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}.")
    out = Path(out).resolve()
    _suffix(out)
    rank, world = distributed_info()
    if isinstance(loaded_or_name, LoadedModel):
        loaded, card = loaded_or_name, loaded_or_name.card
    else:  # the card alone (no torch): enough to start decoding before the weights are loaded
        loaded, card = None, load_card(find_model_dir(loaded_or_name))
    name = card.name
    parts = _parts_dir(out)

    files = find_files(paths, exclude=[out, parts])
    if not resume and rank == 0:
        shutil.rmtree(parts, ignore_errors=True)
    _barrier(world)
    previous = _read_previous(out) if resume else []
    _check_same_run(previous, name, mode, out)
    done = {row["file"] for row in previous}
    mine = [f for f in files[rank::world] if f[1] not in done]
    n_skipped = sum(1 for _, key in files if key in done)

    if num_workers is None:
        num_workers = default_num_workers(len(mine), world_size=world)
    decoded = _Decoded(
        _FileSlices(mine, card.preprocessing, card if _needs_whole_head_step(card) else None), num_workers
    )
    try:
        if loaded is None:
            loaded = load_model(loaded_or_name, device=device)
        decode_s, prep_s, score_s = _score_items(
            decoded, loaded, mode, rank=rank, world=world, parts=parts, batch_size=batch_size,
            chunk_size=chunk_size, num_workers=num_workers, bar=_progress_bar(progress and rank == 0, len(mine),
                                                                             f"screen {name} ({mode})"),
        )
    finally:
        decoded.close()

    n_processed, decode_s, prep_s, score_s = _all_sum([len(mine), decode_s, prep_s, score_s], world)
    _barrier(world)
    if rank == 0:
        final = _merge(_read_previous(out) if resume else _read_parts_only(parts))
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(final, out)
        shutil.rmtree(parts, ignore_errors=True)
    _barrier(world)
    if rank != 0:
        final = _read_rows(out)
    seconds = time.perf_counter() - t_start
    return ScreenSummary(
        out=out,
        model=name,
        mode=mode,
        n_files=len(files),
        n_skipped=n_skipped,
        n_processed=int(n_processed),
        n_rows=sum(row["slice"] is not None for row in final),
        n_errors=sum(row["error"] != "" for row in final),
        n_above=sum(row["above_threshold"] is True for row in final),
        seconds=seconds,
        files_per_second=n_processed / max(seconds, 1e-9),
        decode_seconds=decode_s,
        preprocess_seconds=prep_s,
        score_seconds=score_s,
        world_size=world,
    )


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``ae4ad screen`` and ``python -m ae4ad_core.screening``."""
    p = argparse.ArgumentParser(
        prog="ae4ad screen",
        description="Score every slice of every file under folders; resumable; shards across torchrun ranks.",
    )
    p.add_argument("paths", nargs="+", help="folders (searched recursively) or files")
    p.add_argument("--model", required=True, help="registry name or model folder")
    p.add_argument("--out", required=True, help="output table: .csv or .parquet")
    p.add_argument("--mode", default="reconstruction", choices=["reconstruction", "kl", "combined"])
    p.add_argument("--batch-size", type=int, default=64, help="slices per scoring batch")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader processes decoding files (default: one per spare CPU, at most 8)")
    p.add_argument("--chunk-size", type=int, default=256, help="files per resumable part")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="score everything again")
    p.add_argument("--device", default=None, help="cuda, cpu, mps (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


COMMAND_SWITCH_INTERVAL_S = 0.0005
"""How often the command's threads may take turns (Python's default is every 5 ms); see :func:`main`."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; under ``torchrun`` (``WORLD_SIZE`` > 1) it initialises the process group first.

    The command lets its threads take turns every 0.5 ms instead of every 5 ms. The decoding pool's threads in
    this process hand out the work and take every decoded slice off a pipe that holds only about four 64 x 64
    slices; each step needs the interpreter lock, which the main thread holds while it imports torch and loads
    the model. With the 5 ms default the worker stalled on the full pipe: on 300 CT files
    (``benchmarks/screen_throughput.py``) its last file came 40-70 ms later, after the model was ready. (A
    library caller's interpreter settings are left alone: :func:`screen` does not change them.)

    Prints the :class:`ScreenSummary` as JSON (rank 0). Errors caused by the input are printed as one line,
    exit status 2.
    """
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # this process decodes too (and its forked workers inherit the setting)
    sys.setswitchinterval(min(sys.getswitchinterval(), COMMAND_SWITCH_INTERVAL_S))
    distributed, device = init_distributed(args.device)  # imports torch only under torchrun
    rank = distributed_info()[0]
    try:
        summary = screen(
            args.paths,
            args.model,
            out=args.out,
            mode=args.mode,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            resume=args.resume,
            chunk_size=args.chunk_size,
            device=device,
            progress=not args.quiet,
        )
    except (Ae4adError, FileNotFoundError, ValueError) as exc:
        print(f"error: {format_error(exc)}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            import torch

            torch.distributed.destroy_process_group()
    if rank == 0:
        print(json.dumps(summary.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
