"""The AE4AD latent-size sweep, with the latent-entropy column the paper lacks.

``ae4ad sweep --data demo --d 1,2,4,8,16,32,64,128 --seeds 3 --epochs E --out runs/sweep`` trains an AE for each
``(d, seed)`` (resumable: finished runs are skipped), calibrates it on normal validation images, evaluates it on
the test split and measures its latent entropy. It writes ``sweep.csv`` (one row per run), ``sweep.json`` (rows,
mean +- std per d, the label-free choice of d and the test-set oracle) and ``sweep.png``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import load_card
from .selection import DEFAULT_TOLERANCE, choose_latent_dim

__all__ = ["SweepConfig", "run_sweep", "sweep_rows", "summarise_sweep", "sweep_figure", "ROW_FIELDS"]

ROW_FIELDS = (
    "d", "seed", "name", "image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "best_dice", "calibrated_dice",
    "val_error", "entropy_gaussian_nats", "entropy_knn_nats", "effective_dim", "anatomy_correlation",
    "rate_weight", "mean_rate_bits",
)


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep. ``extra_args`` are passed to ``ae4ad train`` (e.g. ``["--no-augment"]``)."""

    data: str = "demo"
    dims: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 100
    kind: str = "ae"
    image_size: int = 64
    out: Path = Path("runs/sweep")
    jobs: int = 1
    device: str | None = None
    extra_args: tuple[str, ...] = ()


def _run_name(kind: str, d: int, seed: int) -> str:
    return f"{kind}-d{d}-seed{seed}"


def _train_args(config: SweepConfig, d: int, seed: int) -> list[str]:
    args = ["--data", config.data, "--kind", config.kind, "--d", str(d), "--seed", str(seed),
            "--epochs", str(config.epochs), "--size", str(config.image_size),
            "--name", _run_name(config.kind, d, seed), "--out", str(config.out / "models")]
    if config.device:
        args += ["--device", config.device]
    return args + list(config.extra_args)


def run_sweep(config: SweepConfig, *, progress: bool = True) -> dict:
    """Train every missing ``(d, seed)`` run, then summarise all runs; returns the summary dict."""
    from tqdm.auto import tqdm

    models = config.out / "models"
    todo = [(d, s) for d in config.dims for s in config.seeds
            if not (models / _run_name(config.kind, d, s) / "card.json").is_file()]
    bar = tqdm(total=len(todo), desc="sweep runs", disable=not progress)

    def one(item):
        d, s = item
        cmd = [sys.executable, "-m", "ae4ad_core.training", *_train_args(config, d, s)]
        if config.jobs > 1:
            cmd.append("--quiet")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]
                raise RuntimeError(f"run d={d} seed={s} failed: {tail[0]}")
        else:
            from .training import main as train_main

            train_main(_train_args(config, d, s))
        bar.update(1)

    if config.jobs > 1:
        with ThreadPoolExecutor(max_workers=config.jobs) as pool:
            list(pool.map(one, todo))
    else:
        for item in todo:
            one(item)
    bar.close()
    rows = sweep_rows(models)
    summary = summarise_sweep(rows)
    write_sweep(rows, summary, config.out)
    return summary


def sweep_rows(models_dir: Path) -> list[dict]:
    """One row per trained run found under ``models_dir`` (reads the cards only)."""
    rows = []
    for folder in sorted(Path(models_dir).glob("*/card.json")):
        card = load_card(folder.parent)
        rec = card.metrics.get("reconstruction", {})
        normal = card.calibration.get("modes", {}).get("reconstruction", {}).get("normal_scores", [])
        cfg = card.training.get("config", {})
        rows.append({
            "d": card.latent_dim,
            "seed": cfg.get("seed"),
            "name": card.name,
            "image_auroc": rec.get("image_auroc"),
            "image_ap": rec.get("image_ap"),
            "pixel_auroc": rec.get("pixel_auroc"),
            "pixel_ap": rec.get("pixel_ap"),
            "best_dice": rec.get("best_dice"),
            "calibrated_dice": rec.get("calibrated_dice"),
            "val_error": float(np.mean(normal)) if normal else None,
            "entropy_gaussian_nats": card.latent.get("entropy_gaussian_nats"),
            "entropy_knn_nats": card.latent.get("entropy_knn_nats"),
            "effective_dim": card.latent.get("effective_dim"),
            "anatomy_correlation": rec.get("anatomy_correlation"),
            "rate_weight": cfg.get("rate_weight") if card.kind == "rdae" else None,
            "mean_rate_bits": card.latent.get("mean_rate_bits"),
        })
    return sorted(rows, key=lambda r: (r["d"], r["seed"] if r["seed"] is not None else -1))


def summarise_sweep(rows: Sequence[dict], *, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Mean and std per d of every numeric column; the label-free choice of d vs the test-set oracle."""
    dims = sorted({r["d"] for r in rows})
    metrics = [f for f in ROW_FIELDS if f not in ("d", "seed", "name")]
    per_d = {}
    for d in dims:
        sub = [r for r in rows if r["d"] == d]
        entry = {"n_runs": len(sub)}
        for m in metrics:
            vals = np.array([r[m] for r in sub if r.get(m) is not None], dtype=np.float64)
            if vals.size:
                entry[m] = {"mean": float(vals.mean()), "std": float(vals.std())}
        per_d[str(d)] = entry
    out: dict = {"per_d": per_d, "rows": list(rows), "tolerance": tolerance}
    usable = [r for r in rows if r.get("val_error") is not None]
    if usable:
        chosen = choose_latent_dim([r["d"] for r in usable], [r["val_error"] for r in usable], tolerance=tolerance)
        out["chosen_d"] = chosen
        aurocs = {d: per_d[str(d)].get("image_auroc", {}).get("mean") for d in dims}
        aurocs = {d: v for d, v in aurocs.items() if v is not None}
        if aurocs:
            oracle = max(aurocs, key=aurocs.get)
            out["oracle_d"] = oracle
            out["chosen_auroc"] = aurocs.get(chosen)
            out["oracle_auroc"] = aurocs[oracle]
            if aurocs.get(chosen) is not None:
                out["auroc_gap_points"] = 100.0 * (aurocs[oracle] - aurocs[chosen])
    return out


def write_sweep(rows: Sequence[dict], summary: dict, out: Path) -> list[Path]:
    """Write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``out``."""
    import csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_FIELDS))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in ROW_FIELDS})
    (out / "sweep.json").write_text(json.dumps(summary, indent=1))
    fig = sweep_figure(summary)
    fig.savefig(out / "sweep.png", dpi=100, bbox_inches="tight")
    return [out / "sweep.csv", out / "sweep.json", out / "sweep.png"]


def sweep_figure(summary: dict):
    """AUROC/AP/pixel AP and latent entropy against d (mean +- std over seeds), as a matplotlib Figure."""
    from matplotlib.figure import Figure

    per_d = summary["per_d"]
    dims = sorted(int(d) for d in per_d)
    fig = Figure(figsize=(9, 3.4))
    ax1, ax2 = fig.subplots(1, 2)

    def series(key):
        m = [per_d[str(d)].get(key, {}).get("mean", np.nan) for d in dims]
        s = [per_d[str(d)].get(key, {}).get("std", 0.0) for d in dims]
        return np.array(m, dtype=float), np.array(s, dtype=float)

    for key, label in (("image_auroc", "image AUROC"), ("image_ap", "image AP"), ("pixel_ap", "pixel AP")):
        m, s = series(key)
        if np.isfinite(m).any():
            ax1.errorbar(dims, m, yerr=s, marker="o", capsize=3, label=label)
    if "chosen_d" in summary:
        ax1.axvline(summary["chosen_d"], color="tab:green", ls="--", lw=1, label=f"chosen d={summary['chosen_d']}")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("latent size d")
    ax1.set_ylabel("score")
    ax1.set_title("Detection vs latent size")
    ax1.legend(fontsize=7)
    for key, label in (("entropy_gaussian_nats", "Gaussian"), ("entropy_knn_nats", "k-NN")):
        m, s = series(key)
        if np.isfinite(m).any():
            ax2.errorbar(dims, m, yerr=s, marker="s", capsize=3, label=label)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("latent size d")
    ax2.set_ylabel("latent entropy (nats)")
    ax2.set_title("Latent entropy of normal images")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig
