"""Latency of the Analyze page in a real browser, and the server's peak memory with the zoo loaded.

Starts ``streamlit run app.py`` on a free port, loads every model of the registry once (the zoo), then, for
each input, opens a fresh browser session, uploads the file through the real ``input[type=file]`` and times
until the verdict sentence is visible. Prints JSON: median and all timings per input, the server's peak RSS
(VmHWM from /proc) and whether the targets (<= 2 s, <= 1.5 GB) are met.

    python benchmarks/app_latency.py [--runs 5] [--home DIR] [--file PATH ...] [--distinct]

With ``--distinct`` every run uploads a new copy of the (DICOM) input with one pixel changed, so nothing is served
from a cache: the latency of a clinic's next patient rather than of the same file again.

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

from browser_utils import (  # noqa: E402
    chromium_available,
    chromium_page,
    make_fixture_models,
    peak_rss_bytes,
    streamlit_server,
    synthetic_brains,
    wait_for_app,
)

VERDICT = "percentile of normal validation images"
TARGET_SECONDS = 2.0
TARGET_BYTES = 1.5 * 1024**3


def default_inputs(folder: Path) -> list[Path]:
    """A DICOM slice (pydicom's CT_small.dcm) and a NIfTI volume of 48 slices of 128 x 128."""
    import nibabel as nib
    import numpy as np
    from pydicom.data import get_testdata_file

    vol = np.transpose(synthetic_brains(48, size=128, seed=11), (2, 1, 0)) * 1000.0
    nifti = folder / "volume48.nii.gz"
    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), nifti)
    return [Path(get_testdata_file("CT_small.dcm")), nifti]


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


_UPLOAD_HEADING_SHOWN = """(name) => [...document.querySelectorAll('h1, h2, h3')]
    .some(h => h.innerText.trim() === name && !h.closest('[data-stale="true"]') && h.offsetParent !== null)"""


def time_upload(server, path: Path) -> tuple[float, float, float]:
    """Seconds from the upload to the upload's own verdict being visible, the server's CPU seconds meanwhile,
    and the seconds to the heading with the file's name (the page's first element after reading and scoring:
    the rest of the verdict time is drawing the views and sending them)."""
    with chromium_page() as page:
        page.goto(server.url)
        page.get_by_text("Analyze an image").wait_for(timeout=120_000)
        wait_for_app(page, 120_000)
        cpu = cpu_seconds(server.pid)
        start = time.perf_counter()
        page.locator('input[type="file"]').set_input_files(str(path))
        page.wait_for_function(_UPLOAD_HEADING_SHOWN, arg=path.name, timeout=120_000, polling=20)
        heading = time.perf_counter() - start
        page.wait_for_function(_UPLOAD_VERDICT_SHOWN, arg=[VERDICT, path.name], timeout=120_000, polling=20)
        seconds = time.perf_counter() - start
        wait_for_app(page, 120_000)  # let the run finish before the next session (and count its CPU)
        return seconds, cpu_seconds(server.pid) - cpu, heading


def distinct_copies(path: Path, n: int, folder: Path) -> list[Path]:
    """``n`` copies of a DICOM file under the same name, each with one pixel changed: the same picture, but new
    content for every cache (reading, scoring, the charts), as a clinic's next patient would be."""
    import pydicom

    copies = []
    for k in range(n):
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.copy()
        pixels.flat[-1] = pixels.flat[-1] + (k + 1) * 7
        dataset.PixelData = pixels.tobytes()
        (folder / f"copy{k}").mkdir(parents=True, exist_ok=True)
        copies.append(folder / f"copy{k}" / path.name)
        dataset.save_as(copies[-1])
    return copies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="uploads per input (median reported)")
    parser.add_argument(
        "--home", default=None, help="AE4AD_HOME for the server (default: the usual registry)"
    )
    parser.add_argument("--file", action="append", default=None, help="input file(s); default DICOM + NIfTI")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the server (torch intra-op threads); default: torch's choice",
    )
    parser.add_argument(
        "--distinct",
        action="store_true",
        help="upload a different copy of each DICOM input every run (one pixel changed), so that no cache "
        "serves the reading, the scoring or the charts; default: the same file every run",
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
        inputs = [Path(f) for f in args.file] if args.file else default_inputs(Path(tmp))
        with streamlit_server(env=env, timeout=120) as server:
            with chromium_page() as page:
                page.goto(server.url)
                page.get_by_text("Analyze an image").wait_for(timeout=120_000)
                models = load_zoo(page)
            time_upload(server, inputs[0])  # warm-up: first scoring pays one-time imports
            results = {}
            for path in inputs:
                uploads = (
                    distinct_copies(path, args.runs, Path(tmp) / "distinct")
                    if args.distinct
                    else [path] * args.runs
                )
                runs = [time_upload(server, upload) for upload in uploads]
                times, cpu, heading = [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]
                results[path.name] = {
                    "median_s": round(statistics.median(times), 3),
                    "all_s": [round(t, 3) for t in times],
                    "heading_median_s": round(statistics.median(heading), 3),
                    "server_cpu_s_median": round(statistics.median(cpu), 3),
                }
            peak = peak_rss_bytes(server.pid)
    worst = max(r["median_s"] for r in results.values())
    report = {
        "benchmark": "upload to verdict visible (Analyze page, real chromium)",
        "runs_per_input": args.runs,
        "distinct_uploads": args.distinct,
        "upload_to_verdict": results,
        "server_peak_rss_mb": None if peak is None else round(peak / 2**20, 1),
        "models_loaded": models,
        "device": describe_device(select_device()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "server_threads": args.threads or "default",
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "targets": {"latency_s": TARGET_SECONDS, "peak_rss_mb": TARGET_BYTES / 2**20},
        "meets_targets": worst <= TARGET_SECONDS and (peak is None or peak <= TARGET_BYTES),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
