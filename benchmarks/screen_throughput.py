"""End-to-end archive screening throughput on 512 x 512 CT DICOM slices: files per second and where the time goes.

Writes ``--files`` synthetic CT slices (512 x 512 int16, Rescale Slope 1 / Intercept -1024, Explicit VR Little
Endian, a body-like ellipse with organs and noise) into a temporary folder, then runs
:func:`ae4ad_core.screening.screen` on them (decode -> preprocess -> score -> CSV) for each ``--num-workers``
value, and prints one JSON object: files/s, and the shares of decoding (pydicom + Modality LUT), preprocessing
(intensity scaling + resize to the model size) and scoring (batched forward pass) in the summed stage times.

The end-to-end figure (``cli``): ``ae4ad screen ARCHIVE --model M --out X`` with default settings, as a fresh
process (start-up and imports included), against a same-run reference: merely reading every file with
``pydicom.dcmread(path).pixel_array``, also as a fresh Python process (``ratio``), and as a loop inside this
process (``ratio_vs_read_loop``). Runs are interleaved, best of ``--repeats`` each, page cache warm for all,
``ae4ad_core`` byte-compiled first like the packages of the references (:func:`byte_compile_package`).

``torch_import_process_seconds`` times a fresh process that only imports torch, as ``ae4ad`` does (no search
for device plugins), same run, interleaved too, exit included. ``ratio_serial_torch_import`` = (that + the
pydicom process) / the pydicom process is what a CLI that imported torch and then read like pydicom would
reach; ``ae4ad screen`` goes below it because its decoding workers start before torch is imported and read
while the main process imports it.

The model is ``--model`` (registry name or folder), else the app's default model from the registry; without
any model, a 1-epoch AE (d = 16, 64 px) is trained on synthetic slices first (its weights do not matter for
speed: the architecture does).

    python benchmarks/screen_throughput.py [--files 300] [--num-workers 0,2] [--batch-size 64] [--device cpu]
                                           [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ae4ad_core.screening import screen  # noqa: E402


def ct_slice(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A CT-like slice in stored values (HU + 1024): air, a body ellipse, a few organs, bone ring, noise."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    hu = np.full((size, size), -1000.0)
    a, b = rng.uniform(0.75, 0.9), rng.uniform(0.55, 0.7)
    body = (xx / a) ** 2 + (yy / b) ** 2 < 1
    hu[body] = 40.0
    hu[body & ((xx / a) ** 2 + (yy / b) ** 2 > 0.85)] = 700.0
    for _ in range(4):
        cx, cy, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.2)
        hu[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(-100, 200)
    hu += rng.normal(0, 12, hu.shape)
    return np.clip(hu + 1024, 0, 4095).astype(np.int16)


def write_ct_dicom(path: Path, pixels: np.ndarray, index: int, series_uid: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "CT", series_uid, index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def byte_compile_package() -> bool:
    """Byte-compile ``ae4ad_core`` (``__pycache__``), as ``pip install`` does and as Python does on a package's first
    import; ``True`` if every module compiled.

    The reference processes import pydicom and torch from byte-compiled files. Without this, a machine that sets
    ``PYTHONDONTWRITEBYTECODE`` (this project's development sandbox does) makes every fresh ``ae4ad`` process
    compile the project's own modules from source again (30-40 ms of the run), which no installed copy pays."""
    import compileall

    return bool(compileall.compile_dir(str(REPO / "ae4ad_core"), quiet=1))


def make_archive(folder: Path, n: int, seed: int = 0) -> float:
    """Write ``n`` slices (in 4 series folders); returns the seconds it took."""
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    series = [generate_uid() for _ in range(4)]
    for i in range(n):
        sub = folder / f"series{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        write_ct_dicom(sub / f"IM{i:05d}", ct_slice(rng), i // 4, series[i % 4])
    return time.perf_counter() - t0


def pydicom_read_seconds(folder: Path) -> tuple[float, int]:
    """Seconds to read every file under ``folder`` with ``pydicom.dcmread(path).pixel_array``, and the count."""
    import pydicom

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    for path in files:
        pydicom.dcmread(path).pixel_array  # noqa: B018 - decoding is the point
    return time.perf_counter() - t0, len(files)


_READ_SCRIPT = """
import sys, time
t0 = time.perf_counter()
from pathlib import Path
import pydicom
for path in sorted(p for p in Path(sys.argv[1]).rglob("*") if p.is_file()):
    pydicom.dcmread(path).pixel_array
print(time.perf_counter() - t0)
"""


def pydicom_process_seconds(folder: Path) -> float:
    """Wall time of a fresh Python process that imports pydicom and reads every file under ``folder`` with
    ``pydicom.dcmread(path).pixel_array`` (the reference with process start included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _READ_SCRIPT, str(folder)], check=True, capture_output=True)
    return time.perf_counter() - t0


_TORCH_IMPORT_SCRIPT = "from ae4ad_core.device import skip_device_plugins; skip_device_plugins(); import torch"


def torch_import_process_seconds() -> float:
    """Wall time of a fresh Python process that only imports torch as ``ae4ad`` does (without the search for
    device plugins, :func:`ae4ad_core.device.skip_device_plugins`): the part of ``ae4ad screen``'s start-up no
    change to this project can remove (scoring needs torch)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_DEVICE_BACKEND_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _TORCH_IMPORT_SCRIPT], check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def cli_screen_seconds(folder: Path, model: str, out: Path) -> tuple[float, dict]:
    """Wall time of ``ae4ad screen FOLDER --model MODEL --out OUT --quiet`` in a fresh process (defaults
    otherwise), and the summary it prints."""
    cmd = [sys.executable, "-m", "ae4ad_core.cli", "screen", str(folder), "--model", model, "--out", str(out),
           "--no-resume", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"ae4ad screen failed: {run.stderr[-2000:]}")
    return seconds, json.loads(run.stdout)


def pick_model(name: str | None, scratch: Path) -> str:
    from ae4ad_core.model_summary import default_model_name
    from ae4ad_core.registry import list_models

    if name:
        return name
    default = default_model_name(list_models())
    if default:
        return default
    from types import SimpleNamespace

    from ae4ad_core.training import TrainConfig, train_and_register

    rng = np.random.default_rng(1)
    images = np.stack([ct_slice(rng, 128).astype(np.float32) - 1024 for _ in range(48)])
    split = SimpleNamespace(labels=np.zeros(24, int), subjects=np.array(["s"] * 24))
    data = SimpleNamespace(
        train=SimpleNamespace(images=images[:24], **vars(split)),
        val=SimpleNamespace(images=images[24:], **vars(split)),
        test=None,
        description="synthetic CT (benchmark)",
    )
    path = train_and_register(
        TrainConfig(latent_dim=16, image_size=64, epochs=1),
        data,
        name="bench-ae-d16",
        root=scratch / "models",
        progress=False,
        evaluate_test=False,
    )
    return str(path)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--num-workers", default="0,auto",
                   help="comma-separated decoding worker counts to try in-process ('auto': the default for this machine)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="CLI runs and reference reads (best of each is kept)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ae4ad-bench-") as tmp:
        tmp = Path(tmp)
        write_seconds = make_archive(tmp / "archive", args.files)
        compiled = byte_compile_package()
        model = pick_model(args.model, tmp)
        from ae4ad_core.registry import load_model

        loaded = load_model(model, device=args.device)
        reads, read_processes, clis, torch_imports = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so all see the same machine load
            reads.append(pydicom_read_seconds(tmp / "archive")[0])
            read_processes.append(pydicom_process_seconds(tmp / "archive"))
            torch_imports.append(torch_import_process_seconds())
            seconds, cli_summary = cli_screen_seconds(tmp / "archive", model, tmp / "cli.csv")
            clis.append(seconds)
        screen(
            tmp / "archive" / "series0", loaded, out=tmp / "warmup.csv", progress=False
        )  # first-call costs
        runs = []
        from ae4ad_core.screening import default_num_workers

        counts = [default_num_workers(args.files) if w == "auto" else int(w) for w in args.num_workers.split(",")]
        for workers in dict.fromkeys(counts):
            s = screen(
                tmp / "archive",
                loaded,
                out=tmp / f"out-{workers}.csv",
                batch_size=args.batch_size,
                num_workers=workers,
                resume=False,
                progress=False,
            )
            stages = s.decode_seconds + s.preprocess_seconds + s.score_seconds
            runs.append(
                {
                    "num_workers": workers,
                    "files": s.n_processed,
                    "errors": s.n_errors,
                    "seconds": round(s.seconds, 3),
                    "files_per_second": round(s.files_per_second, 2),
                    "decode_share": round(s.decode_seconds / stages, 3),
                    "preprocess_share": round(s.preprocess_seconds / stages, 3),
                    "score_share": round(s.score_seconds / stages, 3),
                    "decode_ms_per_file": round(1000 * s.decode_seconds / s.n_processed, 2),
                    "preprocess_ms_per_file": round(1000 * s.preprocess_seconds / s.n_processed, 2),
                    "score_ms_per_file": round(1000 * s.score_seconds / s.n_processed, 2),
                }
            )
    result = {
        "benchmark": "screen_throughput",
        "input": f"{args.files} synthetic CT DICOM slices, 512x512 int16, uncompressed",
        "model": loaded.card.name,
        "model_input": f"{loaded.card.architecture.image_size} px, {loaded.card.kind} d={loaded.card.latent_dim}",
        "device": str(loaded.device),
        "batch_size": args.batch_size,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "write_seconds": round(write_seconds, 2),
        "package_byte_compiled": compiled,
        "cli": {
            "command": "ae4ad screen ARCHIVE --model M --out X --no-resume --quiet (default settings, fresh process)",
            "seconds": round(min(clis), 3),
            "all_seconds": [round(v, 3) for v in clis],
            "files": cli_summary["n_processed"],
            "errors": cli_summary["n_errors"],
            "stage_seconds": {k: round(cli_summary[f"{k}_seconds"], 3) for k in ("decode", "preprocess", "score")},
            "pydicom_process_seconds": round(min(read_processes), 3),
            "all_pydicom_process_seconds": [round(v, 3) for v in read_processes],
            "pydicom_read_loop_seconds": round(min(reads), 3),
            "torch_import_process_seconds": round(min(torch_imports), 3),
            "all_torch_import_process_seconds": [round(v, 3) for v in torch_imports],
            "ratio": round(min(clis) / min(read_processes), 2),
            # a CLI that imported torch, then read like pydicom (the decoding workers overlap the two)
            "ratio_serial_torch_import": round((min(torch_imports) + min(read_processes)) / min(read_processes), 2),
            "ratio_vs_read_loop": round(min(clis) / min(reads), 2),
            "target_ratio": 3.0,
        },
        "runs": runs,
        "note": "shares are of the summed stage times (decode + preprocess + score); with workers, decoding and "
        "preprocessing overlap scoring, so files_per_second is the end-to-end figure.",
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
