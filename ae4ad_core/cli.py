"""The ``ae4ad`` command line.

Commands::

    ae4ad info FILE [FILE ...]            what was read (format, shape, de-identified metadata)
    ae4ad score FILE|SERIES_DIR [--model M] --mode reconstruction|kl|combined [--out DIR] [--slices 3,4]
                [--dicom]                         also DICOM Parametric Map + Segmentation (DICOM input)
    ae4ad models                          the registry (shipped zoo + user models)
    ae4ad train ...                       train, calibrate and register (see ``ae4ad train -h``)
    ae4ad evaluate --model M --data demo|PATH [--out DIR]
    ae4ad screen PATH --model M --out results.csv|.parquet   (resumable; torchrun-shardable)
    ae4ad sweep --data demo --d 1,2,4 --seeds 3 --epochs E [--jobs N] [--out DIR]
    ae4ad data build-demo [--out PATH]    rebuild the demo dataset from packaged brains

Errors from bad input are printed as one line (``error: <file>: <reason>``), exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import (
    Ae4adError,
    InvalidOptionError,
    SliceSelectionError,
    UnreadableImageError,
    UnsupportedImageError,
)

__all__ = ["main", "run"]


def _parse_indices(text: str | None) -> list[int] | None:
    """``"3,4,10-12"`` -> ``[3, 4, 10, 11, 12]``; ``None`` for an empty text."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise InvalidOptionError(f"{text!r}: expected numbers or ranges such as 3,4,10-12.") from None
    return out


def cmd_info(args) -> int:
    from .io import read_image

    status = 0
    for path in args.files:
        try:
            img = read_image(path, include_identifiers=args.identifiers)
        except Ae4adError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        print(json.dumps({
            "name": img.name, "format": img.format, "shape": list(img.pixels.shape),
            "min": float(img.pixels.min()), "max": float(img.pixels.max()),
            "default_window": img.default_window, "spacing": img.spacing, "metadata": img.metadata,
        }, indent=1, default=str))
    return status


def cmd_models(args) -> int:
    if args.json:  # full cards: validated with the model classes (imports torch)
        from .registry import list_models

        cards = list_models()
        print(json.dumps([c.to_dict() | {"calibration": None, "latent": None} for c in cards], indent=1))
        return 0
    from .cards import list_card_summaries

    cards = list_card_summaries()  # card JSON only: answers without importing torch
    if args.markdown:
        print(zoo_markdown_table(cards))
        return 0
    from .model_summary import SEQUENCE_WORDS, card_sequence

    print(f"{'name':<22}{'kind':<10}{'sequence':<10}{'d':>5}{'size':>6}  {'image AUROC':>11}  "
          f"{'pixel AP':>8}  {'H_gauss (nats)':>14}  description")
    for c in cards:
        auroc = c.metrics.get("reconstruction", {}).get("image_auroc")
        ap = c.metrics.get("reconstruction", {}).get("pixel_ap")
        ent = c.latent.get("entropy_gaussian_nats") if c.kind not in ("intensity", "dae") else None
        seq = card_sequence(c)
        seq = SEQUENCE_WORDS.get(seq, seq) if seq else ""
        print(f"{c.name:<22}{c.kind:<10}{seq:<10}{c.latent_dim:>5}{c.image_size:>6}  "
              f"{'' if auroc is None else f'{auroc:.3f}':>11}  {'' if ap is None else f'{ap:.3f}':>8}  "
              f"{'' if ent is None else f'{ent:.1f}':>14}  {c.description}")
    return 0


def zoo_markdown_table(cards) -> str:
    """The Models page's zoo table in Markdown (:func:`ae4ad_core.model_summary.zoo_rows`): one row per model
    and scoring mode, with sequence, training data, pixel AP, level-matched AUROC and the difference to the
    same-sequence intensity baseline; then, when ``assets/real/crossval.json`` is shipped, the page's
    cross-validated table per sequence (mean ± std over left-out patients, baseline first)."""
    from .model_summary import SEQUENCE_WORDS, crossval_rows, load_crossval_report, zoo_markdown, zoo_rows

    parts = [zoo_markdown(zoo_rows(cards))]
    report = load_crossval_report()
    for seq in report or {}:
        if rows := crossval_rows(report, seq):
            parts.append(f"Cross-validated over patients, {SEQUENCE_WORDS.get(seq, seq)} (mean ± std):\n\n"
                         + zoo_markdown(rows))
    return "\n\n".join(parts)


def _stem(name: str) -> str:
    """File name without its extension(s): ``scan.nii.gz`` -> ``scan``."""
    stem = Path(name).name
    for suffix in (".gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem or "image"


def _read_score_input(path: str):
    """The image to score and the file(s) it came from: a file, or a folder holding one DICOM series."""
    from .io import read_image, read_images

    folder = Path(path)
    if not folder.is_dir():
        return read_image(path), [folder]
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise UnreadableImageError(f"{folder.name}: the folder holds no files to read as a DICOM series.")
    images, errors = read_images(files)
    if errors:
        name, reason = errors[0]
        raise UnreadableImageError(reason if reason.startswith(name) else f"{name}: {reason}")
    if len(images) != 1:
        raise UnsupportedImageError(
            f"{folder.name}: the folder holds {len(images)} images or series; give a folder holding one DICOM "
            "series, or one file."
        )
    return images[0], files


def cmd_score(args) -> int:
    from tqdm.auto import tqdm

    from .analysis import analyze_image
    from .registry import load_model
    from .render import overlay_rgb

    if args.dicom and not args.out:
        raise Ae4adError("--dicom writes files: give the folder with --out DIR.")
    img, files = _read_score_input(args.file)
    if args.dicom and img.format not in ("dicom", "dicom-series"):
        from .dicom_results import DICOM_INPUT_NEEDED

        raise UnsupportedImageError(f"{img.name}: {DICOM_INPUT_NEEDED}; this is a {img.format} image.")
    from .model_choice import choose_model
    from .sequence import detect_sequence

    guess = detect_sequence(img)
    choice = choose_model(guess)
    if args.model is None and choice.model is None:
        print(f"{img.name}: no model fits. {choice.reason}")
        return 2
    loaded = load_model(args.model or choice.model, device=args.device)
    indices = _parse_indices(args.slices) or list(range(img.n_slices))
    outside = [i for i in indices if not 0 <= i < img.n_slices]
    if outside:
        raise SliceSelectionError(
            f"{img.name}: slice {outside[0]} does not exist; the image has {img.n_slices} slice(s) "
            f"(0-{img.n_slices - 1})."
        )
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    # Brain extraction and standardisation as the model's training data, then scoring (batched inside).
    whole = analyze_image(img, loaded, mode=args.mode, guess=guess, slice_indices=indices)
    res = whole.analysis
    results = res.records()
    analyses = [res]
    if out:
        from PIL import Image as PILImage

        for i, idx in enumerate(tqdm(res.slice_indices, desc="maps", unit="slice", disable=len(indices) <= 32)):
            rgb = overlay_rgb(img.pixels[idx], res.map_in_input_space(i), vmax=res.display_max, alpha=0.5,
                              outline=res.outline_in_input_space(i), window=img.default_window)
            PILImage.fromarray(rgb).save(out / f"{_stem(img.name)}_slice{idx:03d}_{args.mode}.png")
    payload = {"file": img.name, "model": loaded.name, "mode": args.mode, "device": str(loaded.device),
               "volume_score": max(r["score"] for r in results),
               "volume_above_threshold": any(r["above_threshold"] for r in results), "slices": results,
               **whole.to_record()}
    datasets = None  # the source DICOM files re-read with identifiers, once, for the DICOM and NIfTI outputs
    if args.dicom:
        from .dicom_results import read_source_datasets, write_dicom_results

        datasets = read_source_datasets(files, image=img)
        written = write_dicom_results(datasets, analyses, out, stem=_stem(img.name))
        payload["dicom"] = [p.name for p in written]
    if out and img.format in ("nifti", "dicom-series"):  # the map in the input's voxel grid (MOOD format)
        from .nifti_maps import write_nifti_map

        source = Path(args.file) if img.format == "nifti" else None
        series = datasets
        if img.format == "dicom-series" and series is None:
            from .dicom_results import read_source_datasets

            series = read_source_datasets(files, image=img)
        payload["nifti_map"] = write_nifti_map(img, analyses, out, source=source, datasets=series,
                                               stem=_stem(img.name), mode=args.mode).name
    text = json.dumps(payload, indent=1)
    if out:
        (out / f"{_stem(img.name)}_{args.mode}.json").write_text(text)
        if args.dicom:
            print(f"wrote {', '.join(str(p) for p in written)} (these DICOM files carry the patient's identifiers)")
        print(f"wrote {out}")
    else:
        print(text)
    if args.model is not None and whole.warning:  # after the result, so errors stay one line
        print(f"warning: {whole.warning}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from .data import load_dataset
    from .evaluation import evaluate_all_modes, save_evaluation
    from .registry import load_model

    loaded = load_model(args.model, device=args.device)
    dataset = load_dataset(args.data)
    if dataset.test is None or not len(dataset.test.images):
        raise Ae4adError(f"{args.data}: the dataset has no test split with labels to evaluate on.")
    results = evaluate_all_modes(loaded, dataset.test)
    summary = {m: {k: v for k, v in r.to_dict().items() if k != "curves"} for m, r in results.items()}
    print(json.dumps(summary, indent=1))
    if args.update_card:
        from .registry import CARD_FILE, find_model_dir

        folder = find_model_dir(args.model)
        card = loaded.card.replace(metrics={m: r.to_dict() for m, r in results.items()})
        (folder / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=1, allow_nan=False))
        print(f"updated {folder / CARD_FILE}")
    if args.out:
        for p in save_evaluation(results, Path(args.out)):
            print(f"wrote {p}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import SweepConfig, run_sweep

    seeds = tuple(range(int(args.seeds))) if args.seeds.isdigit() else tuple(_parse_indices(args.seeds.strip("[]")))
    config = SweepConfig(
        data=args.data, dims=tuple(_parse_indices(args.d)), seeds=seeds, epochs=args.epochs, kind=args.kind,
        image_size=args.size, out=Path(args.out), jobs=args.jobs, device=args.device,
        extra_args=tuple(args.train_args or ()),
    )
    summary = run_sweep(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    print(f"wrote {Path(args.out) / 'sweep.csv'}, sweep.json, sweep.png")
    return 0


def cmd_build_demo(args) -> int:
    from .demo_build import build_demo_dataset

    summary = build_demo_dataset(Path(args.out), seed=args.seed)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_build_brats(args) -> int:
    from .brats import build_brats_layout

    test = [t.strip() for t in args.split.split(",") if t.strip()] if args.split else None
    summary = build_brats_layout(args.src, args.out, sequence=args.sequence, test_patients=test, seed=args.seed)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_build_real(args) -> int:
    from .brats import build_real_asset

    path = build_real_asset(args.src, args.out, sequences=[s.strip() for s in args.sequences.split(",")])
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ae4ad", description="Autoencoder anomaly detection for medical images.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe image files (de-identified)")
    p.add_argument("files", nargs="+")
    p.add_argument("--identifiers", action="store_true", help="include patient identifiers (off by default)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list the registry")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true", help="the evaluation table (as in the README)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("score", help="score an image file or DICOM series folder: maps as PNG, scores as JSON")
    p.add_argument("file", help="an image file, or a folder holding the files of one DICOM series")
    p.add_argument("--model", default=None,
                   help="default: the model trained on the scan's sequence (exit status 2 when none fits)")
    p.add_argument("--mode", default="reconstruction", choices=["reconstruction", "kl", "combined", "mse"],
                   help="reconstruction: the card's map scoring; mse: the AE4AD paper's plain squared error")
    p.add_argument("--slices", default=None, help="e.g. 3,4,10-12 (default: all)")
    p.add_argument("--out", default=None, help="folder for PNG maps and the JSON result")
    p.add_argument("--device", default=None)
    p.add_argument("--dicom", action="store_true",
                   help="also write the map as a DICOM Parametric Map and the above-threshold region as a DICOM "
                        "Segmentation in the source's study (DICOM input only; these carry patient identifiers)")
    p.set_defaults(func=cmd_score)

    sub.add_parser("train", help="train, calibrate and register a model", add_help=False)
    sub.add_parser("screen", help="score a folder tree of files into CSV/Parquet (resumable)", add_help=False)

    p = sub.add_parser("evaluate", help="evaluate a model on a labelled test split")
    p.add_argument("--model", default=None,
                   help="default: the model trained on the scan's sequence (exit status 2 when none fits)")
    p.add_argument("--data", default="demo",
                   help="'demo', a MedIAnomaly/BraTS layout folder, or real:flair|t1c[:patient,...] (shipped patients)")
    p.add_argument("--out", default=None)
    p.add_argument("--update-card", action="store_true", help="store the metrics in the model's card")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sweep", help="AE4AD latent-size sweep with latent entropy (resumable)")
    p.add_argument("--data", default="demo")
    p.add_argument("--d", default="1,2,4,8,16,32,64,128", help="latent sizes, e.g. 1,2,4,8")
    p.add_argument("--seeds", default="3", help="number of seeds (N) or a list like [0,1]")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--kind", default="ae", choices=["ae", "vae", "rdae"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel (subprocesses)")
    p.add_argument("--device", default=None)
    p.add_argument("train_args", nargs="*", help="extra arguments for 'ae4ad train' after --")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("build-demo", help="rebuild assets/demo/demo.npz from brains shipped in packages")
    from .assets import assets_dir

    q.add_argument("--out", default=str(assets_dir() / "demo" / "demo.npz"))
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_build_demo)
    q = dsub.add_parser("build-brats", help="MedIAnomaly BraTS layout (train/, test/normal|tumor|annotation) from "
                        "BraTS 2013/2021/2023 patient folders, split by patient")
    q.add_argument("src", help="folder holding BraTS patient folders")
    q.add_argument("--out", required=True)
    q.add_argument("--sequence", default="flair", choices=["flair", "t1c", "t1", "t2"])
    q.add_argument("--split", default=None, help="comma-separated test patients (default: a seeded 20%%)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_build_brats)
    q = dsub.add_parser("build-real", help="rebuild the shipped real-patient slices (assets/real) from BraTS folders")
    q.add_argument("src", help="folder holding BraTS patient folders (e.g. the four BraTS 2013 patients)")
    q.add_argument("--out", default=str(assets_dir() / "real" / "brats2013.npz"))
    q.add_argument("--sequences", default="flair,t1c")
    q.set_defaults(func=cmd_build_real)
    sub.add_parser("crossval", help="leave-one-patient-out evaluation of the real-patient recipe; registers one "
                   "fold's models (--ship-fold)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            from .training import main as train_main

            return train_main(argv[1:])
        if argv and argv[0] == "screen":
            from .screening import main as screen_main

            return screen_main(argv[1:])
        if argv and argv[0] == "crossval":
            from .crossval import main as crossval_main

            return crossval_main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except Ae4adError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (``ae4ad models | head``)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0


def _requested_device(argv: list[str]) -> str | None:
    """The value of a ``--device`` option in ``argv`` (``--device X`` or ``--device=X``), else ``None``."""
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
    return None


def run() -> None:
    """The ``ae4ad`` console command: :func:`main`, then a quick exit.

    Before anything imports torch, torch is told not to search the installed packages for out-of-tree device
    extensions (:func:`ae4ad_core.device.skip_device_plugins`; unless ``--device`` or ``AE4AD_DEVICE`` names
    one, or the user set ``TORCH_DEVICE_BACKEND_AUTOLOAD``).

    Once a command has imported torch, the interpreter's own shutdown (tearing down every module object) takes
    most of a second on a small machine, longer than many commands. The exit handlers still run (``atexit``:
    process pools, temporary folders, logging) and both output streams are flushed; only the teardown of
    module objects, which writes nothing, is skipped.
    """
    import atexit
    import os

    from .device import skip_device_plugins

    skip_device_plugins(_requested_device(sys.argv[1:]))
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
