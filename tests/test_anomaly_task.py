"""The anomaly-detection task: trains on normal data only, thresholds from normal validation scores, metric keys."""

from __future__ import annotations

import numpy as np
import pytest

from domains.iot.config import IotParams
from domains.iot.models import SpectralAutoencoder
from domains.iot.scenario import make_task
from flcore import keys
from flcore.config import RunConfig
from flcore.data.site import FeatureStats, SiteData, SiteSplit
from flcore.experiment.scoring import score_arm
from flcore.learning import metrics
from flcore.learning.task import AnomalyDetectionTask


def normal_and_anomalous(n: int = 400, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normal data on a 2-D plane in 12-D; anomalies step off it."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(2, d))
    normal = (rng.normal(size=(n, 2)) @ basis + 0.05 * rng.normal(size=(n, d))).astype(np.float32)
    anomalous = (rng.normal(size=(n // 4, 2)) @ basis + 1.0 * rng.normal(size=(n // 4, d))).astype(np.float32)
    return normal, anomalous


def task() -> AnomalyDetectionTask:
    return AnomalyDetectionTask(build=lambda stats: SpectralAutoencoder(stats, hidden=(16, 2)), threshold_quantile=0.95)


CFG = RunConfig(optimizer="adam", learning_rate=0.01, batch_size=32, local_epochs=20, weight_decay=0.0)


def test_autoencoder_learns_the_normal_plane() -> None:
    normal, anomalous = normal_and_anomalous()
    t = task()
    model = t.init_model(FeatureStats.of(normal[:300]), 0)
    before = t.predict(model, normal[300:]).mean()
    t.fit(model, SiteData("s", normal[:300], np.zeros(300, dtype=np.int64)), CFG, first_round=0, num_rounds=1, seed=0)
    scores_n, scores_a = t.predict(model, normal[300:]), t.predict(model, anomalous)
    assert scores_n.mean() < 0.5 * before
    y = np.r_[np.zeros(len(scores_n)), np.ones(len(scores_a))]
    assert t.score(y, np.r_[scores_n, scores_a])[keys.ROC_AUC] > 0.95


def test_labelled_faults_in_training_data_are_never_trained_on() -> None:
    normal, anomalous = normal_and_anomalous()
    x = np.concatenate([normal[:300], anomalous])
    y = np.r_[np.zeros(300), np.ones(len(anomalous))].astype(np.int64)
    t = task()
    a = t.init_model(FeatureStats.of(normal[:300]), 0)
    b = t.init_model(FeatureStats.of(normal[:300]), 0)
    t.fit(a, SiteData("s", x, y), CFG, first_round=0, num_rounds=1, seed=0)
    t.fit(b, SiteData("s", normal[:300], y[:300]), CFG, first_round=0, num_rounds=1, seed=0)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert np.array_equal(p.numpy(), q.numpy())


def test_threshold_is_a_quantile_of_normal_validation_scores() -> None:
    scores = np.arange(101, dtype=float)  # 0..100
    y = np.zeros(101)
    assert metrics.quantile_threshold(y, scores, 0.99) == pytest.approx(99.0)
    y[-1] = 1  # a fault among validation windows does not move the normal quantile up to it
    assert metrics.quantile_threshold(y, scores, 1.0) == pytest.approx(99.0)
    assert metrics.quantile_threshold(np.ones(3), np.ones(3), 0.9) is None


def test_detection_metrics_hand_computed() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.95, 0.1])
    out = metrics.detection_metrics(y, s, 0.5)  # flags: idx 2 (fp), 4, 5 (tp); idx 6 missed
    assert out[keys.SENSITIVITY] == pytest.approx(2 / 3)
    assert out[keys.SPECIFICITY] == pytest.approx(3 / 4)
    assert out[keys.PRECISION] == pytest.approx(2 / 3)
    assert out[keys.F1] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    healthy = metrics.detection_metrics(np.zeros(4), np.array([0.1, 0.6, 0.2, 0.3]), 0.5)
    assert healthy[keys.F1] is None and healthy[keys.SENSITIVITY] is None and healthy[keys.SPECIFICITY] == 0.75
    assert metrics.detection_metrics(np.zeros(2), np.zeros(2), 0.5)[keys.PRECISION] is None


def test_score_always_has_the_same_keys() -> None:
    t = task()
    full = t.score(np.array([0, 1, 0]), np.array([0.1, 0.9, 0.2]), 0.5)
    empty = t.score(np.zeros(0), np.zeros(0), None)
    healthy = t.score(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.25)
    assert set(full) == set(empty) == set(healthy)
    assert empty[keys.ROC_AUC] is None and empty["loss"] is None and empty["n"] == 0
    assert healthy[keys.SPECIFICITY] == pytest.approx(2 / 3) and healthy[keys.ROC_AUC] is None
    assert full[keys.THRESHOLD] == 0.5 and full[keys.F1] == 1.0


def test_shared_model_still_gets_one_threshold_per_device() -> None:
    # Two devices with different normal levels: device b's normal scores sit where a's faults do.
    class Identity:
        pass

    t = AnomalyDetectionTask(build=lambda s: None, threshold_quantile=1.0)  # type: ignore[arg-type,return-value]
    t.predict = lambda model, x: x[:, 0]  # type: ignore[method-assign]

    def site(name: str, level: float) -> SiteSplit:
        val = SiteData(name, np.full((5, 1), level, dtype=np.float32), np.zeros(5, dtype=np.int64))
        test_x = np.array([[level], [level + 1.0]], dtype=np.float32)
        test = SiteData(name, test_x, np.array([0, 1]))
        return SiteSplit(name, val, test, val)

    splits = [site("a", 1.0), site("b", 2.0)]
    arm = score_arm(t, splits, lambda _: Identity(), keys.ROC_AUC, shared_model=True)
    assert arm["per_site"]["a"][keys.THRESHOLD] == 1.0 and arm["per_site"]["b"][keys.THRESHOLD] == 2.0
    assert arm["per_site"]["b"][keys.SPECIFICITY] == 0.0  # its normal window sits at its own threshold (>=)
    assert arm["union"][keys.SENSITIVITY] == 1.0
    # Fleet-wide ranking uses each device's scores over its own threshold: b's normal window (2.0,
    # ratio 1.0) no longer outranks a's fault (2.0, ratio 2.0); on raw scores the AUC would be 0.875.
    assert arm["union"][keys.ROC_AUC] == 1.0 and arm["union"]["sites_without_threshold"] == 0


def test_scenario_task_uses_recommended_params() -> None:
    t = make_task(IotParams())
    model = t.init_model(FeatureStats.of(np.zeros((4, 75), dtype=np.float32)), 0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 20_000 < n_params < 30_000
    assert t.primary_metric == "roc_auc" and t.threshold_scope == "site" and t.threshold_quantile == 0.99
