"""The suite's in-place weighted average: the same numbers as Flower's, read without copies, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedProx, FedYogi
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from flcore import keys
from flcore.config import RunConfig
from flcore.federation.strategies import averaging, build_strategy
from flcore.federation.strategies.averaging import FedAvg, array_view, to_array, weighted_average, with_fast_average
from flcore.federation.strategies.screen import update_problem

pytestmark = pytest.mark.usefixtures("flower_task")


def reply(arrays: dict[str, np.ndarray], n: int, site: str = "s") -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({keys.NUM_EXAMPLES: n, "train-loss": 1.0}),
            keys.SITE: ConfigRecord({keys.SITE_NAME: site}),
        }
    )
    return Message(content=content, dst_node_id=0, message_type="train")


@pytest.mark.parametrize(
    "values",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array(7, dtype=np.int64),  # 0-d, as a BatchNorm counter
        np.zeros(0, dtype=np.float64),
        np.linspace(-1, 1, 9, dtype=np.float16),
        np.arange(10.0)[::3],  # not contiguous
    ],
)
def test_to_array_writes_the_bytes_flower_writes_and_array_view_reads_them_back(values: np.ndarray) -> None:
    ours = to_array(values)
    assert ours.data == Array(values if values.flags.c_contiguous else np.ascontiguousarray(values)).data
    assert (ours.dtype, ours.shape) == (str(values.dtype), values.shape)
    view = array_view(ours)
    np.testing.assert_array_equal(view, values)
    assert view.dtype == values.dtype and not view.flags.writeable  # a view on the reply's bytes, not a copy


def test_array_view_falls_back_to_flower_for_fortran_order() -> None:
    values = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(array_view(Array(values)), values)


def test_weighted_average_hand_computed_over_several_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(averaging, "BLOCK", 4)  # 10 values: blocks of 4, 4 and 2
    a = np.arange(10, dtype=np.float32)
    b = np.full(10, 10.0, dtype=np.float32)
    c = np.full(10, -2.0, dtype=np.float32)
    out = weighted_average([ArrayRecord({"w": Array(x)}) for x in (a, b, c)], np.array([0.5, 0.25, 0.25]))
    np.testing.assert_array_equal(out["w"].numpy(), 0.5 * a + 2.0)  # type: ignore[union-attr]
    assert out["w"].numpy().dtype == np.float32  # type: ignore[union-attr]


def test_weighted_average_keeps_dtypes_and_shapes() -> None:
    records = [
        ArrayRecord({"w": Array(np.full((2, 2), v, np.float16)), "count": Array(np.array(v, np.int64))})
        for v in (1.0, 4.0)
    ]
    out = weighted_average(records, np.array([0.5, 0.5]))
    w, count = out["w"].numpy(), out["count"].numpy()  # type: ignore[union-attr]
    assert (w.dtype, w.shape, count.dtype, count.shape) == (np.float16, (2, 2), np.int64, ())
    np.testing.assert_array_equal(w, np.full((2, 2), 2.5, np.float16))
    assert int(count) == 2  # 2.5, truncated as astype does


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"w": np.zeros(3, np.float32)}, {"w": np.zeros(4, np.float32)}], "array 'w' differs between records"),
        ([{"w": np.zeros(3, np.float32)}, {"w": np.zeros(3, np.float64)}], "array 'w' differs between records"),
        ([{"w": np.zeros(3, np.float32)}, {"v": np.zeros(3, np.float32)}], "not every record holds the array 'w'"),
        ([{"w": np.zeros(3, np.float32)}, {"w": np.zeros(3, np.float32), "v": np.zeros(1)}], "different arrays"),
    ],
)
def test_weighted_average_refuses_records_that_do_not_match(records: list[dict[str, np.ndarray]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        weighted_average([ArrayRecord({k: Array(v) for k, v in r.items()}) for r in records], np.array([0.5, 0.5]))


def test_weighted_average_refuses_a_weight_count_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="2 records but 3 weights"):
        weighted_average([ArrayRecord({"w": Array(np.zeros(1))})] * 2, np.ones(3) / 3)


def test_fedavg_gives_flowers_average_on_many_sites_and_arrays() -> None:
    rng = np.random.default_rng(0)
    replies = [
        reply(
            {"a": rng.standard_normal((70, 30)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}, n
        )
        for n in rng.integers(1, 500, size=25).tolist()
    ]
    ours, ours_metrics = FedAvg().aggregate_train(1, replies)
    theirs, their_metrics = FlowerFedAvg().aggregate_train(1, replies)
    assert ours is not None and theirs is not None
    for key in ("a", "b"):
        np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy(), rtol=1e-5, atol=1e-6)  # type: ignore[union-attr]
    assert dict(ours_metrics) == dict(their_metrics)  # type: ignore[arg-type]


@pytest.mark.parametrize(("flower_cls", "kwargs"), [(FedProx, {"proximal_mu": 0.1}), (FedAdam, {}), (FedYogi, {})])
def test_strategies_built_on_fedavg_keep_their_own_steps(flower_cls: type, kwargs: dict[str, float]) -> None:
    rng = np.random.default_rng(1)
    initial = ArrayRecord({"w": Array(np.zeros(6, np.float32))})
    fast = with_fast_average(flower_cls)(**kwargs)
    plain = flower_cls(**kwargs)
    assert type(fast).__name__ == flower_cls.__name__
    assert type(fast).__mro__.index(FedAvg) < type(fast).__mro__.index(FlowerFedAvg)
    for strategy in (fast, plain):
        if hasattr(strategy, "current_arrays"):
            strategy.current_arrays = {k: a.numpy() for k, a in initial.items()}  # the previous global model
    for server_round in (1, 2):
        replies = [reply({"w": rng.standard_normal(6).astype(np.float32)}, n) for n in (10, 30, 60)]
        ours, _ = fast.aggregate_train(server_round, replies)
        theirs, _ = plain.aggregate_train(server_round, replies)
        np.testing.assert_allclose(ours["w"].numpy(), theirs["w"].numpy(), rtol=1e-5, atol=1e-6)  # type: ignore[index]


def test_the_registry_builds_the_fast_average() -> None:
    for name in ("fedavg", "fedavg-sizeweighted", "fedprox", "fedadam", "fedyogi"):
        strategy = build_strategy(RunConfig(strategy=name), 3)
        while hasattr(strategy, "strategy"):
            strategy = strategy.strategy
        assert isinstance(strategy, FedAvg), name


def test_the_screen_still_finds_non_finite_values_and_ignores_float_overflow_of_the_sum() -> None:
    big = np.full(4, np.finfo(np.float32).max, np.float32)  # finite, but its float32 sum overflows
    assert update_problem(ArrayRecord({"w": Array(big)})) is None
    bad = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    assert update_problem(ArrayRecord({"w": Array(bad)})) == (
        "3 of 4 values are not finite (1 NaN, 2 infinite; first in 'w')"
    )


def test_flower_and_the_suite_agree_on_records_built_by_either() -> None:
    values = [np.arange(5, dtype=np.float32) * k for k in (1, 2, 3)]
    contents = [RecordDict({"a": ArrayRecord({"w": to_array(v)}), "m": MetricRecord({"n": 1})}) for v in values]
    theirs = aggregate_arrayrecords(contents, "n")["w"].numpy()  # type: ignore[union-attr]
    ours = weighted_average([c.array_records["a"] for c in contents], np.ones(3) / 3)["w"].numpy()  # type: ignore[union-attr]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
