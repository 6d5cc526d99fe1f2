"""Aggregation rules on hand-computed arrays (Prepare / Execute / Assert)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from flcore import keys
from flcore.federation.monitor import FederationMonitor, nan_aware_average
from flcore.federation.strategies.sizeweighted import FedAvgSizeWeighted, size_weights, weighted_average

pytestmark = pytest.mark.usefixtures("flower_task")


def reply(values: list[float], n: int, site: str = "s") -> Message:
    """A train reply as a strategy receives it: arrays, metrics and the site's name."""
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))}),
            "metrics": MetricRecord({"num-examples": n, "train-loss": float(n)}),
            keys.SITE: ConfigRecord({keys.SITE_NAME: site}),
        }
    )
    return Message(content=content, dst_node_id=0, message_type="train")


def test_size_weights_hand_computed() -> None:
    # n = 100, 300: beta 0 -> 0.25/0.75; beta -1 -> equal; beta 1 -> 1e4/(1e4+9e4).
    assert size_weights([100, 300], 0.0) == pytest.approx([0.25, 0.75])
    assert size_weights([100, 300], -1.0) == pytest.approx([0.5, 0.5])
    assert size_weights([100, 300], 1.0) == pytest.approx([0.1, 0.9])
    # beta -0.5: sqrt(100)=10, sqrt(300)=17.3205 -> 10/27.3205
    assert size_weights([100, 300], -0.5)[0] == pytest.approx(10 / (10 + 300**0.5))


def test_size_weights_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        size_weights([10, 0], 0.0)
    with pytest.raises(ValueError, match="no site sizes"):
        size_weights([], 0.0)


def test_size_weights_large_sizes_do_not_overflow() -> None:
    w = size_weights([1e300, 1e300], 1.0)
    assert w == pytest.approx([0.5, 0.5])


def test_weighted_average_exact() -> None:
    a = ArrayRecord({"w": Array(np.array([1.0, 2.0], dtype=np.float32))})
    b = ArrayRecord({"w": Array(np.array([3.0, 6.0], dtype=np.float32))})
    out = weighted_average([a, b], np.array([0.25, 0.75]))
    np.testing.assert_allclose(out["w"].numpy(), [2.5, 5.0])


@pytest.mark.parametrize(
    ("beta", "expected"),
    [
        (0.0, [(1 * 100 + 5 * 300) / 400, (2 * 100 + 6 * 300) / 400]),  # FedAvg: 4.0, 5.0
        (-1.0, [3.0, 4.0]),  # plain mean
    ],
)
def test_fedavg_sizeweighted_aggregate_train(beta: float, expected: list[float]) -> None:
    replies = [reply([1, 2], 100), reply([5, 6], 300)]
    arrays, metrics = FedAvgSizeWeighted(beta=beta).aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)
    assert metrics is not None


def test_aggregate_keeps_float32() -> None:
    arrays, _ = FedAvgSizeWeighted(beta=-0.5).aggregate_train(1, [reply([1, 2], 10), reply([4, 8], 30)])
    assert arrays["w"].numpy().dtype == np.float32  # type: ignore[index]


def test_beta_zero_matches_flower_fedavg() -> None:
    replies = [reply([1, 2], 10), reply([4, 8], 30)]
    ours, _ = FedAvgSizeWeighted(beta=0.0).aggregate_train(1, replies)
    theirs, _ = FedAvg().aggregate_train(1, replies)
    np.testing.assert_allclose(ours["w"].numpy(), theirs["w"].numpy(), rtol=1e-6)  # type: ignore[index]


def test_fedavg_sizeweighted_rejects_bad_beta() -> None:
    with pytest.raises(ValueError, match=r"beta must be a float in the range \[-1, 1\]. Got 2.0 instead."):
        FedAvgSizeWeighted(beta=2.0)


def test_empty_replies_give_nothing() -> None:
    assert FedAvgSizeWeighted(beta=-1.0).aggregate_train(1, []) == (None, None)


def test_nan_aware_average_skips_undefined_metrics() -> None:
    r1 = RecordDict({"m": MetricRecord({"num-examples": 1, "pr_auc": float("nan"), "loss": 1.0})})
    r2 = RecordDict({"m": MetricRecord({"num-examples": 3, "pr_auc": 0.5, "loss": 3.0})})
    out = nan_aware_average([r1, r2], "num-examples")
    assert out["pr_auc"] == pytest.approx(0.5)  # only r2 defines it
    assert out["loss"] == pytest.approx((1 * 1 + 3 * 3) / 4)


def test_monitor_keeps_per_site_metrics() -> None:
    monitor = FederationMonitor()
    monitor.record_exchange(0.0, 1, "train", 2, 0, [], 0)
    records = [reply([1], 10, "bank_x").content, reply([2], 30, "bank_y").content]
    agg = monitor.aggregate_train(records, "num-examples")
    assert agg["train-loss"] == pytest.approx((10 * 10 + 30 * 30) / 40)
    assert set(monitor.rounds[0].per_site_train) == {"bank_x", "bank_y"}
