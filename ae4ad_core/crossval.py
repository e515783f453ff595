"""Leave-one-patient-out evaluation on real patients, with every setting chosen on validation data.

Four patients are little, so every figure the README gives for real patients is a mean +- std over folds: in
fold *k* one patient is the test patient and is never looked at until its metrics are computed. Of the other
patients, the one after the test patient (in name order, cyclically) is the **calibration** patient and the
rest are **training** patients:

* the model trains on the tumour-free slices of the training patients only;
* the map scoring (:class:`~ae4ad_core.postprocess.MapScoring`: residual sign, smoothing, brain-mask erosion,
  slice aggregation) is chosen on the **validation** set: the calibration patient's slices plus the tumour
  slices of the training patients (never seen by the model, which trained on their normal slices) -- pixel AP
  decides the map, then slice AUROC decides the aggregation (see :func:`choose_scoring`);
* thresholds are calibrated on the calibration patient's normal slices, which the model never trained on;
* the test patient's slices give the metrics: pixel AP and Dice at the input resolution inside the brain,
  slice AUROC/AP and the level-matched slice AUROC, for the product's scoring and for the paper's plain squared
  error (``mse`` mode) side by side.

The same recipe makes the shipped models (:func:`train_fold_model` on the fold whose test patient becomes the
app's demo cases). Seeds are fixed; results are reproducible on the CPU.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .brats import PatientSlices
from .model_summary import CROSSVAL_FILE, load_crossval_report  # noqa: F401 - re-exported for the pages
from .postprocess import MapScoring
from .preprocess import PreprocessConfig

__all__ = [
    "REAL_PREPROCESSING",
    "SCORING_GRID",
    "AGGREGATE_GRID",
    "Fold",
    "leave_one_patient_out",
    "choose_scoring",
    "FoldModel",
    "train_fold_model",
    "evaluate_fold",
    "run_crossval",
    "summarise",
    "real_specs",
    "label_free_latent_dim",
    "finalise",
    "rescore",
    "score_fold_model",
    "REAL_DATA_LICENCE",
    "crossval_report",
    "crossval_markdown",
    "load_crossval_report",
]

REAL_PREPROCESSING = PreprocessConfig(size=64, intensity="window", center=1.0, width=9.0)
"""Standardised intensities (z inside the brain) in the window [-3.5, 5.5] (:data:`ae4ad_core.brats.Z_WINDOW`)
mapped to [-1, 1], resized to 64 px: background at -1, brain above it."""

SCORING_GRID = [
    MapScoring(residual=r, smooth_sigma=s, brain_only=True, brain_erosion=e, aggregate="quantile", quantile=0.99)
    for r, s, e in itertools.product(("squared", "positive", "absolute"), (0.0, 1.0, 2.0), (0, 2))
]
"""Map choices tried on validation (pixel AP decides); each also with the intensity prior
(:func:`ae4ad_core.postprocess.fit_intensity_prior` on the training normals)."""
AGGREGATE_GRID = [("mean", 0.99), ("quantile", 0.9), ("quantile", 0.95), ("quantile", 0.99), ("quantile", 0.999),
                  ("squared_error", 0.99)]
"""Slice aggregations tried on validation once the map is fixed (slice AUROC decides)."""


@dataclass(frozen=True)
class Fold:
    """One leave-one-patient-out fold."""

    test: str
    calibration: str
    train: tuple[str, ...]


def leave_one_patient_out(patients: list[str]) -> list[Fold]:
    """One fold per patient (sorted names): the next patient cyclically calibrates, the rest train."""
    names = sorted(patients)
    if len(names) < 3:
        raise ValueError(f"Leave-one-patient-out with a calibration patient needs >= 3 patients, got {names}.")
    folds = []
    for i, test in enumerate(names):
        cal = names[(i + 1) % len(names)]
        folds.append(Fold(test=test, calibration=cal, train=tuple(n for n in names if n not in (test, cal))))
    return folds


def _stack(parts: list[PatientSlices], *, tumour: bool | None = None,
           tumour_only: tuple[str, ...] = ()) -> SimpleNamespace:  # fmt: skip
    """Slices of several patients as one evaluation set; ``tumour`` True/False keeps only those slices, and the
    patients named in ``tumour_only`` contribute their tumour slices only."""
    images, masks, brain, labels, subjects = [], [], [], [], []
    for p in parts:
        want = True if p.patient in tumour_only else tumour
        sel = np.ones(len(p), bool) if want is None else (p.labels == int(want))
        images.append(p.images[sel])
        masks.append(p.tumour[sel])
        brain.append(p.brain[sel])
        labels.append(p.labels[sel])
        subjects += [p.patient] * int(sel.sum())
    return SimpleNamespace(images=np.concatenate(images), masks=np.concatenate(masks),
                           brain=np.concatenate(brain), labels=np.concatenate(labels),
                           subjects=np.array(subjects))


def _model_space_truth(data: SimpleNamespace, x_geoms, size: int):
    from .evaluation import mask_to_model_space

    return np.stack([mask_to_model_space(m, g, size) for m, g in zip(data.masks, x_geoms, strict=True)])


def choose_scoring(inference, validation: SimpleNamespace, *, prep: PreprocessConfig = REAL_PREPROCESSING,
                   batch_size: int = 128, prior_level: float | None = None) -> tuple[MapScoring, dict]:  # fmt: skip
    """Choose the map scoring of a trained model on labelled validation slices (never the test patient).

    Rule: among :data:`SCORING_GRID` (each rule also with the intensity prior ``prior_level`` when given), the
    map with the highest pooled pixel AP over brain pixels in model space; then, among :data:`AGGREGATE_GRID`
    (mean or quantiles of that map, or the paper's mean squared error), the slice aggregation with the highest
    slice AUROC over the validation slices of patients the model never trained on (``validation.unseen``, a
    boolean per slice; all slices when absent; ties: the earlier one). Returns the rule and what was measured.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    from .postprocess import aggregate_scores, brain_mask, finish_maps, residual_map
    from .preprocess import prepare_slices

    x, geoms = prepare_slices(list(validation.images), prep)
    truth = _model_space_truth(validation, geoms, prep.size)
    with torch.inference_mode():
        recon = torch.cat([inference(x[i: i + batch_size]).reconstruction.float()
                           for i in range(0, len(x), batch_size)])
    best, best_ap, table = None, -1.0, []
    residuals = {r: residual_map(x, recon, r) for r in ("squared", "positive", "absolute")}
    grid = SCORING_GRID + ([replace(r, intensity_prior=prior_level) for r in SCORING_GRID]
                           if prior_level is not None else [])
    for rule in grid:
        maps = finish_maps(residuals[rule.residual], x, rule)
        inside = brain_mask(x, 0).numpy()
        ap = float(average_precision_score(truth[inside], maps.numpy()[inside]))
        table.append({"rule": rule.to_dict(), "pixel_ap": ap})
        if ap > best_ap + 1e-9:
            best, best_ap = rule, ap
    maps = finish_maps(residuals[best.residual], x, best)
    labels = np.asarray(validation.labels)
    # Slice scores are compared only among slices of patients the model never trained on (``unseen``): a
    # patient's tumour slices share anatomy and scanner with its normal slices, so mixing trained-on and unseen
    # patients would reward scores that recognise the patient rather than the tumour.
    unseen = np.asarray(getattr(validation, "unseen", np.ones(len(labels), bool)), bool)
    if len(set(labels[unseen].tolist())) < 2:
        unseen = np.ones(len(labels), bool)
    best_auc, chosen = -1.0, best
    aggregates = []
    for agg, q in AGGREGATE_GRID:
        rule = replace(best, aggregate=agg, quantile=q)
        scores = aggregate_scores(maps, x, rule, recon).numpy()
        auc = float(roc_auc_score(labels[unseen], scores[unseen]))
        aggregates.append({"aggregate": agg, "quantile": q, "slice_auroc": auc})
        if auc > best_auc + 1e-9:
            best_auc, chosen = auc, rule
    return chosen, {"maps": table, "aggregates": aggregates, "validation_pixel_ap": best_ap,
                    "validation_slice_auroc": best_auc, "n_validation_slices": int(len(labels))}


@dataclass
class FoldModel:
    """A model trained, scored and calibrated in one fold."""

    loaded: object  # LoadedModel
    fold: Fold
    choice: dict
    seconds: float


def train_fold_model(config, by_patient: dict[str, PatientSlices], fold: Fold, *, name: str,
                     sequence: str, prep: PreprocessConfig = REAL_PREPROCESSING,
                     description: str = "", progress: bool = False) -> FoldModel:  # fmt: skip
    """Train ``config`` on the fold's training normals, choose its map scoring on validation, calibrate on the
    calibration patient's normals; returns an in-memory :class:`~ae4ad_core.registry.LoadedModel`."""
    from .training import round_like_stored, train

    t0 = time.perf_counter()
    train_set = _stack([by_patient[p] for p in fold.train], tumour=False)
    cal_normals = _stack([by_patient[fold.calibration]], tumour=False)
    result = train(config, train_set.images, cal_normals.images, preprocessing=prep, device="cpu",
                   progress=progress)
    model = round_like_stored(result.model, config.weights_dtype)  # choose and calibrate on what ships
    last = result.history[-1] if result.history else {}
    training = {"config": config.to_dict(), "final_loss": last.get("loss"),
                "final_val_loss": next((h["val_loss"] for h in reversed(result.history) if "val_loss" in h), None),
                "seconds": result.seconds, "device": result.device, "history": result.history}
    fm = score_fold_model(model, config, by_patient, fold, name=name, sequence=sequence, prep=prep,
                          description=description, training=training)
    fm.seconds = time.perf_counter() - t0
    return fm


def score_fold_model(model, config, by_patient: dict[str, PatientSlices], fold: Fold, *, name: str,
                     sequence: str, prep: PreprocessConfig = REAL_PREPROCESSING, description: str = "",
                     training: dict | None = None) -> FoldModel:  # fmt: skip
    """The part of :func:`train_fold_model` after training: choose the map scoring on validation, calibrate on
    the calibration patient's normals, build the card. Also re-scores a kept fold model (:func:`rescore`)."""
    from .calibration import calibrate
    from .models import fuse_for_inference
    from .postprocess import fit_intensity_prior
    from .registry import LoadedModel, ModelCard
    from .training import model_inputs

    t0 = time.perf_counter()
    train_set = _stack([by_patient[p] for p in fold.train], tumour=False)
    cal_normals = _stack([by_patient[fold.calibration]], tumour=False)
    inference = fuse_for_inference(model)
    # the calibration patient's slices and the training patients' tumour slices (their normals were trained on)
    validation = _stack([by_patient[p] for p in (fold.calibration, *fold.train)], tumour_only=fold.train)
    validation.unseen = validation.subjects == fold.calibration
    prior = fit_intensity_prior(model_inputs(train_set.images, prep))
    rule, choice = choose_scoring(inference, validation, prep=prep, prior_level=prior)
    cal = calibrate(inference, model_inputs(cal_normals.images, prep), fpr=config.fpr, scoring=rule)
    cal_fields, latent_fields = cal.to_card_fields()
    card = ModelCard(
        name=name, architecture=config.model_config(), preprocessing=prep, description=description,
        training_data={
            "sequence": sequence, "n_train": int(len(train_set.images)), "n_val_normal": int(len(cal_normals.images)),
            "train_subjects": list(fold.train), "val_subjects": [fold.calibration], "test_subjects": [fold.test],
        },
        training=dict(training or {}),
        calibration=cal_fields, latent=latent_fields,
        scoring={"rule": rule.to_dict(), "description": rule.describe(),
                 "chosen_by": "validation: pixel AP over brain pixels picks the map (slices of "
                              f"{fold.calibration} + tumour slices of {', '.join(fold.train)}), slice AUROC on "
                              f"{fold.calibration} (never trained on) the slice score; never the test patient",
                 "validation": {k: v for k, v in choice.items() if k not in ("maps",)}},
        weights_dtype=config.weights_dtype,
    )
    loaded = LoadedModel(card=card, model=model, inference=inference, device=torch.device("cpu"))
    return FoldModel(loaded=loaded, fold=fold, choice=choice, seconds=time.perf_counter() - t0)


def rescore(rows_path: Path | str, by_patient: dict[str, PatientSlices], *, keep_root: Path | str,
            ship_root: Path | str | None = None, ship_fold: str | None = None) -> list[dict]:  # fmt: skip
    """Re-choose the scoring, recalibrate and re-evaluate every kept fold model of a results file (after the
    scoring grid changed), without training again; rewrites the file, and the shipped fold's models."""
    from .registry import load_model

    path = Path(rows_path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    folds = {f.test: f for f in leave_one_patient_out(list(by_patient))}
    out = []
    for row in rows:
        seq, name, fold = row["sequence"], row["model"], folds[row["fold"]]
        folder = Path(keep_root) / f"{seq}-{name}--{fold.test}"
        kept = load_model(folder, device="cpu")
        from .training import TrainConfig

        cfg = kept.card.training.get("config", {})
        config = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()})
        shipped = ship_root is not None and fold.test == ship_fold
        fm = score_fold_model(kept.model, config, by_patient, fold, name=f"{seq}-{name}" if shipped else name,
                              sequence=seq, description=model_description(config, seq) if shipped else "",
                              training=kept.card.training)
        metrics = evaluate_fold(fm, by_patient[fold.test], shipped_to=ship_root if shipped else None)
        out.append(dict(row, scoring=fm.loaded.card.scoring["rule"], validation=fm.choice["aggregates"],
                        validation_pixel_ap=fm.choice["validation_pixel_ap"], metrics=metrics,
                        entropy_gaussian_nats=fm.loaded.card.latent.get("entropy_gaussian_nats"),
                        entropy_knn_nats=fm.loaded.card.latent.get("entropy_knn_nats"),
                        effective_dim=fm.loaded.card.latent.get("effective_dim")))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in out))
    tmp.replace(path)
    return out


def evaluate_fold(fm: FoldModel, test: PatientSlices, *, shipped_to: Path | str | None = None) -> dict:
    """Metrics of a fold's model on its test patient, in every calibrated mode (``{mode: summary}``); with
    ``shipped_to`` the model is registered there too (:func:`ship_card`)."""
    from .evaluation import evaluate_all_modes
    from .registry import save_model

    results = evaluate_all_modes(fm.loaded, _stack([test]), batch_size=128)
    if shipped_to is not None:
        save_model(fm.loaded.model, ship_card(fm.loaded.card, results, fold=fm.fold), shipped_to)
    return {mode: r.summary() for mode, r in results.items()}


def model_description(config, sequence: str) -> str:
    """The one-line card description of a real-patient model."""
    seq_word = {"flair": "FLAIR", "t1c": "T1c", "t1": "T1", "t2": "T2"}[sequence]
    size = f", d={config.latent_dim}" if config.kind in ("ae", "vae", "rdae") else ""
    return (f"{seq_word}, real glioma patients: {_KIND_WORDS[config.kind]}{size}; 64 px; licence "
            f"{REAL_DATA_LICENCE.split(' (')[0]}")


def ship_card(card, results: dict, *, fold: Fold):
    """The card of a shipped real-patient model: its held-out patient's metrics (with curves), data, sequence,
    licence and intended input."""
    seq = card.training_data["sequence"]
    seq_word = {"flair": "FLAIR", "t1c": "T1c", "t1": "T1", "t2": "T2"}[seq]
    return card.replace(
        metrics={m: r.to_dict() for m, r in results.items()},
        training_data=dict(
            card.training_data, source=REAL_DATA_SOURCE, licence=REAL_DATA_LICENCE, demo_patient=fold.test,
            intended_input=(f"axial {seq_word} brain slices, skull-stripped and standardised (z-scored inside the "
                            "brain, background at or below z = -3.5), as the BraTS releases provide them"),
        ),
        provenance={"command": f"ae4ad crossval --sequence {seq} --ship-fold {fold.test}",
                    "date": time.strftime("%Y-%m-%d", time.gmtime()), "library": "ae4ad_core"},
    )


def finalise(rows: list[dict], *, models_root: Path | str, report_path: Path | str) -> dict:
    """After a cross-validation: write :func:`crossval_report` to ``report_path`` and add each shipped model's
    cross-validated summary (and the label-free d) to its card in ``models_root``."""
    from .registry import CARD_FILE, load_card

    report = crossval_report(rows)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(json.dumps(report, indent=1))
    for seq, entry in report.items():
        for folder in sorted(Path(models_root).glob(f"{seq}-*")):
            if not (folder / CARD_FILE).is_file():
                continue
            card = load_card(folder)
            name = folder.name[len(seq) + 1:]
            rows_for = [e for e in entry["summary"] if e["model"] == name]
            if not rows_for:
                continue
            card = card.replace(training=dict(card.training, crossval=rows_for,
                                              label_free_latent_dim=entry.get("label_free")))
            (folder / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=1, allow_nan=False))
    return report


def run_crossval(specs: dict, by_patient: dict[str, PatientSlices], *, sequence: str, out: Path | str,
                 progress: bool = False, ship_fold: str | None = None,
                 ship_root: Path | str | None = None,
                 keep_root: Path | str | None = None) -> list[dict]:  # fmt: skip
    """Every spec (``{name: TrainConfig}``) in every fold; one JSON row per (model, fold) appended to
    ``out`` (JSON lines) as it finishes, so an interrupted run resumes where it stopped.

    The model of the fold whose test patient is ``ship_fold`` is also registered in ``ship_root`` as
    ``<sequence>-<name>`` (:func:`ship_card`): the shipped models are exactly the ones this fold measured.
    With ``keep_root`` every fold's model is kept there too (``<sequence>-<name>--<fold>``), so the scoring can be
    re-chosen later without training again."""
    out = Path(out)
    done = set()
    rows = []
    if out.is_file():
        for line in out.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append(row)
                done.add((row["model"], row["fold"]))
    folds = leave_one_patient_out(list(by_patient))
    for name, config in specs.items():
        for fold in folds:
            if (name, fold.test) in done:
                continue
            shipped = ship_root is not None and fold.test == ship_fold
            fm = train_fold_model(config, by_patient, fold, name=f"{sequence}-{name}" if shipped else name,
                                  sequence=sequence, progress=progress,
                                  description=model_description(config, sequence) if shipped else "")
            metrics = evaluate_fold(fm, by_patient[fold.test], shipped_to=ship_root if shipped else None)
            if keep_root is not None:
                from .registry import save_model

                save_model(fm.loaded.model, fm.loaded.card.replace(name=f"{sequence}-{name}--{fold.test}"),
                           keep_root)
            row = {"model": name, "sequence": sequence, "fold": fold.test, "calibration": fold.calibration,
                   "train": list(fold.train), "kind": config.kind, "latent_dim": config.latent_dim, "epochs": config.epochs,
                   "scoring": fm.loaded.card.scoring["rule"], "validation": fm.choice["aggregates"],
                   "validation_pixel_ap": fm.choice["validation_pixel_ap"],
                   "final_val_loss": fm.loaded.card.training.get("final_val_loss"),
                   "entropy_gaussian_nats": fm.loaded.card.latent.get("entropy_gaussian_nats"),
                   "entropy_knn_nats": fm.loaded.card.latent.get("entropy_knn_nats"),
                   "effective_dim": fm.loaded.card.latent.get("effective_dim"),
                   "seconds": fm.seconds, "metrics": metrics}
            rows.append(row)
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    return rows


_HEADLINE = ("pixel_ap", "best_dice", "calibrated_dice", "image_auroc", "image_ap", "level_matched_auroc")


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and std over folds per (sequence, model, mode) of the headline metrics."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        for mode, m in row["metrics"].items():
            groups.setdefault((row["sequence"], row["model"], mode), []).append(dict(m, **{
                k: row.get(k) for k in ("entropy_gaussian_nats", "entropy_knn_nats", "effective_dim",
                                        "final_val_loss")}))
    out = []
    for (seq, model, mode), ms in groups.items():
        entry = {"sequence": seq, "model": model, "mode": mode, "folds": len(ms)}
        for key in (*_HEADLINE, "entropy_gaussian_nats", "entropy_knn_nats", "effective_dim", "final_val_loss"):
            vals = np.array([m[key] for m in ms if m.get(key) is not None], dtype=np.float64)
            entry[key] = float(vals.mean()) if len(vals) else None
            entry[f"{key}_std"] = float(vals.std()) if len(vals) else None
        out.append(entry)
    return out


def real_specs(*, epochs: int = 150, dims=(1, 2, 4, 8, 16, 32, 64, 128), seed: int = 0) -> dict:
    """The real-patient zoo recipe, ``{name: TrainConfig}``: the intensity baseline, the AE sweep over ``dims``,
    the VAE (d = 16), the rate-distortion AE (d <= 128, rate weight 3e-4 as chosen label-free on the demo data)
    and the denoising U-Net. Geometric augmentation only (intensity is the signal); weights in float16."""
    from .training import TrainConfig

    common = {"image_size": 64, "epochs": epochs, "batch_size": 64, "seed": seed, "augment": True,
              "augment_intensity": False, "val_every": max(1, epochs // 5), "weights_dtype": "float16",
              "amp": True}
    specs = {"intensity": TrainConfig(kind="intensity", **common)}
    for d in dims:
        specs[f"ae-d{d}"] = TrainConfig(kind="ae", latent_dim=d, **common)
    specs["vae-d16"] = TrainConfig(kind="vae", latent_dim=16, **common)
    specs["rdae-d128"] = TrainConfig(kind="rdae", latent_dim=128, rate_weight=3e-4, **common)
    specs["dae"] = TrainConfig(kind="dae", channels=(8, 16, 32, 64), noise_std=0.2, noise_resolution=8, **common)
    return specs


def main(argv: list[str] | None = None) -> int:
    """``python -m ae4ad_core.crossval --data DIR --sequence flair --out runs/cv_flair.jsonl [--models a,b]``"""
    import argparse

    from .brats import find_patients, patient_slices

    p = argparse.ArgumentParser(prog="ae4ad crossval", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="folder of BraTS patient folders (or a build-real .npz)")
    p.add_argument("--sequence", default="flair")
    p.add_argument("--out", default=None, help="JSON-lines results file (resumable)")
    p.add_argument("--models", default=None, help="comma-separated subset of the recipe's names")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--ship-fold", default=None, help="register this fold's models (its test patient's name)")
    p.add_argument("--ship-root", default=None, help="registry folder for --ship-fold (e.g. assets/models)")
    p.add_argument("--keep-root", default=None, help="also keep every fold's model in this registry folder")
    p.add_argument("--rescore", action="store_true",
                   help="re-choose scoring and re-evaluate the kept fold models of --out (no training)")
    p.add_argument("--finalise", nargs="*", default=None, metavar="ROWS.jsonl",
                   help="only write assets/real/crossval.json from these result files and update shipped cards")
    args = p.parse_args(argv)
    if args.finalise is not None:
        from .assets import assets_dir

        rows = [json.loads(line) for f in args.finalise for line in Path(f).read_text().splitlines() if line.strip()]
        report = finalise(rows, models_root=args.ship_root or assets_dir() / "models",
                          report_path=assets_dir() / "real" / CROSSVAL_FILE)
        print(crossval_markdown(report))
        return 0
    if not args.data or not args.out:
        p.error("--data and --out are required (unless --finalise)")
    torch.manual_seed(0)
    if str(args.data).endswith(".npz"):
        from .brats import load_real_slices

        by_patient = {s.patient: s for s in load_real_slices(args.data, args.sequence)}
    else:
        by_patient = {pt.name: patient_slices(pt, args.sequence) for pt in find_patients(args.data)}
    if args.rescore:
        rows = rescore(args.out, by_patient, keep_root=args.keep_root, ship_root=args.ship_root,
                       ship_fold=args.ship_fold)
        print(crossval_markdown(crossval_report(rows)))
        return 0
    specs = real_specs(epochs=args.epochs)
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        specs = {k: specs[k] for k in wanted}
    rows = run_crossval(specs, by_patient, sequence=args.sequence, out=args.out, progress=args.progress,
                        ship_fold=args.ship_fold, ship_root=args.ship_root, keep_root=args.keep_root)
    print(json.dumps(summarise(rows), indent=1))
    return 0


REAL_DATA_LICENCE = "CC BY-NC-SA 3.0 CH (non-commercial; derived from BraTS 2013 patient data)"
"""The licence every model, slice and demo case derived from the BraTS patients carries (the code stays
Apache-2.0)."""
REAL_DATA_SOURCE = (
    "BraTS 2013 glioma patients pat0003-pat0006 as prepared in the DeepMedic example data (skull-stripped, "
    "co-registered, 1 mm, z-scored inside the brain); Menze et al., IEEE TMI 2015; Kamnitsas et al., MedIA 2017"
)
_KIND_WORDS = {"intensity": "plain-intensity baseline (the standardised intensity itself is the map)",
               "ae": "AE (AE4AD reference architecture)", "vae": "VAE (Zimmerer et al. 2019 maps)",
               "rdae": "rate-distortion AE (learned latent entropy)",
               "dae": "denoising U-Net (Kascenas et al. 2022)"}


def label_free_latent_dim(rows: list[dict], *, tolerance: float | None = None) -> dict:
    """The label-free choice of d from cross-validation rows of an AE sweep: per fold, the smallest d whose
    validation loss on the calibration patient's normals is within ``tolerance`` of the fold's best
    (:func:`ae4ad_core.selection.choose_latent_dim`); the most frequent choice over folds wins (ties: smaller).
    Returns the choice per fold and overall, and the test-set oracle for comparison."""
    from collections import Counter

    from .selection import DEFAULT_TOLERANCE, choose_latent_dim

    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    sweep = [r for r in rows if r.get("kind") == "ae" and r.get("final_val_loss") is not None]
    per_fold = {}
    for fold in sorted({r["fold"] for r in sweep}):
        fr = sorted((r for r in sweep if r["fold"] == fold), key=lambda r: r["latent_dim"])
        per_fold[fold] = choose_latent_dim([r["latent_dim"] for r in fr], [r["final_val_loss"] for r in fr],
                                           tolerance=tol)
    if not per_fold:
        return {}
    counts = Counter(per_fold.values())
    chosen = min(counts, key=lambda d: (-counts[d], d))
    return {"per_fold": per_fold, "chosen": int(chosen), "tolerance": tol}


def crossval_report(rows: list[dict]) -> dict:
    """Everything the README, the Models and Learn pages show about a cross-validation: per sequence, the
    summary rows (:func:`summarise`), the label-free choice of d (:func:`label_free_latent_dim`), the test-set
    oracle d (best mean slice AUROC of the AE sweep, product scoring) and the AUROC points between them."""
    out: dict = {}
    for seq in sorted({r["sequence"] for r in rows}):
        seq_rows = [r for r in rows if r["sequence"] == seq]
        n_folds = len({r["fold"] for r in seq_rows})
        complete = {m for m in {r["model"] for r in seq_rows}
                    if len({r["fold"] for r in seq_rows if r["model"] == m}) == n_folds}
        seq_rows = [r for r in seq_rows if r["model"] in complete]  # a model missing a fold is not reported
        summary = summarise(seq_rows)
        sweep = {int(e["model"].split("-d")[1]): e for e in summary
                 if e["model"].startswith("ae-d") and e["mode"] == "reconstruction"}
        entry: dict = {"summary": summary, "patients": sorted({r["fold"] for r in seq_rows})}
        choice = label_free_latent_dim(seq_rows)
        if sweep and choice:
            oracle = max(sweep, key=lambda d: sweep[d]["image_auroc"])
            chosen = choice["chosen"]
            entry.update(label_free=choice, oracle_d=oracle,
                         auroc_gap_points=100 * (sweep[oracle]["image_auroc"] - sweep[chosen]["image_auroc"]))
        out[seq] = entry
    return out


def _pm(entry: dict, key: str, scale: float = 100.0) -> str:
    mean, std = entry.get(key), entry.get(f"{key}_std")
    if mean is None:
        return "–"
    return f"{scale * mean:.1f} ± {scale * std:.1f}" if scale != 1.0 else f"{mean:.1f} ± {std:.1f}"


def crossval_markdown(report: dict) -> str:
    """The README tables of a :func:`crossval_report`: per sequence, every model in the product's scoring and
    in the paper's (``mse``), the intensity baseline first, then the AE sweep with its latent entropy."""
    lines = []
    modes = {"reconstruction": "product (card's map scoring)", "mse": "paper (squared error, mean)",
             "kl": "KL gradient", "combined": "combined (KL x residual)"}
    for seq, entry in report.items():
        rows = entry["summary"]
        base = {r["mode"]: r for r in rows if r["model"] == "intensity"}
        lines += [f"**{seq.upper() if seq == 'flair' else seq.capitalize()}** — leave-one-patient-out over "
                  f"{len(entry['patients'])} patients, mean ± std over folds (%):", "",
                  "| model | scoring | pixel AP | best Dice | calibrated Dice | slice AUROC | slice AP | "
                  "level-matched slice AUROC | pixel AP vs baseline |",
                  "|---|---|---|---|---|---|---|---|---|"]

        def order(r):
            m = r["model"]
            key = (0, 0) if m == "intensity" else (1, int(m.split("-d")[1])) if m.startswith("ae-d") else (2, 0)
            return key, m, list(modes).index(r["mode"]) if r["mode"] in modes else 9

        for r in sorted(rows, key=order):
            ref = base.get("reconstruction")
            diff = ("–" if ref is None or r["pixel_ap"] is None or r["model"] == "intensity"
                    else f"{100 * (r['pixel_ap'] - ref['pixel_ap']):+.1f}")
            lines.append(f"| {r['model']} | {modes.get(r['mode'], r['mode'])} | {_pm(r, 'pixel_ap')} | "
                         f"{_pm(r, 'best_dice')} | {_pm(r, 'calibrated_dice')} | {_pm(r, 'image_auroc')} | "
                         f"{_pm(r, 'image_ap')} | {_pm(r, 'level_matched_auroc')} | {diff} |")
        sweep = sorted((r for r in rows if r["model"].startswith("ae-d")), key=order)
        if sweep:
            lines += ["", f"AE sweep on {seq} (AE4AD Table 1 on real patients, with the latent-entropy columns the "
                      "paper lacks; slice AUROC / pixel AP in %, product scoring and paper scoring):", "",
                      "| d | slice AUROC (product) | pixel AP (product) | slice AUROC (paper) | pixel AP (paper) | "
                      "val. error (normals) | H Gaussian (nats) | H k-NN (nats) | eff. dim |",
                      "|---|---|---|---|---|---|---|---|---|"]
            by_d: dict[int, dict] = {}
            for r in sweep:
                by_d.setdefault(int(r["model"].split("-d")[1]), {})[r["mode"]] = r
            for d, m in sorted(by_d.items()):
                prod, paper = m.get("reconstruction", {}), m.get("mse", {})
                lines.append(f"| {d} | {_pm(prod, 'image_auroc')} | {_pm(prod, 'pixel_ap')} | "
                             f"{_pm(paper, 'image_auroc')} | {_pm(paper, 'pixel_ap')} | "
                             f"{prod.get('final_val_loss', 0):.4f} | {_pm(prod, 'entropy_gaussian_nats', 1.0)} | "
                             f"{_pm(prod, 'entropy_knn_nats', 1.0)} | {_pm(prod, 'effective_dim', 1.0)} |")
            if entry.get("label_free"):
                lf = entry["label_free"]
                lines += ["", f"Label-free d (smallest d within {lf['tolerance']:.0%} of the best validation error "
                          f"on the calibration patient's normals, majority over folds): **d = {lf['chosen']}** "
                          f"(per fold: {', '.join(f'{k[-6:-2]}: {v}' for k, v in lf['per_fold'].items())}); "
                          f"test-set oracle d = {entry['oracle_d']}; gap {entry['auroc_gap_points']:.1f} slice-AUROC "
                          "points."]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
