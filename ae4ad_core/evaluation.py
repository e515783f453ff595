"""Evaluation of a loaded, calibrated model on a labelled test set (``ae4ad evaluate``).

Metrics follow the conventions of the AE4AD benchmark (Cai et al., MICCAI 2024) and the MOOD challenge:

* image level: AUROC and average precision (AP) of the image scores, abnormal = positive class;
* pixel level (test sets with masks): AUROC and AP over the pooled pixels of ALL test images (normal images
  contribute their all-zero masks), and the best Dice over all thresholds of the pooled pixels -- an upper
  bound, since the threshold is chosen on the test set itself (Baur et al., MedIA 2021);
* the honest counterparts use only what the model learned from NORMAL validation images: the false- and
  true-positive rates of the card's image threshold, and the Dice at the card's pixel threshold;
* a sanity check: the Spearman correlation between normal test images' scores and how much foreground they
  hold. ``|rho|`` near 1 means the score mostly measures the amount of anatomy in a slice, not anomalies;
* a slice AUROC that anatomy cannot fool: :func:`level_matched_auroc` compares tumour and normal slices only
  within bins of similar brain area (normal BraTS slices are mostly the top and bottom of the head, so a score
  that merely follows the amount of brain already separates them).

Pixel metrics are computed at the input resolution by default (maps mapped back with
:func:`ae4ad_core.preprocess.restore_map`) and, when the test set has brain masks, over brain pixels only;
``resolution="model"`` computes them in model space (``S x S``), with masks mapped there by
:func:`mask_to_model_space`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .preprocess import SliceGeometry, prepare_slices, restore_map
from .scoring import FOREGROUND_LEVEL, check_mode, require_calibrated_mode

__all__ = [
    "EvaluationResult",
    "evaluate",
    "evaluate_all_modes",
    "dice_curve",
    "level_matched_auroc",
    "mask_to_model_space",
    "save_evaluation",
    "MAX_CURVE_POINTS",
]

MAX_CURVE_POINTS = 200


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one model in one scoring mode on one test set (see the module docstring).

    Attributes
    ----------
    mode : str
    n_normal, n_abnormal : int
        Test images by label.
    image_auroc, image_ap : float
    pixel_auroc, pixel_ap : float or None
        Over the pooled pixels of all test images; None without masks (or with masks that mark no pixel).
    best_dice, best_dice_threshold : float or None
        Best Dice over thresholds of the pooled pixels (chosen on the test set: an upper bound).
    calibrated_dice : float or None
        Dice of the pooled pixels at the pixel threshold calibrated on normal validation images.
    calibrated_image_fpr, calibrated_image_tpr : float
        Share of normal / abnormal test images scoring above the calibrated image threshold.
    anatomy_correlation : float or None
        Spearman rho between normal test images' scores and their foreground area; None with fewer than 3
        normal images or a constant score/area.
    level_matched_auroc : float or None
        Slice AUROC within bins of similar foreground area (see :func:`level_matched_auroc`).
    pixel_resolution : str
        ``"input"`` or ``"model"``: where pixel metrics were computed.
    curves : dict
        ``{"image": {"fpr", "tpr", "precision", "recall"}}`` plus ``"pixel"`` (the same keys, and ``"dice"``,
        ``"dice_threshold"``) when pixel metrics exist; numpy arrays of at most ``MAX_CURVE_POINTS`` values.
    """

    mode: str
    n_normal: int
    n_abnormal: int
    image_auroc: float
    image_ap: float
    pixel_auroc: float | None
    pixel_ap: float | None
    best_dice: float | None
    best_dice_threshold: float | None
    calibrated_dice: float | None
    calibrated_image_fpr: float
    calibrated_image_tpr: float
    anatomy_correlation: float | None
    level_matched_auroc: float | None = None
    pixel_resolution: str = "model"
    curves: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict (plain floats and lists), curves included."""
        out: dict = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "curves":
                value = {
                    group: {k: [float(v) for v in np.asarray(arr).ravel()] for k, arr in curves.items()}
                    for group, curves in value.items()
                }
            elif isinstance(value, (float, np.floating)):
                value = float(value)
            elif isinstance(value, (np.integer,)):
                value = int(value)
            out[name] = value
        return out

    def summary(self) -> dict:
        """The headline numbers only (no curves), e.g. for a model card's ``metrics``."""
        out = self.to_dict()
        out.pop("curves")
        return out


def _subsample(*arrays: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, ...]:
    """The same evenly spaced indices (first and last kept) of equally long arrays."""
    n = len(arrays[0])
    if n <= max_points:
        return tuple(np.asarray(a, dtype=np.float64) for a in arrays)
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return tuple(np.asarray(a, dtype=np.float64)[idx] for a in arrays)


def dice_curve(scores_flat, labels_flat) -> tuple[np.ndarray, np.ndarray]:
    """Dice of ``scores >= t`` against binary labels for every distinct threshold ``t``.

    Dice equals the F1 score, ``2 P R / (P + R)``, with precision ``P`` and recall ``R`` from
    :func:`sklearn.metrics.precision_recall_curve` (0 where ``P + R = 0``).

    Parameters
    ----------
    scores_flat : (P,) array
        Pixel scores (pooled over images).
    labels_flat : (P,) array
        Binary ground truth (nonzero = anomalous); at least one positive.

    Returns
    -------
    dice : (T,) array
    thresholds : (T,) array, increasing
    """
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels_flat).ravel() != 0
    scores = np.asarray(scores_flat, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"scores and labels differ in size: {scores.size} vs {labels.size}.")
    if not labels.any():
        raise ValueError("Dice needs at least one positive pixel in the labels.")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    return _dice_from_pr(precision, recall), thresholds


def _dice_from_pr(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """``2 P R / (P + R)`` (0 where both are 0) at each threshold; the last PR point (P=1, R=0) has none."""
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    return np.divide(2.0 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = float(np.count_nonzero(pred & truth))
    total = float(np.count_nonzero(pred) + np.count_nonzero(truth))
    return 2.0 * inter / total if total > 0 else 1.0


def mask_to_model_space(mask: np.ndarray, geometry: SliceGeometry, size: int) -> np.ndarray:
    """Map a ground-truth mask ``(H, W)`` onto the model's ``size x size`` grid.

    The mask goes through the geometry the image went through in :func:`ae4ad_core.preprocess.prepare_slices`
    (foreground crop, centred zero-padding to a square), is resized with area interpolation (each model pixel
    gets the fraction of its footprint that is annotated) and thresholded: a model pixel is anomalous when at
    least half of it is (fraction >= 0.5).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` bool.
    """
    m = np.asarray(mask)
    if m.shape != tuple(geometry.shape):
        raise DataError(f"A mask of shape {m.shape} does not match its image {tuple(geometry.shape)}.")
    top, left, h, w = geometry.crop
    side = geometry.side
    square = np.zeros((side, side), dtype=np.float32)
    oy, ox = (side - h) // 2, (side - w) // 2
    square[oy : oy + h, ox : ox + w] = m[top : top + h, left : left + w] != 0
    if side == size:
        return square >= 0.5
    t = torch.from_numpy(square)[None, None]
    return F.interpolate(t, size=(size, size), mode="area")[0, 0].numpy() >= 0.5


def _pooled_pixel_metrics(flat: np.ndarray, truth: np.ndarray):
    """AUROC, AP, the Dice curve and subsampled curves of pooled pixels, sorting the (many) pixels only twice.

    AUROC is the trapezoidal area under :func:`sklearn.metrics.roc_curve` and AP the step-wise sum
    ``sum_k (R_k - R_{k-1}) P_k`` over :func:`sklearn.metrics.precision_recall_curve` -- exactly what
    ``roc_auc_score`` and ``average_precision_score`` compute, without sorting again.
    """
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(truth, flat)
    precision, recall, thresholds = precision_recall_curve(truth, flat)
    auroc = float(auc(fpr, tpr))
    ap = float(-np.sum(np.diff(recall) * precision[:-1]))
    dice = _dice_from_pr(precision, recall)
    curves = dict(zip(("fpr", "tpr"), _subsample(fpr, tpr), strict=True))
    curves.update(zip(("precision", "recall"), _subsample(precision, recall), strict=True))
    curves.update(zip(("dice", "dice_threshold"), _subsample(dice, thresholds), strict=True))
    return auroc, ap, dice, thresholds, curves


def level_matched_auroc(labels, scores, levels, *, bins: int = 5) -> float | None:
    """Slice AUROC with anatomy held fixed: slices are put in ``bins`` bins of equal count by ``levels`` (e.g.
    brain area), the AUROC is computed inside every bin holding both classes, and the bins are averaged
    weighted by their number of (abnormal, normal) pairs. That is the probability that an abnormal slice
    outscores a normal slice of similar level. None when no bin holds both classes.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    edges = np.quantile(levels, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, levels, side="right")
    total, weight = 0.0, 0.0
    for b in range(bins):
        sel = which == b
        pos, neg = int(labels[sel].sum()), int((1 - labels[sel]).sum())
        if pos and neg:
            total += roc_auc_score(labels[sel], scores[sel]) * pos * neg
            weight += pos * neg
    return float(total / weight) if weight else None


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    rho = spearmanr(a, b).statistic
    return None if not np.isfinite(rho) else float(rho)


@dataclass(frozen=True)
class _Prepared:
    """A test set in model space, shared by every mode of :func:`evaluate_all_modes`."""

    x: torch.Tensor
    labels: np.ndarray
    masks: np.ndarray | None  # (N, S, S) bool
    foreground: np.ndarray  # (N,) foreground pixels per image, model space
    geometries: list = field(default_factory=list)
    input_masks: object = None  # the test set's (N, H, W) masks
    input_brain: object = None  # the test set's (N, H, W) brain masks, or None


def _prepare(loaded, test) -> _Prepared:
    images = test.images
    n = len(images)
    if n == 0:
        raise DataError("The test set is empty.")
    labels = np.asarray(test.labels).astype(np.int64).ravel()
    if len(labels) != n:
        raise DataError(f"The test set has {n} images but {len(labels)} labels.")
    if not np.isin(labels, (0, 1)).all():
        raise DataError(
            f"Test labels must be 0 (normal) or 1 (abnormal), got {sorted(set(labels.tolist()))}."
        )
    if labels.min() == labels.max():
        kind = "normal" if labels[0] == 0 else "abnormal"
        raise DataError(f"All {n} test images are {kind}; AUROC and AP need both normal and abnormal images.")
    prep = loaded.card.preprocessing
    x, geoms = prepare_slices([images[i] for i in range(n)], prep, device=loaded.device)
    masks = getattr(test, "masks", None)
    model_masks = None
    if masks is not None:
        if len(masks) != n:
            raise DataError(f"The test set has {n} images but {len(masks)} masks.")
        model_masks = np.stack([mask_to_model_space(masks[i], geoms[i], prep.size) for i in range(n)])
    brain = getattr(test, "brain", None)
    if brain is not None and len(brain) == n:
        foreground = np.array(
            [mask_to_model_space(brain[i], geoms[i], prep.size).sum() for i in range(n)], dtype=np.float64
        )
    else:
        foreground = (x[:, 0] > FOREGROUND_LEVEL).sum(dim=(1, 2)).cpu().numpy().astype(np.float64)
    return _Prepared(x=x, labels=labels, masks=model_masks, foreground=foreground, geometries=geoms,
                     input_masks=masks, input_brain=brain if brain is not None and len(brain) == n else None)


def _input_space_pixels(maps: np.ndarray, data: _Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Map values and truth of every test pixel at the input resolution (brain pixels only when known)."""
    values, truth = [], []
    for i, geom in enumerate(data.geometries):
        full = restore_map(maps[i], geom, fill=0.0)
        t = np.asarray(data.input_masks[i]) != 0
        if data.input_brain is not None:
            inside = np.asarray(data.input_brain[i]) != 0
            full, t = full[inside], t[inside]
        values.append(full.ravel())
        truth.append(t.ravel())
    return np.concatenate(values), np.concatenate(truth)


def _evaluate_prepared(loaded, data: _Prepared, mode: str, batch_size: int,
                       resolution: str = "input") -> EvaluationResult:  # fmt: skip
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    from .calibration import Calibration, score_all

    card = loaded.card
    check_mode(loaded.inference, mode, model_name=f"model {card.name!r}")
    cal = Calibration.from_card(card)
    mc = require_calibrated_mode(cal.modes, mode, model_name=card.name)
    res = score_all(loaded.inference, data.x, mode=mode, kl_gradient_scale=cal.kl_gradient_scale,
                    scoring=card.map_scoring, batch_size=batch_size)
    scores = res["scores"].astype(np.float64)
    maps = res["maps"]
    labels = data.labels
    if not np.isfinite(scores).all():
        raise DataError(f"Mode {mode!r} produced non-finite scores on the test set.")

    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    curves: dict = {}
    curves["image"] = dict(zip(("fpr", "tpr"), _subsample(fpr, tpr), strict=True))
    curves["image"].update(zip(("precision", "recall"), _subsample(precision, recall), strict=True))
    above = scores > mc.threshold

    pixel_auroc = pixel_ap = best_dice = best_t = cal_dice = None
    if data.masks is not None and data.masks.any():
        if resolution == "input":
            flat, truth = _input_space_pixels(maps, data)
        else:
            truth, flat = data.masks.ravel(), maps.ravel()
        pixel_auroc, pixel_ap, dice, thresholds, curves["pixel"] = _pooled_pixel_metrics(flat, truth)
        best = int(np.argmax(dice))
        best_dice, best_t = float(dice[best]), float(thresholds[best])
        cal_dice = _dice(flat > mc.pixel_threshold, truth)

    normal = labels == 0
    return EvaluationResult(
        mode=mode,
        n_normal=int(normal.sum()),
        n_abnormal=int((~normal).sum()),
        image_auroc=float(roc_auc_score(labels, scores)),
        image_ap=float(average_precision_score(labels, scores)),
        pixel_auroc=pixel_auroc,
        pixel_ap=pixel_ap,
        best_dice=best_dice,
        best_dice_threshold=best_t,
        calibrated_dice=cal_dice,
        calibrated_image_fpr=float(above[normal].mean()),
        calibrated_image_tpr=float(above[~normal].mean()),
        anatomy_correlation=_spearman(scores[normal], data.foreground[normal]),
        level_matched_auroc=level_matched_auroc(labels, scores, data.foreground),
        pixel_resolution=resolution if data.masks is not None else "model",
        curves=curves,
    )


def evaluate(loaded, test, *, mode: str = "reconstruction", batch_size: int = 256,
             resolution: str = "input") -> EvaluationResult:  # fmt: skip
    """Evaluate a loaded, calibrated model on a labelled test set in one scoring mode.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`ae4ad_core.registry.load_model`; its card must hold a calibration.
    test : SliceSet or any object with the same fields
        ``images`` ``(N, H, W)`` raw intensities, ``labels`` ``(N,)`` (0 normal, 1 abnormal), optional
        ``masks`` ``(N, H, W)`` (nonzero = anomalous) and ``brain`` ``(N, H, W)`` foreground masks (used for
        :attr:`EvaluationResult.anatomy_correlation`; without them, foreground = model-space pixels above
        the background level).
    mode : {"reconstruction", "kl", "combined", "mse"}
    batch_size : int
    resolution : {"input", "model"}
        Where pixel metrics are computed (see the module docstring).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    DataError
        Empty test set, labels not 0/1 or of one class only, masks not matching the images.
    UnsupportedModeError, ModelCardError
        A mode the model cannot compute or that its calibration lacks.
    """
    check_mode(loaded.inference, mode, model_name=f"model {loaded.card.name!r}")
    return _evaluate_prepared(loaded, _prepare(loaded, test), mode, batch_size, resolution)


def evaluate_all_modes(loaded, test, *, batch_size: int = 256,
                       resolution: str = "input") -> dict[str, EvaluationResult]:  # fmt: skip
    """:func:`evaluate` in every mode the model's card is calibrated for (preprocessing the test set once)."""
    from .calibration import Calibration

    data = _prepare(loaded, test)
    modes = list(Calibration.from_card(loaded.card).modes)
    return {m: _evaluate_prepared(loaded, data, m, batch_size, resolution) for m in modes}


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def save_evaluation(results: dict[str, EvaluationResult], out_dir: Path | str) -> list[Path]:
    """Write ``results.json`` (``{mode: EvaluationResult.to_dict()}``), ``roc.png`` and ``pr.png`` (all modes in
    one figure each) and, per mode with pixel metrics, ``pixel_pr_<mode>.png``. Returns the written paths."""
    from .plotting import figure_to_png, pixel_pr_figure, roc_pr_figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    payload = {mode: _json_safe(res.to_dict()) for mode, res in results.items()}
    p = out / "results.json"
    p.write_text(json.dumps(payload, indent=1, allow_nan=False))
    paths.append(p)
    roc, pr = roc_pr_figures(results)
    for name, fig in (("roc.png", roc), ("pr.png", pr)):
        (out / name).write_bytes(figure_to_png(fig))
        paths.append(out / name)
    for mode, res in results.items():
        if "pixel" in res.curves:
            p = out / f"pixel_pr_{mode}.png"
            p.write_bytes(figure_to_png(pixel_pr_figure(res)))
            paths.append(p)
    return paths
