"""Archive screening: recursive discovery, per-file errors as rows, resumption, a killed run, Parquet, the CLI and
a 2-process torchrun run that gives the same rows as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures_io import dicom_bytes, nifti_bytes, png_bytes

from ae4ad_core import screening
from ae4ad_core.errors import Ae4adError
from ae4ad_core.screening import COLUMNS, find_files, main, read_results, screen

REPO = Path(__file__).resolve().parent.parent


def _archive(root: Path, *, seed: int = 0, extra: int = 0) -> Path:
    """Good, bad and nested files: PNG, DICOM, a 3-slice NIfTI, random bytes, an empty file, a hidden file."""
    rng = np.random.default_rng(seed)
    (root / "sub" / "deep").mkdir(parents=True, exist_ok=True)
    (root / "a.png").write_bytes(png_bytes((rng.random((40, 48)) * 255).astype(np.uint8)))
    (root / "sub" / "b.dcm").write_bytes(dicom_bytes((rng.random((24, 24)) * 1000).astype(np.int16)))
    (root / "sub" / "deep" / "vol.nii").write_bytes(
        nifti_bytes((rng.random((20, 20, 3)) * 100).astype(np.float32))
    )
    (root / "sub" / "junk.bin").write_bytes(rng.bytes(300))
    (root / "sub" / "empty.dcm").write_bytes(b"")
    (root / ".DS_Store").write_bytes(b"hidden")
    for k in range(extra):
        (root / "more").mkdir(exist_ok=True)
        (root / "more" / f"m{k:02d}.png").write_bytes(
            png_bytes((rng.random((32, 32)) * 255).astype(np.uint8))
        )
    return root


def _key(df: pd.DataFrame) -> list[tuple]:
    return [
        (f, None if pd.isna(s) else int(s), e != "")
        for f, s, e in zip(df["file"], df["slice"], df["error"], strict=True)
    ]


def test_find_files_sorted_recursive_skips_hidden(tmp_path):
    root = _archive(tmp_path / "in")
    keys = [k for _, k in find_files(root)]
    assert keys == ["a.png", "sub/b.dcm", "sub/deep/vol.nii", "sub/empty.dcm", "sub/junk.bin"]
    assert [k for _, k in find_files([root / "a.png", root / "sub" / "b.dcm"])] == ["a.png", "sub/b.dcm"]
    assert [k for _, k in find_files(root, exclude=[root / "sub"])] == ["a.png"]


def test_screen_rows_errors_and_resume(tmp_path, tiny_ae_dir):
    root = _archive(tmp_path / "in")
    out = tmp_path / "results.csv"
    first = screen(root, tiny_ae_dir, out=out, batch_size=2, progress=False)
    df = read_results(out)
    assert list(df.columns) == list(COLUMNS)
    assert _key(df) == [
        ("a.png", 0, False),
        ("sub/b.dcm", 0, False),
        ("sub/deep/vol.nii", 0, False),
        ("sub/deep/vol.nii", 1, False),
        ("sub/deep/vol.nii", 2, False),
        ("sub/empty.dcm", None, True),
        ("sub/junk.bin", None, True),
    ]
    good = df[df["error"] == ""]
    assert np.isfinite(good["score"]).all() and (good["percentile"].between(0, 100)).all()
    assert (good["above_threshold"] == (good["score"] > good["threshold"])).all()
    assert df.loc[df["file"] == "sub/junk.bin", "error"].item().startswith("sub/junk.bin: ")
    counts = (first.n_files, first.n_skipped, first.n_processed, first.n_rows, first.n_errors)
    assert counts == (5, 0, 5, 5, 2)
    assert not (tmp_path / ".results.csv.parts").exists()

    before = out.read_bytes()
    again = screen(root, tiny_ae_dir, out=out, progress=False)
    assert (again.n_skipped, again.n_processed) == (5, 0)
    assert out.read_bytes() == before

    (root / "sub" / "new.png").write_bytes(png_bytes(np.full((16, 16), 90, np.uint8)))
    third = screen(root, tiny_ae_dir, out=out, progress=False)
    assert (third.n_files, third.n_skipped, third.n_processed) == (6, 5, 1)
    merged = read_results(out)
    assert "sub/new.png" in set(merged["file"]) and len(merged) == len(df) + 1
    pd.testing.assert_frame_equal(merged[merged["file"] != "sub/new.png"].reset_index(drop=True), df)

    with pytest.raises(Ae4adError, match="another --out"):
        screen(root, tiny_ae_dir.parent / "tiny-vae-d4", out=out, progress=False)


def test_killed_run_leaves_previous_output_and_resumes(tmp_path, tiny_ae_dir, monkeypatch):
    root = _archive(tmp_path / "in", extra=6)
    reference = screen(root, tiny_ae_dir, out=tmp_path / "reference.csv", batch_size=1, progress=False)
    assert reference.n_processed == 11

    out = tmp_path / "results.csv"
    screen([root / "a.png"], tiny_ae_dir, out=out, progress=False)  # a previous, complete output
    previous = out.read_bytes()

    calls = {"n": 0}
    real_score = screening._Scorer._score

    def dying(self, batch):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")  # what Ctrl-C or a dying node does mid-run
        return real_score(self, batch)

    monkeypatch.setattr(screening._Scorer, "_score", dying)
    with pytest.raises(KeyboardInterrupt):
        screen(root, tiny_ae_dir, out=out, batch_size=1, chunk_size=1, progress=False)
    assert out.read_bytes() == previous  # the output was never half-written
    parts = sorted((tmp_path / ".results.csv.parts").glob("*.csv"))
    assert parts, "the finished chunks were kept"
    done = pd.concat([read_results(p) for p in parts])
    assert set(done["file"]) and not {p.name for p in tmp_path.glob(".results.csv.tmp*")}

    monkeypatch.setattr(screening._Scorer, "_score", real_score)
    resumed = screen(root, tiny_ae_dir, out=out, batch_size=1, progress=False)
    assert resumed.n_processed == reference.n_files - len(set(done["file"]) | {"a.png"})
    pd.testing.assert_frame_equal(read_results(out), read_results(tmp_path / "reference.csv"))
    assert not (tmp_path / ".results.csv.parts").exists()


def test_parquet_output_and_kl_mode(tmp_path, tiny_vae_dir):
    root = _archive(tmp_path / "in")
    summary = screen(root, tiny_vae_dir, out=tmp_path / "r.parquet", mode="kl", progress=False, num_workers=2)
    df = read_results(tmp_path / "r.parquet")
    assert summary.n_rows == 5 and set(df["mode"]) == {"kl"}
    assert _key(df) == _key(read_results(tmp_path / "r.parquet"))
    redo = screen(root, tiny_vae_dir, out=tmp_path / "r.parquet", mode="kl", resume=False, progress=False)
    assert redo.n_processed == 5
    with pytest.raises(ValueError, match=".csv or .parquet"):
        screen(root, tiny_vae_dir, out=tmp_path / "r.xlsx", progress=False)


def test_cli_reports_bad_input_in_one_line(tmp_path, tiny_ae_dir, capsys):
    assert (
        main([str(tmp_path / "missing"), "--model", str(tiny_ae_dir), "--out", str(tmp_path / "o.csv")]) == 2
    )
    assert capsys.readouterr().err.startswith("error: ")
    root = _archive(tmp_path / "in")
    assert main([str(root), "--model", str(tiny_ae_dir), "--out", str(tmp_path / "o.csv"), "--quiet"]) == 0
    assert '"n_rows": 5' in capsys.readouterr().out


def test_torchrun_two_processes_match_one(tmp_path, tiny_ae_dir):
    root = _archive(tmp_path / "in", extra=5)
    single = screen(root, tiny_ae_dir, out=tmp_path / "one.csv", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "ae4ad_core.screening",
        str(root),
        "--model",
        str(tiny_ae_dir),
        "--out",
        str(tmp_path / "two.csv"),
        "--device",
        "cpu",
        "--quiet",
        "--chunk-size",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"world_size": 2' in proc.stdout and proc.stdout.count('"world_size"') == 1  # rank 0 prints
    one, two = read_results(tmp_path / "one.csv"), read_results(tmp_path / "two.csv")
    assert single.n_files == 10 and _key(one) == _key(two)
    pd.testing.assert_frame_equal(
        one.drop(columns=["score", "percentile"]), two.drop(columns=["score", "percentile"])
    )
    np.testing.assert_allclose(
        one["score"].to_numpy(float), two["score"].to_numpy(float), rtol=1e-5, equal_nan=True
    )


@pytest.mark.parametrize(
    ("cpus", "n_files", "world", "expected"),
    [(1, 1000, 1, 0), (2, 300, 1, 1), (2, 15, 1, 0), (3, 300, 1, 2), (16, 300, 1, 8), (16, 100, 1, 6),
     (16, 40, 1, 2), (8, 300, 2, 3)],
)
def test_default_workers_fit_the_machine(monkeypatch, cpus, n_files, world, expected):
    monkeypatch.setattr(screening, "_available_cpus", lambda: cpus)
    assert screening.default_num_workers(n_files, world_size=world) == expected


def test_screen_keeps_the_callers_thread_count(tmp_path, tiny_ae_dir):
    import torch

    root = _archive(tmp_path / "in")
    before = torch.get_num_threads()
    screen(root, tiny_ae_dir, out=tmp_path / "r.csv", progress=False)
    assert torch.get_num_threads() == before


def test_csv_rows_are_written_byte_for_byte_as_pandas_writes_them(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        screening._row(
            {
                "file": f'odd, "name" {i}.dcm' if i % 7 == 0 else f"s/{i}.dcm",
                "slice": i % 3,
                "score": float(rng.normal() * 10.0 ** rng.integers(-8, 17)),
                "threshold": 0.1 + 0.2,
                "above_threshold": bool(i % 2),
                "percentile": 100.0 * i / 60,
                "model": "m",
                "mode": "reconstruction",
                "error": "",
            }
        )
        for i in range(60)
    ]
    rows.append(screening._row(screening._error_row("bad", 'bad: not, "an" image', "m", "kl")))
    screening._write_csv(rows, tmp_path / "mine.csv")
    screening._frame(rows).to_csv(tmp_path / "pandas.csv", index=False)  # how outputs were written before
    assert (tmp_path / "mine.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    assert screening._read_csv(tmp_path / "pandas.csv") == rows
    pd.testing.assert_frame_equal(read_results(tmp_path / "mine.csv"), screening._frame(rows))
    screening._frame(rows).to_parquet(tmp_path / "r.parquet", index=False)
    assert screening._read_rows(tmp_path / "r.parquet") == rows


def test_screening_dicom_to_csv_imports_neither_pandas_nor_scipy(tmp_path, tiny_ae_dir):
    """pandas is for Parquet, scipy for fitting latent statistics: a DICOM archive screened to CSV needs
    neither (their imports were a third of the start-up of ``ae4ad screen``)."""
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        (root / f"IM{k}").write_bytes(dicom_bytes((rng.random((24, 24)) * 1000).astype(np.int16)))
    (root / "junk").write_bytes(rng.bytes(300))
    code = (
        "import sys; from ae4ad_core.screening import screen; "
        f"s = screen({str(root)!r}, {str(tiny_ae_dir)!r}, out={str(tmp_path / 'r.csv')!r}, progress=False); "
        "print(s.n_rows, s.n_errors, sorted(m for m in ('pandas', 'scipy') if m in sys.modules))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["4", "1", "[]"]


def test_screening_a_whole_head_scores_like_the_analyze_page(tmp_path, shared_data):
    """Archive screening with a real-patient model runs the same whole-head step (extraction, standardisation)
    and scoring as an upload on the Analyze page (analysis.analyze_image)."""
    import csv
    import shutil

    from ae4ad_core.analysis import analyze_image
    from ae4ad_core.io import read_image
    from ae4ad_core.registry import load_model
    from ae4ad_core.screening import screen

    src = shared_data / "tcga-head" / "TCGA-FG-6692_flair.nii.gz"
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    model = load_model("flair-intensity", device="cpu")
    screen([folder], model, out=tmp_path / "r.csv", num_workers=0, progress=False)
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["slice"]))
    expected = analyze_image(read_image(src), model).analysis.scores
    assert len(rows) == len(expected)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-5, atol=1e-7)


def test_decoding_workers_give_the_rows_of_the_main_process(tmp_path, tiny_ae_dir):
    root = _archive(tmp_path / "in", extra=6)
    inline = screen(root, tiny_ae_dir, out=tmp_path / "inline.csv", num_workers=0, progress=False)
    pooled = screen(root, tiny_ae_dir, out=tmp_path / "pooled.csv", num_workers=2, progress=False)
    assert pooled.n_processed == inline.n_processed == 11 and pooled.n_errors == inline.n_errors == 2
    pd.testing.assert_frame_equal(read_results(tmp_path / "pooled.csv"), read_results(tmp_path / "inline.csv"))


def test_the_command_lets_threads_take_turns_often_and_the_library_does_not(tmp_path, tiny_ae_dir):
    """``ae4ad screen`` lets its threads take turns every 0.5 ms, so the decoding pool's threads in the main
    process take decoded slices off the pipe while the main thread imports torch; :func:`screen` called from
    a library user's program leaves the interpreter's setting alone."""
    root = _archive(tmp_path / "in")
    before = sys.getswitchinterval()
    try:
        screen(root, tiny_ae_dir, out=tmp_path / "lib.csv", num_workers=1, progress=False)
        assert sys.getswitchinterval() == before
        assert screening.main([str(root), "--model", str(tiny_ae_dir), "--out", str(tmp_path / "cli.csv"),
                               "--num-workers", "1", "--quiet"]) == 0
        assert sys.getswitchinterval() == pytest.approx(min(before, screening.COMMAND_SWITCH_INTERVAL_S))
    finally:
        sys.setswitchinterval(before)
    pd.testing.assert_frame_equal(read_results(tmp_path / "cli.csv"), read_results(tmp_path / "lib.csv"))


def test_scoring_takes_the_workers_cpus_once_they_have_decoded_everything(tmp_path, tiny_ae_dir, monkeypatch):
    """While a worker decodes, scoring gets the CPUs it leaves; once every file is decoded, the backlog is scored
    on all of them; the caller's thread count is back at the end. Without workers the first setting stays."""
    import torch

    root = _archive(tmp_path / "in", extra=6)
    calls: list[int] = []
    monkeypatch.setattr(screening, "_available_cpus", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    screen(root, tiny_ae_dir, out=tmp_path / "pooled.csv", num_workers=1, progress=False)
    assert calls == [3, 4, 8]
    calls.clear()
    screen(root, tiny_ae_dir, out=tmp_path / "inline.csv", num_workers=0, progress=False)
    assert calls == [4, 8]
    pd.testing.assert_frame_equal(read_results(tmp_path / "pooled.csv"), read_results(tmp_path / "inline.csv"))


def test_decoding_done_is_true_once_every_chunk_is_in(tmp_path, tiny_ae_dir):
    from ae4ad_core.registry import find_model_dir, load_card

    root = _archive(tmp_path / "in", extra=6)
    card = load_card(find_model_dir(tiny_ae_dir))
    files = screening.find_files(root)
    decoded = screening._Decoded(screening._FileSlices(files, card.preprocessing), num_workers=2)
    try:
        assert len(decoded.chunks) > 1
        assert [item.key for item in decoded] == [key for _, key in files]
        assert decoded.decoding_done() and decoded.n_ready == len(decoded.chunks)
    finally:
        decoded.close()
    assert screening._Decoded(screening._FileSlices(files, card.preprocessing), num_workers=0).decoding_done()


_TORCH_FREE = """
import sys
from pathlib import Path
from ae4ad_core import screening
from ae4ad_core.registry import find_model_dir, load_card
from ae4ad_core.standardise import prepare_whole_head  # noqa: F401 - the whole-head step of patient models
card = load_card(find_model_dir(sys.argv[1]))
card.map_scoring
files = screening.find_files(sys.argv[2])
items = [screening._FileSlices(files, card.preprocessing)[i] for i in range(len(files))]
size = card.preprocessing.size
assert [i.x.shape for i in items if not i.error] == [(1, 1, size, size)] * 2 + [(3, 1, size, size)], items
print("torch" in sys.modules)
"""


def test_screening_reads_cards_and_decodes_without_importing_torch(tmp_path, tiny_ae_dir):
    """What ``ae4ad screen`` does before its decoding workers start (read the card, find the files) and what
    the workers do (decode, preprocess) never imports torch, so the workers fork before the main process pays
    for torch's import and decode while it does."""
    root = _archive(tmp_path / "in")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _TORCH_FREE, str(tiny_ae_dir), str(root)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_decoding_processes_keep_freed_memory_on_glibc():
    """The CLI and the decoding workers ask glibc to reuse freed slice buffers instead of unmapping them (the
    page faults of fresh buffers doubled the decoding time on a virtual machine)."""
    assert screening.keep_freed_memory() is True


def test_a_patient_model_does_not_score_what_is_not_brain_mri(tmp_path):
    """Screening with a real-patient (brain MRI) model: a CT slice in the archive gets a row saying plainly that
    it was not scored and why, as the Analyze page says that no model fits, instead of a meaningless score."""
    rng = np.random.default_rng(3)
    ct = np.clip(rng.normal(40, 30, (64, 64)), -1024, 3000).astype(np.int16)
    ct[:8] = -1000
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ct.dcm").write_bytes(dicom_bytes(ct, modality="CT", rescale=(1.0, 0.0)))
    summary = screen(tmp_path / "in", "flair-intensity", out=tmp_path / "r.csv", num_workers=0, progress=False,
                     device="cpu")
    rows = read_results(tmp_path / "r.csv")
    assert summary.n_errors == 1 and rows["slice"].isna().all()
    error = rows["error"].iloc[0]
    assert error.startswith("ct.dcm: not scored:") and "CT" in error and "brain MRI" in error
