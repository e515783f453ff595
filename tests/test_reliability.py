"""Reliability: many sessions scoring at once on shared models, and no patient identifiers in outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _fixtures_io import dicom_bytes

from ae4ad_core.analysis import analyze
from ae4ad_core.io import read_image
from ae4ad_core.registry import load_model

IDENTIFIERS = ("Doe^Jane", "ID-12345", "St Example Hospital", "ACC-777", "19700101", "House^Gregory", "SN-424242")


def synthetic_identified_dicom(rows: int = 96, cols: int = 96) -> bytes:
    """A small CT slice (a bright disc) carrying the made-up patient identifiers of ``_fixtures_io``."""
    yy, xx = np.mgrid[:rows, :cols]
    img = ((((yy - rows / 2) ** 2 + (xx - cols / 2) ** 2) < (rows / 3) ** 2) * 900 + 50).astype(np.uint16)
    return dicom_bytes(img, identifiers=True)


@pytest.fixture(scope="module")
def shipped_vae():
    return load_model("vae-d16", device="cpu")


def test_concurrent_sessions_match_sequential(shipped_vae):
    """8 threads scoring on one shared (cached) model give exactly the sequential results."""
    from ae4ad_core.data import load_demo

    images = load_demo().test.images[:16]
    jobs = [(images[i % 16: i % 16 + 2], mode) for i, mode in
            enumerate(["reconstruction", "kl", "combined", "reconstruction"] * 4)]
    sequential = [analyze(x, shipped_vae, mode=m) for x, m in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda job: analyze(job[0], shipped_vae, mode=job[1]), jobs))
    for a, b in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.maps, b.maps)
    assert not shipped_vae.inference.training and not shipped_vae.model.training


def test_identifiers_never_reach_outputs(shipped_vae, tmp_path, capfd):
    data = synthetic_identified_dicom()
    img = read_image(data, name="scan")
    text = json.dumps(img.metadata)
    res = analyze(img.pixels, shipped_vae, mode="combined")
    outputs = [text, res.to_json(), json.dumps(res.records())]
    path = tmp_path / "scan"
    path.write_bytes(data)
    cli = subprocess.run([sys.executable, "-m", "ae4ad_core.cli", "info", str(path)], capture_output=True, text=True)
    out_dir = tmp_path / "out"
    score = subprocess.run([sys.executable, "-m", "ae4ad_core.cli", "score", str(path), "--model", "vae-d16",
                            "--mode", "kl", "--out", str(out_dir), "--device", "cpu"], capture_output=True, text=True)
    assert cli.returncode == 0 and score.returncode == 0, score.stderr
    outputs += [cli.stdout, cli.stderr, score.stdout, score.stderr]
    outputs += [p.read_bytes().decode("latin-1") for p in out_dir.iterdir()]
    captured = capfd.readouterr()
    outputs += [captured.out, captured.err]
    for blob in outputs:
        for ident in IDENTIFIERS:
            assert ident not in blob
    # ...unless the user asks for them
    opted = read_image(data, name="scan", include_identifiers=True)
    assert "Doe^Jane" in json.dumps(opted.metadata)


def test_cli_reports_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM" + bytes(range(256)) * 3)
    proc = subprocess.run([sys.executable, "-m", "ae4ad_core.cli", "score", str(bad), "--model", "ae-d16"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: broken.dcm")


def test_unknown_model_suggests_closest(tmp_path):
    from PIL import Image as PILImage

    png = tmp_path / "x.png"
    PILImage.fromarray(np.zeros((16, 16), np.uint8)).save(png)  # a readable input: the model name is the error
    proc = subprocess.run([sys.executable, "-m", "ae4ad_core.cli", "score", str(png), "--model", "ae-d17"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Did you mean" in proc.stderr and proc.stderr.count("\n") == 1
