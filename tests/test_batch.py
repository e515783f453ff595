"""Batch scoring of uploads: mixed good and bad files, ZIPs, DICOM series grouping, ranking, thumbnails, CSV and
the hand-over to the Analyze page."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from _fixtures_io import dicom_bytes, nifti_bytes, png_bytes
from PIL import Image as PILImage

from ae4ad_core.archive import expand_uploads
from ae4ad_core.batch import THUMBNAIL_SIZE, score_uploads
from ae4ad_core.errors import UnsupportedModeError
from ae4ad_core.io import read_images
from ae4ad_core.registry import load_model


@pytest.fixture(scope="module")
def tiny_ae(tiny_ae_dir):
    return load_model(tiny_ae_dir, device="cpu")


def _series(rng, n: int = 3) -> list[tuple[str, bytes]]:
    from pydicom.uid import generate_uid

    uid = generate_uid()
    return [
        (
            f"series/{n - k}.dcm",
            dicom_bytes(
                (rng.random((24, 24)) * 1000).astype(np.int16),
                series_uid=uid,
                position=(0.0, 0.0, float(k)),
                instance_number=k + 1,
            ),
        )
        for k in range(n)
    ]


def mixed_uploads(seed: int = 0) -> list[tuple[str, bytes]]:
    """PNG, DICOM, NIfTI, random bytes, an empty file, a ZIP (a 3-file DICOM series + a PNG), a broken ZIP."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in _series(rng):
            zf.writestr(name, data)
        zf.writestr("more/inner.png", png_bytes((rng.random((30, 40)) * 255).astype(np.uint8)))
    return [
        ("normal.png", png_bytes((rng.random((32, 32)) * 60 + 100).astype(np.uint8))),
        ("bright.png", png_bytes((rng.random((32, 32)) * 255).astype(np.uint8))),
        ("scan.dcm", dicom_bytes((rng.random((28, 28)) * 1000).astype(np.int16), identifiers=False)),
        ("vol.nii.gz", nifti_bytes((rng.random((16, 16, 4)) * 100).astype(np.float32), compress=True)),
        ("random.bin", rng.bytes(400)),
        ("empty", b""),
        ("archive.zip", buf.getvalue()),
        ("broken.zip", b"PK\x03\x04" + rng.bytes(60)),
    ]


def test_mixed_uploads_ranked_with_errors_and_thumbnails(tiny_ae):
    seen = []
    result = score_uploads(mixed_uploads(), tiny_ae, progress=lambda f, text: seen.append(f))
    names = {v["name"] for v in result.volumes}
    assert names == {
        "normal.png",
        "bright.png",
        "scan.dcm",
        "vol.nii.gz",
        "archive.zip/series",
        "archive.zip/more/inner.png",
    }
    assert {n for n, _ in result.errors} == {"random.bin", "empty", "broken.zip"}
    assert all(reason.startswith(name) for name, reason in result.errors)
    scores = [v["score"] for v in result.volumes]
    assert scores == sorted(scores, reverse=True) and [v["rank"] for v in result.volumes] == list(range(1, 7))
    by_name = {v["name"]: v for v in result.volumes}
    assert by_name["archive.zip/series"]["n_slices"] == 3 and by_name["vol.nii.gz"]["n_slices"] == 4
    assert len(result.rows) == sum(v["n_slices"] for v in result.volumes) == 11
    for v in result.volumes:
        slice_scores = [r["score"] for r in result.rows if r["volume_id"] == v["volume_id"]]
        assert v["score"] == max(slice_scores) and slice_scores[v["best_slice"]] == v["score"]
        assert v["above_threshold"] == any(s > result.threshold for s in slice_scores)
        assert v["verdict"].startswith(("Above", "Within"))
        for png in result.thumbnails[v["volume_id"]]:
            assert max(PILImage.open(io.BytesIO(png)).size) == THUMBNAIL_SIZE
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    table = result.ranked_table()
    assert table["image"].str.startswith("data:image/png;base64,").all()
    assert list(table["best slice"]) == [v["best_slice"] + 1 for v in result.volumes]


def test_csv_has_every_slice_and_failure(tiny_ae):
    result = score_uploads(mixed_uploads(), tiny_ae)
    df = pd.read_csv(io.BytesIO(result.to_csv()), keep_default_na=False)
    ok = df[df["error"] == ""]
    assert len(ok) == 11 and set(df.loc[df["error"] != "", "name"]) == {"random.bin", "empty", "broken.zip"}
    assert list(ok["volume_rank"]) == sorted(ok["volume_rank"])
    assert "PatientName" not in df.columns
    with pytest.raises(ValueError, match="include_identifiers=True"):
        result.to_csv(include_identifiers=True)


def test_unsupported_mode_is_refused_up_front(tiny_ae):
    with pytest.raises(UnsupportedModeError, match="needs a VAE"):
        score_uploads(mixed_uploads(), tiny_ae, mode="kl")


def test_vae_modes_and_a_failing_volume_does_not_stop_the_batch(tiny_vae_dir, monkeypatch):
    from ae4ad_core import analysis

    loaded = load_model(tiny_vae_dir, device="cpu")
    real = analysis.analyze

    def flaky(pixels, model, **kwargs):
        if len(pixels) == 4:
            raise RuntimeError("out of memory on the device")
        return real(pixels, model, **kwargs)

    monkeypatch.setattr(analysis, "analyze", flaky)
    result = score_uploads(mixed_uploads(), loaded, mode="combined")
    assert result.mode == "combined" and len(result.volumes) == 5
    assert ("vol.nii.gz", "vol.nii.gz: RuntimeError: out of memory on the device") in result.errors


def test_analyze_request_reopens_the_same_volume(tiny_ae):
    uploads = mixed_uploads()
    result = score_uploads(uploads, tiny_ae)
    by_name = {v["name"]: v for v in result.volumes}
    single = result.analyze_request(by_name["scan.dcm"]["volume_id"])
    assert set(single) == {"name", "data", "slice", "model", "mode"}
    assert single["name"] == "scan.dcm" and single["data"] == dict(uploads)["scan.dcm"]
    assert (single["model"], single["mode"], single["slice"]) == (tiny_ae.name, "reconstruction", 0)

    series = by_name["archive.zip/series"]
    request = result.analyze_request(series["volume_id"])
    assert request["name"].endswith(".zip") and request["slice"] == series["best_slice"]
    files, errors = expand_uploads([(request["name"], request["data"])])
    images, read_errors = read_images(files)
    assert not errors and not read_errors and len(images) == 1 and images[0].n_slices == 3
    with pytest.raises(KeyError, match="Unknown volume"):
        result.analyze_request("V999")


def test_repeated_upload_names_stay_distinct(tiny_ae):
    png = png_bytes(np.full((20, 20), 120, np.uint8))
    result = score_uploads([("a.png", png), ("a.png", png)], tiny_ae)
    assert sorted(v["name"] for v in result.volumes) == ["a.png", "a.png (2)"]


def test_each_scan_gets_its_model_or_a_no_model_fits_row(shared_data):
    from ae4ad_core.batch import PER_SCAN
    from ae4ad_core.report import build_pdf_report

    flair = shared_data / "tcga-head" / "TCGA-FG-6692_flair.nii.gz"
    hu = np.random.default_rng(0).normal(1064, 20, (64, 64)).astype(np.uint16)
    uploads = [("head_ct.dcm", dicom_bytes(hu, rescale=(1.0, -1024.0))), (flair.name, flair.read_bytes())]
    result = score_uploads(uploads)
    assert result.model_name == PER_SCAN and result.n_unfit == 1 and not result.errors
    scored, unfit = result.volumes
    assert scored["model"].startswith("flair-") and scored["sequence"] == "flair" and scored["fits"]
    assert 0 < scored["brain_fraction"] < 1 and scored["rank"] == 1
    assert unfit["model"] is None and not unfit["fits"] and np.isnan(unfit["score"])
    assert "CT" in unfit["verdict"] and unfit["rank"] == 2
    table = result.ranked_table()
    assert list(table["verdict"])[1] == "no model fits" and list(table["sequence"]) == ["flair", "other"]
    csv = result.to_csv().decode()
    assert "head_ct.dcm" in csv and "no model fits" in csv
    assert build_pdf_report(result, None).startswith(b"%PDF")
