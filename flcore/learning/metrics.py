"""Binary-classification metrics, computed with scikit-learn."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from flcore import keys


def recall_at_fpr(y_true: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Highest recall (TPR) reachable with a false-positive rate of at most ``max_fpr``.

    This is the figure a fraud team reads off: of the fraud, how much is caught when
    at most ``max_fpr`` of legitimate transactions are flagged.
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def binary_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """PR-AUC (average precision), ROC-AUC and recall at 1% FPR, plus counts.

    Metrics that are undefined on this data (a split with no positive or no
    negative example) are ``None`` rather than a misleading number.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=float)
    if y_true.shape != scores.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but scores {scores.shape}")
    n_pos = int(y_true.sum())
    n = int(y_true.size)
    out: dict[str, float | None] = {"n": n, "n_positive": n_pos}
    if 0 < n_pos < n:
        out[keys.PR_AUC] = float(average_precision_score(y_true, scores))
        out[keys.ROC_AUC] = float(roc_auc_score(y_true, scores))
        out[keys.RECALL_AT_1PCT_FPR] = recall_at_fpr(y_true, scores, 0.01)
    else:
        out[keys.PR_AUC] = out[keys.ROC_AUC] = out[keys.RECALL_AT_1PCT_FPR] = None
    return out


def youden_threshold(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Threshold maximising Youden's J (sensitivity + specificity - 1) on validation data.

    Returns ``None`` when the data hold only one class (no operating point can be
    chosen). Among equally good thresholds the highest is taken, so ties favour
    specificity.
    """
    y_true = np.asarray(y_true).astype(int)
    if not 0 < int(y_true.sum()) < y_true.size:
        return None
    fpr, tpr, thresholds = roc_curve(y_true, np.asarray(scores, dtype=float))
    j = tpr - fpr
    best = int(np.flatnonzero(j == j.max())[0])  # thresholds are decreasing: first is highest
    return float(min(thresholds[best], 1.0))


def operating_point(y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray) -> dict[str, float | None]:
    """Sensitivity and specificity of ``scores >= threshold``.

    ``threshold`` may be one value or one per example (for instance when each site
    applies the operating point it chose on its own validation data).
    """
    y = np.asarray(y_true).astype(int)
    decided = np.asarray(scores, dtype=float) >= np.asarray(threshold, dtype=float)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    return {
        keys.SENSITIVITY: float((decided & (y == 1)).sum() / n_pos) if n_pos else None,
        keys.SPECIFICITY: float((~decided & (y == 0)).sum() / n_neg) if n_neg else None,
    }


def nanmean(values: list[float | None]) -> float | None:
    """Mean of the defined values, or ``None`` when none is defined."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def quantile_threshold(y_true: np.ndarray, scores: np.ndarray, quantile: float) -> float | None:
    """The ``quantile`` of the scores of normal (label 0) examples: an anomaly threshold.

    With ``quantile = 0.99`` about 1% of normal data is flagged, which fixes the
    false-alarm rate a maintenance team signs up for. ``None`` without normal examples.
    """
    normal = np.asarray(scores, dtype=float)[np.asarray(y_true).astype(int) == 0]
    return float(np.quantile(normal, quantile)) if normal.size else None


def detection_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray) -> dict[str, float | None]:
    """Sensitivity, specificity, precision and F1 of the decisions ``scores >= threshold``.

    Each is ``None`` where undefined on these data (no positive example, or
    nothing flagged for precision).
    """
    y = np.asarray(y_true).astype(int)
    decided = np.asarray(scores, dtype=float) >= np.asarray(threshold, dtype=float)
    tp = int((decided & (y == 1)).sum())
    fp = int((decided & (y == 0)).sum())
    n_pos = int(y.sum())
    out = operating_point(y, scores, threshold)
    precision = tp / (tp + fp) if tp + fp else None
    out[keys.PRECISION] = precision
    if n_pos == 0:
        out[keys.F1] = None
    else:
        out[keys.F1] = 0.0 if not tp else 2 * tp / (2 * tp + fp + (n_pos - tp))
    return out


def with_operating_point(
    out: dict[str, Any], y: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray | None
) -> dict[str, Any]:
    """``out`` with sensitivity, specificity and the threshold at ``threshold`` (None values without one).

    Always the same keys, because Flower's strategies require identical metric keys from every site.
    """
    if threshold is None:
        out.update({keys.SENSITIVITY: None, keys.SPECIFICITY: None, keys.THRESHOLD: None})
        return out
    out.update(operating_point(y, scores, threshold))
    t = np.asarray(threshold, dtype=float)
    out[keys.THRESHOLD] = float(t) if t.ndim == 0 else None
    return out
