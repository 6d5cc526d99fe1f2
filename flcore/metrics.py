"""Binary-classification metrics, computed with scikit-learn."""

from __future__ import annotations

import math

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


def nanmean(values: list[float | None]) -> float | None:
    """Mean of the defined values, or ``None`` when none is defined."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None
