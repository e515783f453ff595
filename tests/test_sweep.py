"""The latent-size sweep end to end on a tiny budget, and the label-free choice of d."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ae4ad_core.selection import choose_latent_dim
from ae4ad_core.sweep import SweepConfig, run_sweep, summarise_sweep


def test_choose_latent_dim_takes_the_smallest_d_near_the_plateau():
    dims = [1, 2, 4, 8, 16, 32, 64, 128]
    plateau = [0.20, 0.12, 0.08, 0.05, 0.041, 0.0395, 0.039, 0.039]
    assert choose_latent_dim(dims, plateau, tolerance=0.10) == 16  # 0.041 <= 1.1 * 0.039
    assert choose_latent_dim(dims, plateau, tolerance=0.30) == 8  # 0.05 <= 1.3 * 0.039
    assert choose_latent_dim(dims, plateau, tolerance=0.0) == 64  # the first d that reaches the minimum


def test_choose_latent_dim_averages_seeds_and_ignores_order():
    dims = [16, 4, 4, 16, 8, 8]
    errors = [0.010, 0.030, 0.034, 0.012, 0.0115, 0.0125]  # means: 4 -> 0.032, 8 -> 0.012, 16 -> 0.011
    assert choose_latent_dim(dims, errors, tolerance=0.10) == 8


def test_choose_latent_dim_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        choose_latent_dim([1, 2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        choose_latent_dim([1, 2], [0.1, float("nan")])
    with pytest.raises(ValueError, match="tolerance"):
        choose_latent_dim([1, 2], [0.1, 0.2], tolerance=-1)


def test_summary_reports_choice_and_oracle_gap():
    rows = [
        {"d": d, "seed": s, "name": f"ae-d{d}-seed{s}", "val_error": e, "image_auroc": a}
        for d, e, a in [(2, 0.10, 0.60), (4, 0.05, 0.70), (8, 0.048, 0.65)] for s in (0, 1)
    ]
    summary = summarise_sweep(rows, tolerance=0.1)
    assert summary["chosen_d"] == 4 and summary["oracle_d"] == 4
    assert summary["auroc_gap_points"] == pytest.approx(0.0)
    assert summary["per_d"]["2"]["image_auroc"] == {"mean": 0.60, "std": 0.0}


@pytest.mark.slow
def test_sweep_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("AE4AD_HOME", str(tmp_path / "home"))
    config = SweepConfig(data="demo", dims=(2, 4), seeds=(0,), epochs=1, image_size=32, out=tmp_path / "sweep",
                         extra_args=("--batch-size", "64"))
    summary = run_sweep(config, progress=False)
    for name in ("sweep.csv", "sweep.json", "sweep.png"):
        assert (config.out / name).stat().st_size > 0
    table = (config.out / "sweep.csv").read_text().splitlines()
    assert table[0].startswith("d,seed,name,image_auroc") and len(table) == 3
    saved = json.loads((config.out / "sweep.json").read_text())
    assert set(saved["per_d"]) == {"2", "4"} and saved["chosen_d"] in (2, 4)
    for row in summary["rows"]:
        assert 0.0 <= row["image_auroc"] <= 1.0 and np.isfinite(row["entropy_gaussian_nats"])
    stamp = (config.out / "models" / "ae-d2-seed0" / "card.json").stat().st_mtime
    run_sweep(config, progress=False)  # resumable: finished runs are skipped, not retrained
    assert (config.out / "models" / "ae-d2-seed0" / "card.json").stat().st_mtime == stamp
