"""Scoring latency, throughput and memory of the reference AE (d = 16, 64 px) and a VAE of the same size.

For each model and scoring mode it times

* ``project``: the library's path, :func:`ae4ad_core.scoring.score_batch` on
  :func:`ae4ad_core.models.fuse_for_inference` (BatchNorm folded, sub-pixel output layer, channels_last,
  ``torch.inference_mode`` for reconstruction);
* ``plain``: what the authors' code does, an eager fp32 forward of the unfused architecture in
  ``model.eval()`` under ``torch.no_grad()`` (reconstruction: the forward pass alone, without even the error
  map; kl/combined: ``score_batch`` on the unfused eval model, i.e. the same math without the rewrite).

Figures: p50/p95 latency of one 64 x 64 image (ms), throughput at batch 256 (images/s), and the ratio
project / plain. Both paths are timed in the same process, alternating blocks of calls, so background load
hits both alike. Peak RSS (``resource.getrusage``) is measured for each path in a fresh child process that
loads the model and scores a few batches. With ``--experiments`` it also times intermediate rewrites and
alternatives (TorchScript freeze, ``torch.compile``) for the reconstruction mode.

    python benchmarks/score_latency.py [--device cpu] [--repeats 200] [--batch-repeats 6] [--experiments]

Weights come from ``assets/models/ae-d16`` (and ``vae-d16``) when they exist, else a random init with
BatchNorm statistics moved off their defaults. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ae4ad_core.models import (  # noqa: E402
    ModelConfig,
    _fuse_sequential,
    _SubPixelConvTranspose2d,
    build_model,
    fuse_for_inference,
)
from ae4ad_core.scoring import score_batch  # noqa: E402

MODES = {"ae": ["reconstruction"], "vae": ["reconstruction", "kl", "combined"]}
SIZE = 64
KL_SCALE = 1e-3  # any positive value: the combined mode's cost does not depend on it
TARGETS = {
    "reconstruction_batch_speedup_min": 1.5,
    "reconstruction_p50_ms_max": 3.0,
    "kl_combined_p50_ms_max": 15.0,
    "kl_combined_images_per_s_min": 300.0,
}


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def load_reference(kind: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The shipped ``<kind>-d16`` model if present, else a random init (BN statistics perturbed)."""
    folder = REPO / "assets" / "models" / f"{kind}-d16"
    if (folder / "card.json").is_file():
        from ae4ad_core.registry import load_model

        loaded = load_model(folder, device="cpu")
        if loaded.card.architecture.image_size == SIZE:
            return loaded.model.to(device).eval(), f"assets/models/{folder.name}"
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, latent_dim=16, image_size=SIZE))
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(32, 1, SIZE, SIZE) * 2 - 1)
    return model.to(device).eval(), "random init"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_forward(model: torch.nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return model(x)


def make_call(path: str, mode: str, model, fused):
    """A function ``f(x)`` running one scoring call of ``path`` ("project" or "plain") in ``mode``."""
    if path == "project":
        return lambda x: score_batch(fused, x, mode=mode, kl_gradient_scale=KL_SCALE)
    if mode == "reconstruction":
        return lambda x: plain_forward(model, x)
    return lambda x: score_batch(model, x, mode=mode, kl_gradient_scale=KL_SCALE)


def time_calls(fn, x, n: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(n):
        sync(device)
        t = time.perf_counter()
        fn(x)
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def interleaved(
    fns: dict, x: torch.Tensor, total: int, device: torch.device, block: int
) -> dict[str, list[float]]:
    """Time each function ``total`` times, alternating blocks of ``block`` calls between them."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn(x)
    while min(len(v) for v in times.values()) < total:
        for name, fn in fns.items():
            times[name] += time_calls(fn, x, min(block, total - len(times[name])), device)
    return times


def summarise(single: list[float], batch: list[float], batch_size: int) -> dict:
    s = np.asarray(single) * 1e3
    b = np.asarray(batch)
    return {
        "single_p50_ms": round(float(np.percentile(s, 50)), 3),
        "single_p95_ms": round(float(np.percentile(s, 95)), 3),
        "batch_images_per_s": round(float(batch_size / np.median(b)), 1),
        "batch_p50_ms": round(float(np.median(b) * 1e3), 2),
    }


def bench_model(kind: str, device: torch.device, repeats: int, batch_repeats: int, batch_size: int) -> dict:
    model, source = load_reference(kind, device)
    fused = fuse_for_inference(model)
    g = torch.Generator().manual_seed(0)
    x1 = (torch.rand(1, 1, SIZE, SIZE, generator=g) * 2 - 1).to(device)
    xb = (torch.rand(batch_size, 1, SIZE, SIZE, generator=g) * 2 - 1).to(device)
    result: dict = {"weights": source, "modes": {}}
    for mode in MODES[kind]:
        fns = {p: make_call(p, mode, model, fused) for p in ("project", "plain")}
        single = interleaved(fns, x1, repeats, device, block=max(1, repeats // 10))
        batch = interleaved(fns, xb, batch_repeats, device, block=1)
        entry = {p: summarise(single[p], batch[p], batch_size) for p in fns}
        entry["batch_speedup"] = round(
            entry["project"]["batch_images_per_s"] / entry["plain"]["batch_images_per_s"], 2
        )
        entry["single_speedup"] = round(
            entry["plain"]["single_p50_ms"] / entry["project"]["single_p50_ms"], 2
        )
        a, b = fns["project"](xb[:8]), score_batch(model, xb[:8], mode=mode, kl_gradient_scale=KL_SCALE)
        entry["max_map_difference_vs_unfused_relative"] = float(
            (a.maps - b.maps).abs().max() / b.maps.abs().max()
        )
        result["modes"][mode] = entry
    return result


# ---------------------------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` figure in kB (Linux), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(kind: str, path: str, device: str, batch_size: int) -> dict:
    """Run in a child process: load the model, score three batches in every mode, report the peak RSS.

    ``resource.getrusage`` alone would report the larger of the import of torch and the parent's footprint
    inherited at ``exec``, so on Linux the peak is reset after the imports and read from ``VmHWM``.
    """
    after_imports = (_status_kb("VmRSS") or 0) / 1024
    reset = _reset_peak_rss()
    dev = torch.device(device)
    model, _ = load_reference(kind, dev)
    fused = fuse_for_inference(model) if path == "project" else None
    x = torch.rand(batch_size, 1, SIZE, SIZE).to(dev)
    for mode in MODES[kind]:
        fn = make_call(path, mode, model, fused)
        for _ in range(3):
            fn(x)
    hwm = _status_kb("VmHWM") if reset else None
    peak = hwm / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "peak_rss_mb": round(peak, 1),
        "rss_after_imports_mb": round(after_imports, 1),
        "model_and_scoring_mb": round(peak - after_imports, 1),
        "source": "VmHWM after reset" if hwm else "getrusage ru_maxrss",
    }


def peak_rss(kind: str, path: str, device: str, batch_size: int, threads: int) -> dict | None:
    cmd = [
        sys.executable,
        __file__,
        "--memory-worker",
        f"{kind}:{path}",
        "--device",
        device,
        "--batch",
        str(batch_size),
        "--threads",
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------- experiments


def _fold_only(model):
    fused = copy.deepcopy(model).eval()
    for name in ("encoder", "to_latent", "from_latent", "decoder"):
        setattr(fused, name, _fuse_sequential(getattr(fused, name)))
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


def _with_sub_pixel(fused):
    out = copy.deepcopy(fused)
    layers = list(out.decoder)
    out.decoder = torch.nn.Sequential(*layers[:-1], _SubPixelConvTranspose2d(layers[-1]))
    return out


class _Forward(torch.nn.Module):
    """Tensor-only wrapper for tracing: returns (reconstruction, mu)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out.reconstruction, out.mu


def experiments(device: torch.device, repeats: int, batch_repeats: int, batch_size: int) -> dict:
    """Reconstruction forward of the AE under each rewrite, alone and cumulatively (inference_mode)."""
    model, _ = load_reference("ae", device)
    fold = _fold_only(model)
    variants = {
        "unfused (inference_mode)": model,
        "BN folded": fold,
        "BN folded + channels_last": copy.deepcopy(fold).to(memory_format=torch.channels_last),
        "BN folded + sub-pixel output": _with_sub_pixel(fold),
        "BN folded + sub-pixel + channels_last (project)": fuse_for_inference(model),
    }
    g = torch.Generator().manual_seed(1)
    x1 = (torch.rand(1, 1, SIZE, SIZE, generator=g) * 2 - 1).to(device)
    xb = (torch.rand(batch_size, 1, SIZE, SIZE, generator=g) * 2 - 1).to(device)
    out: dict = {}
    extra: dict = {}
    with torch.no_grad():
        try:
            t = time.perf_counter()
            traced = torch.jit.trace(_Forward(fuse_for_inference(model)).eval(), xb[:2], check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            extra["TorchScript freeze + optimize_for_inference"] = (frozen, time.perf_counter() - t)
        except Exception as exc:  # report, never fail the benchmark
            out["TorchScript freeze + optimize_for_inference"] = {"error": str(exc).splitlines()[0][:200]}
    try:
        t = time.perf_counter()
        compiled = torch.compile(fuse_for_inference(model), dynamic=False)
        with torch.inference_mode():
            compiled(x1)
            compiled(xb)
        extra["torch.compile (inductor)"] = (compiled, time.perf_counter() - t)
    except Exception as exc:  # torch.compile needs a working C++ toolchain
        out["torch.compile (inductor)"] = {"error": str(exc).splitlines()[0][:200]}
    fns = dict(variants) | {name: m for name, (m, _) in extra.items()}
    with torch.inference_mode():
        single = interleaved(fns, x1, repeats, device, block=max(1, repeats // 10))
        batch = interleaved(fns, xb, batch_repeats, device, block=1)
        ref = model(xb[:8]).reconstruction
        for name, fn in fns.items():
            res = fn(xb[:8])
            rec = res[0] if isinstance(res, tuple) else res.reconstruction
            out[name] = summarise(single[name], batch[name], batch_size)
            out[name]["max_abs_difference"] = float((rec - ref).abs().max())
            if name in extra:
                out[name]["build_s"] = round(extra[name][1], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--repeats", type=int, default=200, help="single-image calls per path and mode")
    parser.add_argument("--batch-repeats", type=int, default=6, help="batch calls per path and mode")
    parser.add_argument("--batch", type=int, default=256, help="batch size for throughput")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    parser.add_argument("--experiments", action="store_true", help="also time rewrites and alternatives")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or n_cores()
    torch.set_num_threads(threads)
    if args.memory_worker:
        kind, path = args.memory_worker.split(":")
        print(json.dumps(memory_worker(kind, path, args.device, args.batch)))
        return 0
    device = torch.device(args.device)
    t0 = time.perf_counter()
    report: dict = {
        "benchmark": "score_latency",
        "device": args.device if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": threads,
        "cores_usable": n_cores(),
        "load_average_1min_before": round(os.getloadavg()[0], 2),
        "image_size": SIZE,
        "latent_dim": 16,
        "batch_size": args.batch,
        "repeats": {"single": args.repeats, "batch": args.batch_repeats},
        "models": {},
    }
    for kind in MODES:
        report["models"][kind] = bench_model(kind, device, args.repeats, args.batch_repeats, args.batch)
        if not args.no_memory:
            report["models"][kind]["memory"] = {
                p: peak_rss(kind, p, args.device, args.batch, threads) for p in ("project", "plain")
            }
    if args.experiments:
        report["experiments_ae_reconstruction"] = experiments(
            device, args.repeats, args.batch_repeats, args.batch
        )
    ae_rec = report["models"]["ae"]["modes"]["reconstruction"]
    vae = report["models"]["vae"]["modes"]
    report["targets"] = TARGETS
    report["targets_met"] = {
        "reconstruction_batch_speedup": ae_rec["batch_speedup"]
        >= TARGETS["reconstruction_batch_speedup_min"],
        "reconstruction_p50": max(
            ae_rec["project"]["single_p50_ms"], vae["reconstruction"]["project"]["single_p50_ms"]
        )
        <= TARGETS["reconstruction_p50_ms_max"],
        "kl_combined_p50": max(vae[m]["project"]["single_p50_ms"] for m in ("kl", "combined"))
        <= TARGETS["kl_combined_p50_ms_max"],
        "kl_combined_throughput": min(vae[m]["project"]["batch_images_per_s"] for m in ("kl", "combined"))
        >= TARGETS["kl_combined_images_per_s_min"],
    }
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
