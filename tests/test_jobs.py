"""Background training jobs: a job trains and registers a model; cancel() stops one and leaves no model folder;
datasets from uploads and the guidance on them."""

from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest
from _fixtures_io import dicom_bytes, png_bytes
from browser_utils import synthetic_brains

from ae4ad_core.errors import Ae4adError, DataError
from ae4ad_core.jobs import (
    JobManager,
    TrainingJob,
    automatic_latent_dim,
    check_model_name,
    check_training_set,
    dataset_from_uploads,
    suggest_model_name,
)
from ae4ad_core.registry import list_models, load_model
from ae4ad_core.training import TrainConfig

TINY = dict(latent_dim=4, image_size=32, batch_size=8, val_every=1, augment=False, amp=False)


def normal_pngs(n: int, *, size: int = 40, seed: int = 3) -> list[tuple[str, bytes]]:
    images = (synthetic_brains(n, size=size, seed=seed) * 255).astype(np.uint8)
    return [(f"n{i:02d}.png", png_bytes(img)) for i, img in enumerate(images)]


def zipped(files: list[tuple[str, bytes]], folder: str = "normals") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files:
            zf.writestr(f"{folder}/{name}", data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def uploads_dataset():
    files = normal_pngs(24)
    return dataset_from_uploads(
        [("normals.zip", zipped(files[:12])), *files[12:], ("notes.bin", b"\x00\x01")], size=32
    )


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AE4AD_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def test_dataset_from_uploads_splits_by_file_and_keeps_calibration_possible(uploads_dataset):
    ds = uploads_dataset
    assert len(ds.train.images) + len(ds.val.images) == 24 and ds.test is None
    assert len(ds.val.images) >= 10, "the validation share was raised so the threshold can be calibrated"
    assert not set(ds.train.subjects) & set(ds.val.subjects)
    assert ds.info["errors"] and ds.info["errors"][0][0].endswith("notes.bin")
    levels = [(g.level, g.message) for g in check_training_set(ds)]
    assert all(level == "warning" for level, _ in levels)
    assert any("Only 24 normal slices" in m for _, m in levels) and any(
        "could not be read" in m for _, m in levels
    )


def test_guidance_refuses_too_few_and_flags_mixed_sizes_and_modalities():
    with pytest.raises(DataError, match="at least 8"):
        dataset_from_uploads(normal_pngs(5))
    small = dataset_from_uploads(normal_pngs(12))
    errors = [g.message for g in check_training_set(small) if g.level == "error"]
    assert any("held out for calibration" in m for m in errors)

    rng = np.random.default_rng(0)
    mixed = (
        normal_pngs(20, size=40)
        + normal_pngs(6, size=56, seed=9)
        + [
            (f"ct{i}.dcm", dicom_bytes((rng.random((40, 40)) * 100).astype(np.int16), identifiers=False))
            for i in range(4)
        ]
    )
    messages = " ".join(g.message for g in check_training_set(dataset_from_uploads(mixed)))
    assert "mixed sizes" in messages and "mixed formats" in messages


def test_job_trains_registers_and_reports_progress(uploads_dataset, isolated_home):
    job = TrainingJob(TrainConfig(epochs=1, **TINY), uploads_dataset, name="job-ae").start()
    assert job.wait(timeout=120), "the job did not finish"
    snap = job.snapshot()
    assert snap.status == "done" and snap.error == "" and snap.fraction == 1.0, snap.error
    assert snap.result_path == isolated_home / "job-ae"
    assert [h["epoch"] for h in snap.history] == [1] and snap.images_per_second > 0
    assert "val_loss" in snap.history[0] and np.isfinite(snap.history[0]["loss"])
    assert "job-ae" in {c.name for c in list_models()}
    loaded = load_model("job-ae", device="cpu")
    assert loaded.card.training_data["n_val_normal"] >= 10 and loaded.card.calibration


def test_cancel_stops_a_long_job_and_leaves_no_model(uploads_dataset, isolated_home):
    manager = JobManager()
    job = manager.start(TrainConfig(epochs=500, **TINY), uploads_dataset, name="long-job")
    deadline = time.monotonic() + 60
    while not job.history and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status == "running" and job.snapshot().phase == "training"
    with pytest.raises(Ae4adError, match="already running"):
        manager.start(TrainConfig(epochs=1, **TINY), uploads_dataset, name="second")
    job.cancel()
    assert job.wait(timeout=60)
    assert job.status == "cancelled" and job.result_path is None
    assert len(job.history) < 500
    assert not list(isolated_home.parent.rglob("*long-job*")), "no model folder, no half-written temporary"
    assert manager.list() == [job] and manager.get(job.job_id) is job


def test_manager_refuses_bad_names_and_unusable_data(uploads_dataset, isolated_home):
    manager = JobManager()
    with pytest.raises(ValueError, match="letters, digits"):
        manager.start(TrainConfig(epochs=1, **TINY), uploads_dataset, name="../escape")
    (isolated_home / "taken").mkdir(parents=True)
    with pytest.raises(ValueError, match="already exists.*'taken-2'"):
        check_model_name("taken")
    assert suggest_model_name("taken") == "taken-2" and suggest_model_name("free") == "free"
    few = dataset_from_uploads(normal_pngs(12))
    with pytest.raises(ValueError, match="held out for calibration"):
        manager.start(TrainConfig(epochs=1, **TINY), few, name="few")
    assert manager.list() == []


def test_a_failing_job_reports_one_line(uploads_dataset, isolated_home):
    bad = TrainConfig(epochs=1, **{**TINY, "image_size": 48})  # not a power of two: the model cannot be built
    job = TrainingJob(bad, uploads_dataset, name="broken").start()
    assert job.wait(timeout=60)
    assert job.status == "failed" and "power of two" in job.error and "\n" not in job.error


def test_automatic_latent_dim(tmp_path):
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"chosen_d": 8, "rows": []}))
    d, why = automatic_latent_dim(sweep)
    assert d == 8 and "sweep" in why
    d, why = automatic_latent_dim(tmp_path / "missing.json")
    assert d == 16 and "default" in why
