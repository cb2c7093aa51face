"""Anomaly-detection metrics in pure numpy (scipy only for connected components).

Image level: AUROC, average precision (AP), F1-max and the threshold that reaches it.
Pixel level: AUROC, AP and AUPRO (area under the per-region-overlap curve up to 30 % FPR,
normalised by 0.3, as in the MVTec AD evaluation code).

Conventions (match scikit-learn): higher score = more anomalous; label 1 = anomalous;
AUROC is the trapezoid area of the ROC over all distinct thresholds (ties handled exactly);
AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds (no interpolation).
Undefined cases return NaN rather than raising, so one category without anomalies does not
break a whole evaluation table: AUROC/AP/F1/AUPRO are NaN when only one class is present
(AUPRO: when there is no anomalous region or no normal pixel). Malformed input (shapes,
non-binary labels, non-finite scores, empty arrays) raises DataError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import DataError

NAN = float("nan")
PIXEL_KEYS = ("pixel_auroc", "aupro", "pixel_ap")
IMAGE_KEYS = ("image_auroc", "image_ap", "f1_max")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # np.trapz was renamed np.trapezoid in numpy 2; this works with both.
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


def _validate(labels: np.ndarray, scores: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"{what}: {y.size} labels but {s.size} scores")
    if y.size == 0:
        raise DataError(f"{what}: no samples")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{what}: labels must be 0/1")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise DataError(f"{what}: scores contain NaN or infinity")
    return y, s


def binary_clf_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, thresholds) for `score >= threshold`, one entry per
    distinct score, thresholds descending."""
    y, s = _validate(labels, scores, "binary curve")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[last_of_run]
    fps = (last_of_run + 1) - tps
    return fps, tps, s[last_of_run]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN if only one class is present."""
    fps, tps, _ = binary_clf_curve(labels, scores)
    if tps[-1] == 0 or fps[-1] == 0:
        return NAN
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return _trapezoid(tpr, fpr)


def _precision_recall(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    fps, tps, thr = binary_clf_curve(labels, scores)
    if tps[-1] == 0 or fps[-1] == 0:
        return None
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return precision, recall, thr


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP as in scikit-learn (step-wise, no interpolation); NaN if only one class is present."""
    pr = _precision_recall(labels, scores)
    if pr is None:
        return NAN
    precision, recall, _ = pr
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(best F1 over all thresholds, that threshold); predict anomalous when score >= threshold.
    (NaN, NaN) if only one class is present."""
    pr = _precision_recall(labels, scores)
    if pr is None:
        return NAN, NAN
    precision, recall, thr = pr
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thr[best])


def f1_max_margin_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(F1-max, threshold) with the threshold moved to the midpoint between the F1-max score
    and the next lower distinct score. Every threshold in that gap gives the same F1 on these
    images; the midpoint leaves the most room for score drift on the device (FP16/INT8), so
    the borderline image does not flip. (NaN, NaN) if only one class is present."""
    best, thr = f1_max(labels, scores)
    if math.isnan(best):
        return best, thr
    lower = np.asarray(scores, dtype=np.float64)
    lower = lower[lower < thr]
    return best, float((thr + lower.max()) / 2) if lower.size else thr


def _masks_maps(masks: Any, maps: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-image (bool mask, float64 map) pairs. Accepts [N,H,W] arrays, one [H,W] pair, or
    sequences of [H,W] arrays whose sizes differ between images (original resolutions)."""
    if isinstance(masks, np.ndarray) and isinstance(maps, np.ndarray):
        if masks.shape != maps.shape:
            raise DataError(f"pixel metrics: masks {masks.shape} and maps {maps.shape} differ in shape")
        if masks.ndim == 2:
            masks, maps = masks[None], maps[None]
        if masks.ndim != 3 or masks.size == 0:
            raise DataError(f"pixel metrics: expected [N,H,W] masks and maps, got {masks.shape}")
    if len(masks) != len(maps) or len(masks) == 0:
        raise DataError(f"pixel metrics: {len(masks)} masks but {len(maps)} maps")
    out = []
    for m, a in zip(masks, maps):
        m, a = np.asarray(m), np.asarray(a, dtype=np.float64)
        if m.shape != a.shape or m.ndim != 2:
            raise DataError(f"pixel metrics: mask {m.shape} and map {a.shape} differ in shape (or are not 2-D)")
        if m.dtype != bool:
            if not np.isin(m, (0, 1)).all():
                raise DataError("pixel metrics: masks must be 0/1")
            m = m.astype(bool)
        out.append((m, a))
    return out


def _flat(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([m.ravel() for m, _ in pairs]), np.concatenate([a.ravel() for _, a in pairs])


def pixel_auroc(masks: Any, maps: Any) -> float:
    return auroc(*_flat(_masks_maps(masks, maps)))


def pixel_ap(masks: Any, maps: Any) -> float:
    return average_precision(*_flat(_masks_maps(masks, maps)))


def pro_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact (FPR, PRO) curve over all distinct thresholds, starting at (0, 0).

    PRO at a threshold = mean over every connected anomalous region (8-connectivity, per
    image) of the fraction of that region's pixels at or above the threshold. FPR = fraction
    of all normal pixels at or above it. Each pixel adds 1/(region size * regions) to PRO
    (anomalous) or 1/(normal pixels) to FPR (normal) once the threshold passes its score, so
    one sort gives the whole curve (the MVTec AD evaluation's formulation).
    """
    from scipy import ndimage

    pairs = _masks_maps(masks, maps)
    weights = []
    regions = 0
    structure = np.ones((3, 3), dtype=int)
    for m, a in pairs:
        if not np.isfinite(a).all():
            raise DataError("pixel metrics: maps contain NaN or infinity")
        w = np.zeros(m.shape, dtype=np.float64)
        lab, n = ndimage.label(m, structure=structure)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64)
            sizes[0] = np.inf  # background gets weight 0
            w = 1.0 / sizes[lab]
        weights.append(w.ravel())
        regions += n
    m_all, s = _flat(pairs)
    normal = int((~m_all).sum())
    if regions == 0 or normal == 0:
        return np.array([0.0]), np.array([NAN])
    pro_w = np.concatenate(weights) / regions
    fp_w = (~m_all).astype(np.float64) / normal
    order = np.argsort(-s, kind="mergesort")
    s = s[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    fpr = np.cumsum(fp_w[order])[last_of_run]
    pro = np.cumsum(pro_w[order])[last_of_run]
    return np.clip(np.r_[0.0, fpr], 0, 1), np.clip(np.r_[0.0, pro], 0, 1)


def area_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [0, x_max], interpolating y linearly at x_max.
    `x` must be non-decreasing (vertical steps allowed)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if not inside.all():
        j = int(np.argmax(~inside))  # first point beyond x_max; j >= 1 because x[0] = 0
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_cut = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_cut]
    return _trapezoid(ys, xs)


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve for FPR in [0, fpr_limit], divided by fpr_limit (1.0 = perfect).
    NaN when there is no anomalous region or no normal pixel."""
    if not 0 < fpr_limit <= 1:
        raise DataError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(masks, maps)
    if np.isnan(pro).any():
        return NAN
    return area_to(fpr, pro, fpr_limit) / fpr_limit


@dataclass(frozen=True)
class Metrics:
    """One row of the results table. Pixel fields are None when the data has no pixel truth."""

    n_images: int
    n_anomalous: int
    image_auroc: float
    image_ap: float
    f1_max: float
    f1_threshold: float
    pixel_auroc: float | None = None
    aupro: float | None = None
    pixel_ap: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    fpr_limit: float = 0.3,
) -> Metrics:
    """All metrics for one group of images; pass masks/maps ([N,H,W]) only for images with
    pixel truth (all of them or none)."""
    y, s = _validate(labels, scores, "image metrics")
    f1, thr = f1_max(y, s)
    row = dict(
        n_images=int(y.size),
        n_anomalous=int(y.sum()),
        image_auroc=auroc(y, s),
        image_ap=average_precision(y, s),
        f1_max=f1,
        f1_threshold=thr,
    )
    if masks is not None and maps is not None:
        row.update(
            pixel_auroc=pixel_auroc(masks, maps), aupro=aupro(masks, maps, fpr_limit), pixel_ap=pixel_ap(masks, maps)
        )
    return Metrics(**row)  # type: ignore[arg-type]


def mean_metrics(rows: Mapping[str, Metrics]) -> dict[str, float | None]:
    """Mean of each metric over categories (the paper's 'mean' row), ignoring NaN entries;
    None for a pixel metric no category has."""
    out: dict[str, float | None] = {}
    for key in (*PIXEL_KEYS, *IMAGE_KEYS):
        vals = [getattr(r, key) for r in rows.values() if getattr(r, key) is not None]
        finite = [v for v in vals if not math.isnan(v)]
        out[key] = None if not vals else (float(np.mean(finite)) if finite else NAN)
    return out
