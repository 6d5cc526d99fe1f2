"""Metrics against hand-computed values; federated feature statistics equal pooled ones."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.data.site import FeatureStats, SiteData, split_site
from flcore.learning.metrics import binary_metrics, recall_at_fpr


def test_recall_at_fpr_hand_computed() -> None:
    # 4 negatives scored 0.1..0.4, positives 0.35 and 0.9. At FPR 0 only 0.9 is caught.
    y = np.array([0, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.9])
    assert recall_at_fpr(y, s, 0.0) == pytest.approx(0.5)
    assert recall_at_fpr(y, s, 0.25) == pytest.approx(1.0)  # threshold 0.35 flags one negative


def test_binary_metrics_perfect_and_undefined() -> None:
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert m["pr_auc"] == pytest.approx(1.0) and m["roc_auc"] == pytest.approx(1.0)
    undefined = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.5, 0.2]))
    assert undefined["pr_auc"] is None and undefined["n_positive"] == 0


def test_combined_feature_stats_equal_pooled_stats() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc=i, scale=i + 1, size=(50 * (i + 1), 4)) for i in range(3)]
    combined = FeatureStats.combine([FeatureStats.of(p) for p in parts])
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(combined.mean, pooled.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(combined.std, pooled.std(axis=0), rtol=1e-8)


def test_split_is_stratified_and_disjoint() -> None:
    y = np.zeros(200, dtype=np.int64)
    y[:10] = 1
    site = SiteData("s", np.arange(200, dtype=np.float32).reshape(-1, 1), y)
    split = split_site(site, 0.3, seed=0)
    assert len(split.test) == 60 and split.test.y.sum() == 3
    assert not set(split.train.x[:, 0]) & set(split.test.x[:, 0])
