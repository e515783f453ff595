"""The ``ae4ad`` command's start-up: listing models and describing files answer without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydicom.data import get_testdata_file

from ae4ad_core.cards import list_card_summaries, read_card_summary, registry_digest
from ae4ad_core.errors import ModelCardError
from ae4ad_core.registry import list_models


def run_without_torch(*argv: str) -> str:
    """Run ``ae4ad ARGV`` in a fresh interpreter, fail if torch (or pandas) was imported, return stdout."""
    code = (
        "import sys\n"
        "from ae4ad_core.cli import main\n"
        f"status = main({list(argv)!r})\n"
        "heavy = sorted(m for m in ('torch', 'pandas', 'scipy') if m in sys.modules)\n"
        "assert not heavy, f'imported {heavy}'\n"
        "sys.exit(status)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_models_lists_the_registry_without_torch():
    out = run_without_torch("models")
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert names == [c.name for c in list_models()]
    markdown = run_without_torch("models", "--markdown")
    assert markdown.startswith("| model | mode |")


def test_info_reads_without_torch():
    out = run_without_torch("info", get_testdata_file("MR_small.dcm"))
    info = json.loads(out)
    assert info["format"] == "dicom" and info["shape"] == [1, 64, 64]


def test_card_summaries_match_full_cards(tiny_models_root):
    summaries = list_card_summaries([tiny_models_root])
    cards = list_models([tiny_models_root])
    assert [(s.name, s.kind, s.latent_dim, s.image_size) for s in summaries] == [
        (c.name, c.kind, c.latent_dim, c.architecture.image_size) for c in cards
    ]


def test_card_summaries_are_kept_by_content(tiny_models_root, tmp_path):
    """A summary is parsed once per card content: an edited card (same size, same modification time) is read
    anew, an unchanged one is the same object."""
    import os
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(next(p for p in tiny_models_root.iterdir() if (p / "card.json").is_file()), folder)
    card = folder / "card.json"
    first = read_card_summary(folder)
    assert read_card_summary(folder) is first
    stat = card.stat()
    text = card.read_text()
    assert first.description and len(first.description) >= 3
    edited = text.replace(first.description, first.description[::-1], 1)
    card.write_text(edited)
    os.utime(card, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert card.stat().st_size == stat.st_size
    assert read_card_summary(folder).description == first.description[::-1]


def test_registry_digest_follows_card_content_and_the_set_of_models(tiny_models_root, tmp_path):
    """The Analyze page's cards are cached under this digest: it must change with any card's content (even at
    the same size and modification time) and with a model added or removed, and only then."""
    import os
    import shutil

    root = tmp_path / "models"
    shutil.copytree(tiny_models_root, root)
    first = registry_digest([root])
    assert registry_digest([root]) == first
    folder = next(p for p in sorted(root.iterdir()) if (p / "card.json").is_file())
    card = folder / "card.json"
    stat, text = card.stat(), card.read_text()
    name = json.loads(text)["name"]
    card.write_text(text.replace(f'"{name}"', f'"{name[::-1]}"', 1))
    os.utime(card, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert card.stat().st_size == stat.st_size
    edited = registry_digest([root])
    assert edited != first
    card.write_text(text)
    assert registry_digest([root]) == first
    shutil.copytree(folder, root / "copy-of-a-model")
    assert registry_digest([root]) not in (first, edited)
    shutil.rmtree(root / "copy-of-a-model")
    assert registry_digest([root]) == first


def test_card_summary_refuses_a_broken_card(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "card.json").write_text('{"version": 1}')
    with pytest.raises(ModelCardError, match="needs a name"):
        read_card_summary(tmp_path / "m")
    assert list_card_summaries([tmp_path]) == []


@pytest.mark.parametrize(("slices", "match"), [("3", "slice 3 does not exist"), ("x", "expected numbers")])
def test_score_refuses_bad_slices_in_one_line(tiny_ae_dir, slices, match, capsys):
    from ae4ad_core.cli import main

    mr = get_testdata_file("MR_small.dcm")
    assert main(["score", mr, "--model", str(tiny_ae_dir), "--slices", slices, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1


def test_score_chooses_the_model_and_records_the_preparation(shared_data, tmp_path, capsys):
    from ae4ad_core.cli import main

    flair = shared_data / "tcga-head" / "TCGA-FG-6692_flair.nii.gz"
    assert main(["score", str(flair), "--slices", "12,13", "--device", "cpu"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model"].startswith("flair-") and payload["model_choice"]["fits"]
    prep = payload["preparation"]
    assert prep["model"] == payload["model"] and prep["sequence_matches"]
    assert prep["brain_extraction"]["method"] and 0 < prep["brain_fraction"] < 1
    assert [r["slice"] for r in payload["slices"]] == [12, 13]
    # A model for another sequence is still used when asked for, with a warning on stderr.
    assert main(["score", str(flair), "--slices", "12", "--model", "t1c-intensity", "--device", "cpu"]) == 0
    run = capsys.readouterr()
    assert json.loads(run.out)["override_warning"] and run.err.startswith("warning: t1c-intensity")


def test_score_says_no_model_fits_a_ct(tmp_path, capsys):
    import numpy as np
    from _fixtures_io import dicom_bytes

    from ae4ad_core.cli import main

    hu = np.random.default_rng(0).normal(1040, 30, (64, 64)).astype(np.uint16)
    path = tmp_path / "ct.dcm"
    path.write_bytes(dicom_bytes(hu, rescale=(1.0, -1024.0)))
    assert main(["score", str(path), "--device", "cpu"]) == 2
    out = capsys.readouterr().out.strip()
    assert "no model fits" in out and "CT" in out and out.count("\n") == 0


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error():
    import subprocess
    import sys

    # --json prints megabytes (the cards' training histories), far more than a pipe buffer holds, so the
    # writer is certain to hit the closed pipe
    proc = subprocess.run(f"{sys.executable} -m ae4ad_core.cli models --json | head -c 1", shell=True,
                          capture_output=True, text=True)
    assert proc.stdout == "[" and proc.stderr == ""
