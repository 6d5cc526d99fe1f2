"""One shared suite every registered strategy must pass (as scikit-learn's parametrize_with_checks)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from flcore.config import RunConfig, apply_settings
from flcore.exceptions import ConfigError, UnknownNameError
from flcore.federation.strategies import REGISTRY, build_strategy, get_spec

pytestmark = pytest.mark.usefixtures("flower_task")


#: Strategies that aggregate weight arrays (the fedxgb ones merge boosters: tests/test_xgboost.py).
WEIGHT_STRATEGIES = sorted(n for n in REGISTRY if not n.startswith("fedxgb"))


def _replies(seed: int, k: int = 5) -> list[Message]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(rng.normal(size=(4, 3)).astype(np.float32))}),
                "metrics": MetricRecord({"num-examples": 10 * (i + 1), "train-loss": float(i)}),
                "site": ConfigRecord({"site-name": f"s{i}"}),
            }
        )
        out.append(Message(content=content, dst_node_id=0, message_type="train"))
    return out


def _initial() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros((4, 3), dtype=np.float32))})


def _build(name: str, sites: int = 5) -> Strategy:
    strategy = build_strategy(apply_settings(RunConfig(), {"strategy": name}), sites)
    inner = strategy
    while "strategy" in vars(inner):  # the screen (and other wrappers) around Flower's strategy
        inner = inner.strategy  # type: ignore[attr-defined]
    if hasattr(inner, "current_arrays"):  # FedOpt family keeps the global model
        inner.current_arrays = {k: a.numpy() for k, a in _initial().items()}  # type: ignore[attr-defined]
    return strategy


@pytest.mark.parametrize("name", WEIGHT_STRATEGIES)
def test_every_strategy_aggregates_to_finite_arrays_of_the_right_shape(name: str) -> None:
    arrays, metrics = _build(name).aggregate_train(1, _replies(0))
    assert arrays is not None
    w = arrays["w"].numpy()
    assert w.shape == (4, 3) and np.isfinite(w).all()
    assert metrics is not None


@pytest.mark.parametrize("name", WEIGHT_STRATEGIES)
def test_every_strategy_is_deterministic(name: str) -> None:
    random.seed(0)
    a, _ = _build(name).aggregate_train(1, _replies(1))
    random.seed(0)
    b, _ = _build(name).aggregate_train(1, _replies(1))
    np.testing.assert_array_equal(a["w"].numpy(), b["w"].numpy())  # type: ignore[index]


@pytest.mark.parametrize("name", WEIGHT_STRATEGIES)
def test_every_strategy_handles_empty_replies(name: str) -> None:
    arrays, _ = _build(name).aggregate_train(1, [])
    assert arrays is None


@pytest.mark.parametrize("name", WEIGHT_STRATEGIES)
def test_every_strategy_ignores_error_replies(name: str) -> None:
    from flwr.app import Error

    # Fresh replies per call: Flower's FedMedian/FedTrimmedAvg pop arrays out of them.
    good = _replies(2)
    failed = Message(Error(code=1, reason="site crashed"), reply_to=good[0])
    random.seed(0)
    with_error, _ = _build(name).aggregate_train(1, [*good, failed])
    random.seed(0)
    without, _ = _build(name).aggregate_train(1, _replies(2))
    np.testing.assert_array_equal(with_error["w"].numpy(), without["w"].numpy())  # type: ignore[index]


def test_unknown_strategy_lists_registered_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"Unknown strategy 'fedsgd'. Registered strategies: .*fedavg"):
        get_spec("fedsgd")


def test_krum_needs_enough_sites() -> None:
    cfg = apply_settings(RunConfig(), {"strategy": "krum", "krum-malicious": 1})
    with pytest.raises(ConfigError, match=r"Strategy 'krum' needs at least 5 sites per round"):
        build_strategy(cfg, 3)


def test_trimmed_mean_drops_the_outlier() -> None:
    # Hand-computed: five sites send 1, 2, 3, 4, 1000; trimming 20% at each end leaves 2, 3, 4.
    replies = []
    for v in (1.0, 2.0, 3.0, 4.0, 1000.0):
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(np.array([v], dtype=np.float32))}),
                "metrics": MetricRecord({"num-examples": 1}),
            }
        )
        replies.append(Message(content=content, dst_node_id=0, message_type="train"))
    strategy = build_strategy(apply_settings(RunConfig(), {"strategy": "fedtrimmedavg", "trim-beta": 0.2}), 5)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays["w"].numpy()[0] == pytest.approx(3.0)  # type: ignore[index]
