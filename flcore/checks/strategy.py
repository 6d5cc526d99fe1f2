"""Conformance checks every registered strategy must pass: it builds, validates, aggregates and screens as expected.

A strategy proves it fits by being registered (``REGISTRY`` in
:mod:`flcore.federation.strategies`) and passing every check here, e.g. with pytest::

    @pytest.mark.parametrize(("name", "check"), strategy_checks(), ids=check_id)
    def test_strategy(name, check):
        check(name)

Each check builds the strategy with :func:`~flcore.federation.strategies.build_strategy`
(so inside the screen of non-finite updates, as every run does), runs Flower's
``configure_train`` on a stand-in grid of :data:`SITES` sites, answers every
message with a hand-made reply and aggregates them. Weight strategies get small
float32 arrays; tree strategies (:data:`~flcore.learning.xgb.TREE_STRATEGIES`) get
boosters of one tree, grown on a few seeded records.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy
from flwr.supercore.task_identity import TaskIdentity

from flcore import keys
from flcore.config import RunConfig, apply_settings, settings_of
from flcore.data.site import FeatureStats, SiteData
from flcore.exceptions import ConfigError, StrategyCheckError
from flcore.federation.strategies import REGISTRY, build_strategy, get_spec
from flcore.learning.xgb import (
    TREE_STRATEGIES,
    XGBoostTask,
    booster_bytes,
    booster_problem,
    booster_record,
    is_booster,
    perturb_leaves,
    record_bytes,
)

#: Sites of the stand-in federation: enough for Krum's n > 2f + 2 with one of them screened out.
SITES = 6

#: Small trees on one thread: a booster of one tree grows in milliseconds.
_TREES = XGBoostTask(booster_params={"max_depth": 2, "eta": 0.3}, threads=1)

Check = Callable[[str], None]
#: ``update(site_index)``: the arrays one site sends (a fresh record every call: some Flower strategies consume them).
Update = Callable[[int], ArrayRecord]


def _fail(name: str, message: str) -> None:
    raise StrategyCheckError(f"{name}: {message}")


class _Grid:
    """Just enough of a Flower Grid for node sampling."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


@contextmanager
def _flower_run() -> Iterator[None]:
    """Flower's task identity (needed to build Messages outside a run) and a seeded ``random``; both restored after."""
    saved = {key: getattr(TaskIdentity, key) for key in ("_task_id", "_run_id", "_node_id")}
    state = random.getstate()
    for key, value in saved.items():
        if value is None:
            setattr(TaskIdentity, key, 0 if key == "_node_id" else 1)
    random.seed(0)  # Flower samples nodes with ``random``
    try:
        yield
    finally:
        random.setstate(state)
        for key, value in saved.items():
            setattr(TaskIdentity, key, value)


def _cfg(name: str, **values: object) -> RunConfig:
    return apply_settings(RunConfig(), {"strategy": name, **values})


def _tree_data(seed: int) -> SiteData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=40) > 0.5).astype(np.int64)
    return SiteData(f"site-{seed}", x, y)


@dataclass(frozen=True)
class _Inputs:
    """A round's hand-made inputs: the global model, each site's update, a non-finite update."""

    initial: ArrayRecord
    update: Update
    non_finite: Update


def _inputs(name: str) -> _Inputs:
    return _tree_inputs(name) if name in TREE_STRATEGIES else _weight_inputs()


def _weight_inputs() -> _Inputs:
    """Two float32 arrays per site, drawn from the site's seed; the non-finite one holds a NaN."""

    def weights(i: int, bad: bool = False) -> ArrayRecord:
        rng = np.random.default_rng(i)
        w = rng.normal(size=(4, 3)).astype(np.float32)
        if bad:
            w[1, 2] = np.nan
        return ArrayRecord({"w": Array(w), "b": Array(rng.normal(size=2).astype(np.float32))})

    start = ArrayRecord({"w": Array(np.zeros((4, 3), np.float32)), "b": Array(np.zeros(2, np.float32))})
    return _Inputs(start, weights, lambda i: weights(i, bad=True))


def _tree_inputs(name: str) -> _Inputs:
    """A booster without trees, and each site's one-tree update on its own records (non-finite: NaN leaves)."""
    cfg = _cfg(name, **{"local-epochs": 1})
    first = _tree_data(0)
    raw = booster_bytes(_TREES.init_model(FeatureStats.of(first.x, first.y), 0).booster)

    def booster(i: int) -> bytes:
        if name == "fedxgb-hist":  # the sites of a session all end it holding the same ensemble
            i = 0
        model = _TREES.init_model(FeatureStats.of(first.x[:1]), 0)
        _TREES.load_model_arrays(model, booster_record(raw))
        _TREES.fit(model, _tree_data(i), cfg, first_round=0, num_rounds=1, seed=0)
        return record_bytes(_TREES.update_arrays(model, cfg))

    return _Inputs(
        booster_record(raw),
        lambda i: booster_record(booster(i)),
        lambda i: booster_record(perturb_leaves(booster(i), 0, lambda v: v * np.nan)),
    )


class _StandInSession:
    """What ``fedxgb-hist`` opens each round, without a communicator: the checks answer for the sites."""

    def worker_args(self) -> dict[str, object]:
        return {"kind": "rabit", "port": 0, "sites": []}

    def seconds(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def _communicator(name: str) -> dict[str, object]:
    """The keyword a strategy whose sites train together needs (``fedxgb-hist``): a stand-in session opener."""
    return {"open_session": lambda sites: _StandInSession()} if name == "fedxgb-hist" else {}


def _reply(message: Message, arrays: ArrayRecord, i: int) -> Message:
    content = RecordDict(
        {
            keys.ARRAYS: arrays,
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10 * (i + 1), keys.TRAIN_LOSS: 0.1 * i}),
            keys.SITE: ConfigRecord({keys.SITE_NAME: f"site-{i}"}),
        }
    )
    return Message(content, reply_to=message)


def _round(
    name: str,
    inputs: _Inputs,
    answer: Callable[[Message, int], Message | None],
    on_reject: Callable[[int, str, str], None] | None = None,
) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """Build the strategy, configure round 1 on the stand-in grid, aggregate ``answer(message, i)`` of each message.

    ``answer`` returns None for a site that does not reply.
    """
    with _flower_run():
        strategy = build_strategy(_cfg(name), SITES, on_reject, **_communicator(name))
        messages = list(strategy.configure_train(1, inputs.initial, ConfigRecord(), _Grid(SITES)))  # type: ignore[arg-type]
        replies = [r for i, m in enumerate(messages) if (r := answer(m, i)) is not None]
        return strategy.aggregate_train(1, replies)


def _honest(inputs: _Inputs) -> Callable[[Message, int], Message | None]:
    return lambda m, i: _reply(m, inputs.update(i), i)


def _same(a: ArrayRecord | None, b: ArrayRecord | None) -> bool:
    if a is None or b is None:
        return a is b
    return list(a.keys()) == list(b.keys()) and all(
        a[k].numpy().tobytes() == b[k].numpy().tobytes()  # type: ignore[union-attr]
        for k in a.keys()
    )


def _check_result(name: str, inputs: _Inputs, arrays: ArrayRecord | None, what: str) -> None:
    """The aggregate has the shape the strategy's family promises, with finite values."""
    if arrays is None:
        _fail(name, f"{what}: no aggregate from usable replies")
        return
    if name in TREE_STRATEGIES:
        if not is_booster(arrays):
            _fail(name, f"{what}: a tree strategy must return one uint8 booster array, got {list(arrays.keys())}")
        if problem := booster_problem(record_bytes(arrays)):
            _fail(name, f"{what}: the merged booster is not usable: {problem}")
        return
    for key, expected in inputs.initial.items():
        got = arrays[key].numpy() if key in arrays else None  # type: ignore[union-attr]
        want = expected.numpy()  # type: ignore[union-attr]
        if got is None or got.shape != want.shape or not np.issubdtype(got.dtype, np.floating):
            found = "nothing" if got is None else f"{got.dtype}{got.shape}"
            _fail(name, f"{what}: '{key}' should be floating-point of shape {want.shape}, got {found}")
        elif not np.isfinite(got).all():
            _fail(name, f"{what}: '{key}' holds non-finite values")
    if set(arrays.keys()) != set(inputs.initial.keys()):
        _fail(name, f"{what}: arrays {sorted(arrays.keys())}, expected {sorted(inputs.initial.keys())}")


def check_builds(name: str) -> None:
    """The strategy is registered under its name, with a one-line summary and a citation, and builds."""
    spec = get_spec(name)
    if spec.name != name:
        _fail(name, f"registered as {name!r} but named {spec.name!r}")
    if not spec.summary.strip() or "\n" in spec.summary or not spec.paper.strip():
        _fail(name, "every strategy needs a one-line summary and the paper (or source) it implements")
    with _flower_run():
        strategy = build_strategy(_cfg(name), SITES)
    if not isinstance(strategy, Strategy):
        _fail(name, f"build_strategy returned {type(strategy).__name__}, not a Flower Strategy")


def _bad_value(field_meta: dict[str, object]) -> object:
    low, high, choices = field_meta.get("low"), field_meta.get("high"), field_meta.get("choices")
    if isinstance(low, int | float):
        return low - 1
    if isinstance(high, int | float):
        return high + 1
    return "no-such-choice" if choices else None


def check_rejects_bad_parameters(name: str) -> None:
    """Bad settings are refused with a ConfigError naming the setting.

    Every run setting the strategy's summary names, set out of its declared range;
    a federation smaller than the strategy needs (naming ``fraction-train``); and
    ``privacy=client-dp``, which a strategy either builds with or refuses naming
    ``privacy``.
    """
    spec = get_spec(name)
    fields = settings_of(RunConfig)
    named = [k for k in re.findall(r"\b[a-z][a-z0-9]*(?:-[a-z0-9]+)+\b", spec.summary) if k in fields]
    for key in named:
        bad = _bad_value(dict(fields[key].metadata))
        if bad is None:
            continue
        try:
            _cfg(name, **{key: bad})
        except ConfigError as err:
            if f"'{key}'" not in str(err):
                _fail(name, f"{key}={bad!r} was refused without naming the setting: {err}")
            continue
        _fail(name, f"{key}={bad!r} is out of range but was accepted")
    cfg = _cfg(name)
    needed = max(spec.min_sites(cfg), 1)
    if needed > 1:
        try:
            with _flower_run():
                build_strategy(cfg, needed - 1)
        except ConfigError as err:
            if name not in str(err) or "fraction-train" not in str(err):
                _fail(name, f"a federation of {needed - 1} sites was refused without naming the fix: {err}")
        else:
            _fail(name, f"built for {needed - 1} sites although it needs {needed}")
    try:
        with _flower_run():
            # The epsilon and delta a run resolves from its policy before it builds the strategy.
            build_strategy(_cfg(name, privacy="client-dp", **{"dp-epsilon": 1.0, "dp-delta": 1e-5}), SITES)
    except ConfigError as err:
        if "privacy" not in str(err):
            _fail(name, f"privacy=client-dp was refused without naming the setting: {err}")


def check_aggregates_to_expected_shapes(name: str) -> None:
    """Hand-made replies aggregate to finite arrays of the model's names and shapes (trees: one booster)."""
    inputs = _inputs(name)
    arrays, metrics = _round(name, inputs, _honest(inputs))
    _check_result(name, inputs, arrays, "honest replies")
    if metrics is None:
        _fail(name, "honest replies: no aggregated training metrics")


def check_same_inputs_same_result(name: str) -> None:
    """Two strategies built alike, given the same replies, return the same bytes."""
    inputs = _inputs(name)
    first, _ = _round(name, inputs, _honest(inputs))
    second, _ = _round(name, inputs, _honest(inputs))
    if not _same(first, second):
        _fail(name, "the same replies gave different aggregates")


def check_empty_replies(name: str) -> None:
    """A round without any reply aggregates to nothing, without raising."""
    arrays, _ = _round(name, _inputs(name), lambda m, i: None)
    if arrays is not None:
        _fail(name, "a round without replies produced a model")


def check_screens_non_finite_update(name: str) -> None:
    """One non-finite update is dropped and reported by site; the others aggregate as if it had not been sent."""
    inputs = _inputs(name)
    rejected: list[str] = []

    def poisoned(m: Message, i: int) -> Message:
        return _reply(m, inputs.non_finite(i) if i == 0 else inputs.update(i), i)

    arrays, _ = _round(name, inputs, poisoned, on_reject=lambda r, site, why: rejected.append(site))
    without, _ = _round(name, inputs, lambda m, i: _reply(m, inputs.update(i), i) if i else None)
    if rejected != ["site-0"]:
        _fail(name, f"expected the update of site-0 to be rejected and reported, got {rejected}")
    if not _same(arrays, without):
        _fail(name, "the aggregate with a screened update differs from the aggregate without it")
    if arrays is not None:
        _check_result(name, inputs, arrays, "with a non-finite update screened")


def check_ignores_error_replies(name: str) -> None:
    """A site that answers with an error is left out; the others aggregate as if it had not been asked."""
    inputs = _inputs(name)

    def failing(m: Message, i: int) -> Message:
        return Message(Error(code=1, reason="site crashed"), reply_to=m) if i == 0 else _reply(m, inputs.update(i), i)

    with_error, _ = _round(name, inputs, failing)
    without, _ = _round(name, inputs, lambda m, i: _reply(m, inputs.update(i), i) if i else None)
    if not _same(with_error, without):
        _fail(name, "an error reply changed the aggregate of the other replies")


CHECKS: tuple[Check, ...] = (
    check_builds,
    check_rejects_bad_parameters,
    check_aggregates_to_expected_shapes,
    check_same_inputs_same_result,
    check_empty_replies,
    check_screens_non_finite_update,
    check_ignores_error_replies,
)


def strategy_checks(name: str | None = None) -> Iterator[tuple[str, Check]]:
    """Every (strategy name, check) pair of ``name``, or of every registered strategy, for pytest."""
    for strategy in [name] if name is not None else sorted(REGISTRY):
        for check in CHECKS:
            yield strategy, check
