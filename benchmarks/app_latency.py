"""Latency of the Analyze page in a real browser, and the server's peak memory with the zoo loaded.

Starts ``streamlit run app.py`` on a free port, loads every model of the registry once (the zoo), then, for
each input, opens a fresh browser session, uploads the file through the real ``input[type=file]`` and times
until the verdict sentence is visible. Prints JSON: median and all timings per input, the server's peak RSS
(VmHWM from /proc) and whether the targets are met: each input's median (``target_s``: 1 s for one DICOM slice,
1.5 s for a whole-head DICOM series, 2 s for any other file) and the peak memory (1.5 GB).

    python benchmarks/app_latency.py [--runs 5] [--home DIR] [--file PATH ...] [--series NIFTI ...]
                                     [--same]

``--series NIFTI`` turns an axial NIfTI volume into the MR DICOM series a scanner would have written (one
file per slice, the header of the sequence its name says: ``dicom_series_from_nifti`` in
``tests/_fixtures_io.py``) and uploads all its files at once, as one selection in the file dialog; the page
stacks them into one volume.

``first_screen`` times the app's opening, before any upload: the server's start until it answers, then a
browser session opening the app until the demo case's verdict is visible, on the fresh server (``cold_s``:
imports, the demo case, its model) and in a second session (``next_session_s``).

By default every run uploads a new copy of a DICOM or NIfTI input with one pixel changed, or a new series (new
study, series and instance UIDs), so no cached analysis serves it: the latency of a clinic's next patient,
brain extraction and scoring included. ``--same`` uploads the same file every run (after the first, the
server's caches answer: what a user sees when opening the same scan again).

Needs Debian's chromium (``apt-get install -y chromium``) and the ``playwright`` package (never
``playwright install``). Without models in the registry, a tiny AE and VAE are trained into a temporary home.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _fixtures_io import write_dicom_series  # noqa: E402
from browser_utils import (  # noqa: E402
    chromium_available,
    chromium_page,
    make_fixture_models,
    peak_rss_bytes,
    streamlit_server,
    wait_for_app,
)

VERDICT = "percentile of normal validation images"
TARGET_SECONDS = 2.0
TARGET_DICOM_SLICE_SECONDS = 1.0
TARGET_SERIES_SECONDS = 1.5
TARGET_BYTES = 1.5 * 1024**3


def flair_dicom_slice(path: Path) -> Path:
    """One axial FLAIR slice of a real patient (the shipped BraTS demo patient, standardised intensities in
    stored units) as a single MR DICOM file whose header says FLAIR, like a slice exported from a PACS."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from ae4ad_core.assets import assets_dir
    from ae4ad_core.brats import load_real_slices

    patient = load_real_slices(assets_dir() / "real" / "brats2013.npz", "flair")[-1]
    i = int(np.argmax(patient.tumour.reshape(len(patient), -1).sum(1)))
    pixels = np.round((patient.images[i] + 3.5) * 1000).astype(np.uint16)  # z in stored units: z = v/1000 - 3.5
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "MR", "BRAIN", "AX T2 FLAIR"
    ds.RepetitionTime, ds.EchoTime, ds.InversionTime = 9000, 120, 2500
    ds.RescaleSlope, ds.RescaleIntercept = 0.001, -3.5
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 1], [1, 0, 0, 0, 1, 0], [0, 0, 0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def default_inputs(folder: Path) -> list[Path]:
    """A real patient's FLAIR slice as one DICOM file and 48 of its FLAIR brain slices as a NIfTI volume."""
    import nibabel as nib
    import numpy as np

    from ae4ad_core.assets import assets_dir
    from ae4ad_core.brats import load_real_slices

    patient = load_real_slices(assets_dir() / "real" / "brats2013.npz", "flair")[-1]
    mid = len(patient) // 2
    vol = np.transpose(patient.images[mid - 24: mid + 24], (2, 1, 0))  # (x, y, z) as the BraTS files store it
    nifti = folder / "patient_flair48.nii.gz"
    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0])), nifti)
    return [flair_dicom_slice(folder / "flair_slice.dcm"), nifti]


def load_zoo(page) -> list[str]:
    """Select every model once so the server holds the whole zoo (``st.cache_resource``)."""
    box = page.get_by_test_id("stSidebar").get_by_label("Model", exact=True)
    box.click()
    names = [t.strip() for t in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    for name in names:
        box.click()
        page.get_by_role("option", name=name, exact=True).click()
        wait_for_app(page, 120_000, start_ms=1500)
    return names


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc), to separate its work from waiting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The page opens on a demo case that has a verdict too, and Streamlit keeps the elements of the previous run on
# screen (marked data-stale) until the new run replaces them: waiting for any verdict text would stop at the demo
# case's stale one. The upload's verdict is a verdict in an element of the current run, on a page whose heading
# is the uploaded file's name.
_UPLOAD_VERDICT_SHOWN = """([verdict, name]) => {
    const live = (e) => !e.closest('[data-stale="true"]') && e.offsetParent !== null;
    const heading = [...document.querySelectorAll('h1, h2, h3')].some(h => h.innerText.trim() === name && live(h));
    const shown = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
        .some(e => e.innerText.includes(verdict) && live(e));
    return heading && shown;
}"""


_FIRST_VERDICT_SHOWN = """(verdict) => [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .some(e => e.innerText.includes(verdict) && !e.closest('[data-stale="true"]') && e.offsetParent !== null)"""


def time_first_screen(server) -> float:
    """Seconds from opening the app in a new browser session to the demo case's verdict being visible (the
    first screen: nothing clicked, nothing uploaded)."""
    with chromium_page() as page:
        start = time.perf_counter()
        page.goto(server.url)
        page.wait_for_function(_FIRST_VERDICT_SHOWN, arg=VERDICT, timeout=120_000, polling=20)
        seconds = time.perf_counter() - start
        wait_for_app(page, 120_000)
        return seconds


_UPLOAD_HEADING_SHOWN = """(name) => [...document.querySelectorAll('h1, h2, h3')]
    .some(h => h.innerText.trim() === name && !h.closest('[data-stale="true"]') && h.offsetParent !== null)"""


def upload_heading(paths: list[Path]) -> str:
    """The heading the Analyze page gives an upload: the name the reader gives the uploaded files (no folder
    names come from a browser), i.e. the file's name, or for one series its first file's and how many more."""
    from ae4ad_core.io.dicom_series import _series_name

    return _series_name([path.name for path in paths])


def time_upload(server, paths: list[Path]) -> tuple[float, float, float]:
    """Seconds from the upload of ``paths`` (one selection in the file dialog) to the upload's own verdict
    being visible, the server's CPU seconds meanwhile, and the seconds to the heading with the upload's name
    (the page's first element after reading and scoring: the rest of the verdict time is drawing the views and
    sending them)."""
    name = upload_heading(paths)
    with chromium_page() as page:
        page.goto(server.url)
        page.get_by_text("Analyze an image").wait_for(timeout=120_000)
        wait_for_app(page, 120_000)
        cpu = cpu_seconds(server.pid)
        start = time.perf_counter()
        page.locator('input[type="file"]').set_input_files([str(path) for path in paths])
        page.wait_for_function(_UPLOAD_HEADING_SHOWN, arg=name, timeout=120_000, polling=20)
        heading = time.perf_counter() - start
        page.wait_for_function(_UPLOAD_VERDICT_SHOWN, arg=[VERDICT, name], timeout=120_000, polling=20)
        seconds = time.perf_counter() - start
        wait_for_app(page, 120_000)  # let the run finish before the next session (and count its CPU)
        return seconds, cpu_seconds(server.pid) - cpu, heading


def distinct_copies(path: Path, n: int, folder: Path) -> list[Path]:
    """``n`` copies of a DICOM or NIfTI file under the same name, each with its last pixel changed: the same
    picture, but new content for the reading and scoring caches, as a clinic's next patient would be. The
    changed pixel is a corner, outside the brain, so the score and hence the charts drawn after the verdict
    (cached by score) usually stay as they were."""
    copies = []
    for k in range(n):
        (folder / f"copy{k}").mkdir(parents=True, exist_ok=True)
        copies.append(folder / f"copy{k}" / path.name)
        if path.name.endswith((".nii", ".nii.gz")):
            import nibabel as nib
            import numpy as np

            image = nib.load(path)
            voxels = np.asanyarray(image.dataobj).copy()
            voxels.flat[-1] = voxels.flat[-1] + (k + 1) * 7
            nib.save(nib.Nifti1Image(voxels, image.affine, image.header), copies[-1])
            continue
        import pydicom

        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.copy()
        pixels.flat[-1] = pixels.flat[-1] + (k + 1) * 7
        dataset.PixelData = pixels.tobytes()
        dataset.save_as(copies[-1])
    return copies


def series_uploads(nifti: Path, n: int, folder: Path, *, distinct: bool) -> list[list[Path]]:
    """The DICOM series of ``nifti`` for each of ``n`` runs: one series uploaded every run, or with
    ``distinct`` a new one every run (new UIDs: new content for every cache, as the next patient's scan)."""
    runs = range(n if distinct else 1)
    made = [write_dicom_series(nifti, folder / f"{nifti.name}-{k}", name="IM") for k in runs]
    return made if distinct else made * n


def target_for(name: str, files: list[Path], series_names: list[str]) -> float:
    """The median each input must reach: a whole-head DICOM series 1.5 s, one single-frame DICOM slice 1 s,
    any other file 2 s."""
    if name in series_names:
        return TARGET_SERIES_SECONDS
    if len(files) == 1 and not files[0].name.endswith((".nii", ".nii.gz")):
        import pydicom

        dataset = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        if "SOPClassUID" in dataset and int(dataset.get("NumberOfFrames", 1) or 1) == 1:
            return TARGET_DICOM_SLICE_SECONDS
    return TARGET_SECONDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="uploads per input (median reported)")
    parser.add_argument(
        "--home", default=None, help="AE4AD_HOME for the server (default: the usual registry)"
    )
    parser.add_argument("--file", action="append", default=None, help="input file(s); default DICOM + NIfTI")
    parser.add_argument(
        "--series",
        action="append",
        default=None,
        metavar="NIFTI",
        help="an axial NIfTI uploaded as its MR DICOM series (all files in one upload); repeatable",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the server (torch intra-op threads); default: torch's choice",
    )
    parser.add_argument(
        "--same",
        dest="distinct",
        action="store_false",
        help="upload the same file every run (cached after the first); default: a different copy of each "
        "DICOM or NIfTI input every run (one pixel changed; a series: new UIDs), as the next patient",
    )
    args = parser.parse_args(argv)
    if not chromium_available():
        print(json.dumps({"error": "chromium not found; apt-get install -y chromium"}))
        return 2

    from ae4ad_core.device import describe_device, select_device
    from ae4ad_core.registry import list_models

    with tempfile.TemporaryDirectory() as tmp:
        env = {} if args.threads is None else {"OMP_NUM_THREADS": str(args.threads)}
        load_start = os.getloadavg()[0]
        if args.home:
            env["AE4AD_HOME"] = args.home
        elif not list_models():
            make_fixture_models(Path(tmp) / "home")
            env["AE4AD_HOME"] = str(Path(tmp) / "home")
        default = [] if args.series else default_inputs(Path(tmp))
        files = [Path(f) for f in args.file] if args.file else default
        inputs: dict[str, list[list[Path]]] = {}  # input name -> the files uploaded in each run
        for k, path in enumerate(files):
            copies = distinct_copies(path, args.runs, Path(tmp) / f"distinct{k}") if args.distinct else None
            inputs[path.name] = [[copy] for copy in copies] if copies else [[path]] * args.runs
        series_names = []
        for path in map(Path, args.series or []):
            uploads = series_uploads(path, args.runs, Path(tmp) / "series", distinct=args.distinct)
            series_names.append(f"{path.name} as a DICOM series ({len(uploads[0])} files)")
            inputs[series_names[-1]] = uploads
        # Warm-up (the first scoring pays one-time imports) with an upload no distinct run repeats.
        first = (
            [files[0]]
            if files
            else series_uploads(Path(args.series[0]), 1, Path(tmp) / "warm-up", distinct=True)[0]
        )
        spawned = time.perf_counter()
        with streamlit_server(env=env, timeout=120) as server:
            ready = time.perf_counter() - spawned
            first_screen = {
                "server_ready_s": round(ready, 3),
                "cold_s": round(time_first_screen(server), 3),  # the server's first page: imports, demo, models
                "next_session_s": round(time_first_screen(server), 3),
            }
            with chromium_page() as page:
                page.goto(server.url)
                page.get_by_text("Analyze an image").wait_for(timeout=120_000)
                models = load_zoo(page)
            time_upload(server, first)
            results = {}
            for name, uploads in inputs.items():
                runs = [time_upload(server, upload) for upload in uploads]
                times, cpu, heading = [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]
                results[name] = {
                    "target_s": target_for(name, uploads[0], series_names),
                    "median_s": round(statistics.median(times), 3),
                    "all_s": [round(t, 3) for t in times],
                    "heading_median_s": round(statistics.median(heading), 3),
                    "server_cpu_s_median": round(statistics.median(cpu), 3),
                }
            peak = peak_rss_bytes(server.pid)
    report = {
        "benchmark": "upload to verdict visible (Analyze page, real chromium)",
        "runs_per_input": args.runs,
        "distinct_uploads": args.distinct,
        "first_screen": first_screen,
        "upload_to_verdict": results,
        "server_peak_rss_mb": None if peak is None else round(peak / 2**20, 1),
        "models_loaded": models,
        "device": describe_device(select_device()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "server_threads": args.threads or "default",
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "targets": {
            "latency_s": TARGET_SECONDS,
            "dicom_slice_latency_s": TARGET_DICOM_SLICE_SECONDS,
            "series_latency_s": TARGET_SERIES_SECONDS,
            "peak_rss_mb": TARGET_BYTES / 2**20,
        },
        "meets_latency_targets": all(r["median_s"] <= r["target_s"] for r in results.values()),
        "meets_memory_target": peak is None or peak <= TARGET_BYTES,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
