"""Background training jobs that outlive a page: train, calibrate and register a model in a thread.

A :class:`TrainingJob` runs :func:`ae4ad_core.training.train_and_register` in a daemon thread; the per-epoch
``on_progress`` records (epoch, loss, val_loss, images/s) are collected under a lock and read with
:meth:`TrainingJob.snapshot`, and :meth:`TrainingJob.cancel` sets a :class:`threading.Event` that training polls
every step (``should_stop``). A cancelled job leaves no model folder. :class:`JobManager` keeps the jobs of one
server (the app holds one in ``st.cache_resource``), so switching pages or reloading does not stop a job.

Training data from uploads: :func:`dataset_from_uploads` expands ZIPs, writes the files into a temporary folder
and reads it with :func:`ae4ad_core.data.load_folder` (one file or DICOM series = one subject; train and
validation split by subject), then removes the folder. :func:`check_training_set` says whether the set is
usable and what to watch out for.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .assets import assets_dir
from .errors import Ae4adError, DataError, format_error

__all__ = [
    "JOB_STATES",
    "MIN_VALIDATION_IMAGES",
    "FEW_IMAGES",
    "Guidance",
    "JobSnapshot",
    "TrainingJob",
    "JobManager",
    "automatic_latent_dim",
    "dataset_from_uploads",
    "check_training_set",
    "check_model_name",
    "suggest_model_name",
]

log = logging.getLogger(__name__)

JOB_STATES = ("running", "done", "failed", "cancelled")
MIN_VALIDATION_IMAGES = 10
"""Calibration needs at least this many held-out normal slices (:func:`ae4ad_core.calibration.calibrate`)."""
FEW_IMAGES = 30
"""Below this many slices in all, training works but the model will be weak: a warning."""
SWEEP_PATH = assets_dir() / "sweep" / "sweep.json"
DEFAULT_LATENT_DIM = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ------------------------------------------------------------------------------------------------ guidance


@dataclass(frozen=True)
class Guidance:
    """One finding about a training set: ``level`` is ``"error"`` (training refused) or ``"warning"``."""

    level: str
    message: str

    def __str__(self) -> str:
        return self.message


def check_training_set(dataset) -> list[Guidance]:
    """Whether ``dataset`` can train a calibrated model, and what to watch out for.

    Errors (training is refused): fewer than :data:`ae4ad_core.data.MINIMUM_IMAGES` slices in all, fewer than 2
    training slices, fewer than :data:`MIN_VALIDATION_IMAGES` held-out normal slices to calibrate the threshold
    on. Warnings: fewer than :data:`FEW_IMAGES` slices, the reader's warnings (mixed sizes, formats,
    modalities, intensity ranges: ``dataset.info["warnings"]``) and files that could not be read
    (``dataset.info["errors"]``).
    """
    from .data import MINIMUM_IMAGES

    out: list[Guidance] = []
    n_train = len(dataset.train.images)
    n_val = int(np.sum(np.asarray(dataset.val.labels) == 0))
    total = n_train + n_val
    if total < MINIMUM_IMAGES:
        out.append(
            Guidance(
                "error",
                f"Only {total} normal slice(s): at least {MINIMUM_IMAGES} are needed to train "
                f"(and {FEW_IMAGES} or more for a useful model). Add more normal images.",
            )
        )
    elif n_train < 2:
        out.append(
            Guidance(
                "error",
                f"Only {n_train} training slice(s) are left after holding out validation "
                "images. Add more normal images.",
            )
        )
    if n_val < MIN_VALIDATION_IMAGES:
        out.append(
            Guidance(
                "error",
                f"Only {n_val} normal slice(s) are held out for calibration; the threshold needs at least "
                f"{MIN_VALIDATION_IMAGES}. Validation is split by file (or DICOM series), so add more files.",
            )
        )
    if MINIMUM_IMAGES <= total < FEW_IMAGES:
        out.append(
            Guidance(
                "warning",
                f"Only {total} normal slices: the model will be weak and its threshold "
                f"noisy. {FEW_IMAGES} or more (from several patients) are recommended.",
            )
        )
    info = getattr(dataset, "info", None) or {}
    out += [Guidance("warning", str(w)) for w in info.get("warnings", [])]
    errors = info.get("errors", [])
    if errors:
        name, reason = errors[0]
        out.append(
            Guidance(
                "warning",
                f"{len(errors)} file(s) could not be read and were left out, e.g. "
                f"{reason if str(reason).startswith(str(name)) else f'{name}: {reason}'}",
            )
        )
    return out


def _safe_relative(name: str) -> Path | None:
    parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".", "..")]
    return Path(*parts) if parts else None


def dataset_from_uploads(
    files: Sequence[tuple[str, bytes]], *, size: int = 128, val_fraction: float = 0.2, seed: int = 0
):
    """A training :class:`~ae4ad_core.data.Dataset` from uploaded NORMAL images (files or ZIP archives).

    ZIPs are expanded safely (:func:`ae4ad_core.archive.expand_uploads`), the files are written into a temporary
    folder (keeping their folders, so DICOM series stay together) and read by
    :func:`ae4ad_core.data.load_folder`; the folder is removed afterwards. When the held-out subjects give fewer
    than :data:`MIN_VALIDATION_IMAGES` slices, the validation fraction is raised (up to one half) so the model
    can be calibrated.

    Raises
    ------
    DataError
        Fewer than 8 readable slices or fewer than 2 files/series (from ``load_folder``).
    """
    from .archive import expand_uploads
    from .data import load_folder

    expanded, archive_errors = expand_uploads(list(files))
    with tempfile.TemporaryDirectory(prefix="ae4ad-upload-") as tmp:
        root = Path(tmp) / "uploads"
        for k, (name, data) in enumerate(expanded):
            rel = _safe_relative(name) or Path(f"file-{k}")
            target = root / rel
            if target.exists():
                target = target.with_name(f"{k}-{target.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if not root.is_dir():
            reasons = "; ".join(r for _, r in archive_errors[:2])
            raise DataError(f"No files to train on{': ' + reasons if reasons else ''}.")
        dataset = load_folder(root, size=size, val_fraction=val_fraction, seed=seed)
        n_subjects = int(dataset.info.get("subjects", 0))
        if len(dataset.val.images) < MIN_VALIDATION_IMAGES and n_subjects > 2:
            per_subject = (len(dataset.train.images) + len(dataset.val.images)) / n_subjects
            wanted = int(np.ceil(MIN_VALIDATION_IMAGES / max(per_subject, 1e-9))) / n_subjects
            bigger = min(0.5, wanted + 0.25 / n_subjects)
            if bigger > val_fraction:
                dataset = load_folder(root, size=size, val_fraction=bigger, seed=seed)
    n = len(dataset.train.images) + len(dataset.val.images)
    info = dict(
        dataset.info, source="uploads", errors=list(archive_errors) + list(dataset.info.get("errors", []))
    )
    description = (
        f"{n} uploaded normal slices from {info.get('subjects', '?')} files/series "
        f"({len(dataset.train.images)} training, {len(dataset.val.images)} validation, split by file)"
    )
    return replace(dataset, info=info, description=description)


# ------------------------------------------------------------------------------------------------ names


def automatic_latent_dim(path: Path | str | None = None) -> tuple[int, str]:
    """The latent size chosen by the shipped sweep, and a sentence saying where it comes from.

    Reads ``chosen_d`` from ``assets/sweep/sweep.json`` (written by :mod:`ae4ad_core.sweep`: the smallest d whose
    normal validation error is within ``tolerance`` of the best, :func:`ae4ad_core.selection.choose_latent_dim`);
    without that file, :data:`DEFAULT_LATENT_DIM`.
    """
    from .selection import DEFAULT_TOLERANCE

    p = Path(path) if path is not None else SWEEP_PATH
    try:
        summary = json.loads(p.read_text())
        d = int(summary["chosen_d"])
        tolerance = float(summary.get("tolerance", DEFAULT_TOLERANCE))
        if d >= 1:
            return d, (
                f"d = {d}, chosen by the shipped latent-size sweep on the demo data ({p.name}): the smallest d "
                f"whose normal validation error is within {tolerance:.0%} of the best."
            )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return DEFAULT_LATENT_DIM, (
        f"d = {DEFAULT_LATENT_DIM}, the default: no latent-size sweep ships with this "
        "installation (assets/sweep/sweep.json), so nothing was chosen from data."
    )


def _taken_names(root: Path | None) -> set[str]:
    from .registry import list_models, registry_roots

    roots = registry_roots() if root is None else [*registry_roots(), Path(root)]
    names = {c.name for c in list_models(roots)}
    for r in roots:
        if Path(r).is_dir():
            names |= {p.name for p in Path(r).iterdir() if p.is_dir()}
    return names


def check_model_name(name: str, *, root: Path | str | None = None, busy: Sequence[str] = ()) -> str:
    """Return ``name`` if it can name a new model, else raise ``ValueError`` saying why and what to do."""
    if not _NAME.match(name or ""):
        raise ValueError(
            f"Model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit."
        )
    if name in busy:
        raise ValueError(f"A job is already training a model named {name!r}; pick another name.")
    if name in _taken_names(Path(root) if root is not None else None):
        raise ValueError(
            f"A model named {name!r} already exists; pick another name "
            f"(e.g. {suggest_model_name(name, root=root)!r})."
        )
    return name


def suggest_model_name(base: str, *, root: Path | str | None = None) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever is free in the registry."""
    taken = _taken_names(Path(root) if root is not None else None)
    if base not in taken:
        return base
    k = 2
    while f"{base}-{k}" in taken:
        k += 1
    return f"{base}-{k}"


# ------------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state (safe to read from any thread)."""

    job_id: str
    name: str
    status: str
    epoch: int
    epochs: int
    history: tuple[dict, ...]
    error: str
    result_path: Path | None
    started_at: float
    finished_at: float | None
    config: dict = field(default_factory=dict)
    description: str = ""

    @property
    def fraction(self) -> float:
        """Share of epochs done, in [0, 1]."""
        return 1.0 if self.status == "done" else min(1.0, self.epoch / max(self.epochs, 1))

    @property
    def images_per_second(self) -> float | None:
        return self.history[-1].get("images_per_second") if self.history else None

    @property
    def elapsed(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def phase(self) -> str:
        """What the job is doing, in words: training, calibrating, or its final status."""
        if self.status != "running":
            return self.status
        return "calibrating and registering" if self.epoch >= self.epochs else "training"


class TrainingJob:
    """Train, calibrate and register one model in a background thread.

    Parameters
    ----------
    config : TrainConfig
    dataset : Dataset
        Normal ``train`` and ``val`` splits (``test`` is evaluated when present and ``evaluate_test``).
    name : str
        Registry name of the new model.
    root : path, optional
        Registry folder (default: :func:`ae4ad_core.registry.user_models_dir`).
    device : str, optional
        Training device (default: the best available).
    evaluate_test : bool
        Evaluate on ``dataset.test`` when it has one (the demo data does).
    """

    def __init__(
        self,
        config,
        dataset,
        *,
        name: str,
        root: Path | str | None = None,
        device: str | None = None,
        evaluate_test: bool = True,
    ) -> None:
        self.job_id = uuid.uuid4().hex[:12]
        self.config = config
        self.dataset = dataset  # released when the job ends (a server keeps its finished jobs)
        self.description = str(getattr(dataset, "description", ""))
        self.name = name
        self.root = Path(root) if root is not None else None
        self.device = device
        self.evaluate_test = evaluate_test
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._history: list[dict] = []
        self._status = "running"
        self._error = ""
        self._result: Path | None = None
        self._started = time.time()
        self._finished: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"ae4ad-train-{name}", daemon=True)

    def start(self) -> TrainingJob:
        self._thread.start()
        return self

    # state -----------------------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    @property
    def error(self) -> str:
        with self._lock:
            return self._error

    @property
    def result_path(self) -> Path | None:
        with self._lock:
            return self._result

    @property
    def history(self) -> list[dict]:
        with self._lock:
            return [dict(h) for h in self._history]

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            epoch = int(self._history[-1]["epoch"]) if self._history else 0
            return JobSnapshot(
                job_id=self.job_id,
                name=self.name,
                status=self._status,
                epoch=epoch,
                epochs=self.config.epochs,
                history=tuple(dict(h) for h in self._history),
                error=self._error,
                result_path=self._result,
                started_at=self._started,
                finished_at=self._finished,
                config=self.config.to_dict(),
                description=self.description,
            )

    # control ---------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop; training stops within one step and nothing is registered."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # thread ----------------------------------------------------------------------------------------------
    def _on_progress(self, record: dict) -> None:
        with self._lock:
            self._history.append(dict(record))

    def _finish(self, status: str, *, error: str = "", result: Path | None = None) -> None:
        with self._lock:
            self._status, self._error, self._result = status, error, result
            self._finished = time.time()
        self.dataset = None

    def _run(self) -> None:
        from .training import train_and_register

        evaluate = self.evaluate_test and getattr(self.dataset, "test", None) is not None
        try:
            path = train_and_register(
                self.config,
                self.dataset,
                name=self.name,
                root=self.root,
                device=self.device,
                evaluate_test=evaluate,
                progress=False,
                on_progress=self._on_progress,
                should_stop=self._stop.is_set,
                command=f"AE4AD Studio Train page (job {self.job_id})",
            )
        except Exception as exc:  # noqa: BLE001 - the job reports it; the server must live on
            log.exception("training job %s (%s) failed", self.job_id, self.name)
            self._finish("failed", error=format_error(exc))
            return
        if path is not None and self._stop.is_set():  # cancelled while calibrating or saving
            shutil.rmtree(path, ignore_errors=True)
            path = None
        if path is None:
            self._finish("cancelled")
        else:
            self._finish("done", result=Path(path))


class JobManager:
    """The training jobs of one server (thread-safe). Keep one per process, e.g. in ``st.cache_resource``.

    Parameters
    ----------
    max_running : int
        Jobs allowed to train at the same time (training saturates a CPU; one at a time by default).
    """

    def __init__(self, *, max_running: int = 1) -> None:
        self.max_running = max_running
        self._jobs: dict[str, TrainingJob] = {}
        self._lock = threading.Lock()

    def start(
        self,
        config,
        dataset,
        *,
        name: str,
        root: Path | str | None = None,
        device: str | None = None,
        evaluate_test: bool = True,
    ) -> TrainingJob:
        """Check the name and the data, then start a :class:`TrainingJob`.

        Raises
        ------
        ValueError
            The name is invalid or taken, or :func:`check_training_set` found an error.
        Ae4adError
            ``max_running`` jobs are already training.
        """
        with self._lock:
            running = [j for j in self._jobs.values() if j.status == "running"]
            if len(running) >= self.max_running:
                raise Ae4adError(
                    f"{len(running)} training job(s) already running ({running[0].name}); wait for it "
                    "to finish or cancel it."
                )
            check_model_name(name, root=root, busy=[j.name for j in running])
            problems = [g.message for g in check_training_set(dataset) if g.level == "error"]
            if problems:
                raise ValueError(problems[0])
            job = TrainingJob(
                config, dataset, name=name, root=root, device=device, evaluate_test=evaluate_test
            )
            self._jobs[job.job_id] = job
        return job.start()

    def get(self, job_id: str) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[TrainingJob]:
        """All jobs, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: -j._started)
