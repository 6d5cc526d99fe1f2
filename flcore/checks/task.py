"""Conformance checks every learning task must pass: build, exchange, train, repeat and score as the core expects.

A task (:class:`~flcore.learning.task.Task`) proves it fits by passing every check
on a tiny seeded data set (:class:`TaskCase`), e.g. with pytest::

    @pytest.mark.parametrize(("case", "check"), task_checks([MY_CASE]), ids=check_id)
    def test_task(case, check):
        check(case)

What the checks hold a task to is what the federation relies on: a model built
from feature statistics; its arrays read back exactly after being loaded into
another model (the global model travels this way); a round of training that
returns finite metrics and an update the server can aggregate (for weights: the
same arrays, finite; for XGBoost: a booster the screen accepts); the same seed
giving the same model; one finite score per record (a probability in [0, 1] for
a classifier) and the same metric keys with or without an operating point; and
arrays that do not fit the model refused with an error naming the array, never
loaded silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from flcore.config import RunConfig
from flcore.data.site import FeatureStats, SiteData
from flcore.exceptions import TaskCheckError
from flcore.learning.task import AnomalyDetectionTask, Task
from flcore.learning.xgb import booster_problem, is_booster, record_bytes

#: Records a case's data should hold at most: every check trains on all of them, several times.
SMALL = 64


@dataclass(frozen=True)
class TaskCase:
    """What the checks need to know about one task.

    Parameters
    ----------
    name : str
        Shown in test ids and failures.
    task : Task
        The task under test.
    data : SiteData
        A tiny data set in the form the task trains on (tens of records, both classes
        where the task is a classifier); :func:`small_slice` cuts one from a site.
    cfg : RunConfig
        Settings the task accepts (its ``check_config`` passes); one local epoch keeps
        the checks fast.
    probabilities : bool, optional
        Whether scores are probabilities in [0, 1]. Default: every task but an
        :class:`~flcore.learning.task.AnomalyDetectionTask` (whose scores are errors).
    """

    name: str
    task: Task
    data: SiteData
    cfg: RunConfig = field(default_factory=lambda: RunConfig(local_epochs=1))
    probabilities: bool | None = None

    @property
    def classifier(self) -> bool:
        """Whether the task's scores must be probabilities."""
        if self.probabilities is not None:
            return self.probabilities
        return not isinstance(self.task, AnomalyDetectionTask)


Check = Callable[[TaskCase], None]


def _fail(case: TaskCase, message: str) -> None:
    raise TaskCheckError(f"{case.name}: {message}")


def small_slice(data: SiteData, n: int = SMALL) -> SiteData:
    """At most ``n`` records of ``data``: up to half of them positive, the rest negative, in their order."""
    y = np.asarray(data.y)
    positives = np.flatnonzero(y == 1)[: n // 2]
    negatives = np.flatnonzero(y != 1)[: n - len(positives)]
    keep = np.sort(np.concatenate([positives, negatives]))
    return SiteData(data.name, data.x[keep], data.y[keep], data.source, dict(data.info))


def _stats(case: TaskCase) -> FeatureStats:
    return FeatureStats.of(case.data.x, case.data.y)


def _arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}  # type: ignore[union-attr]


def _differences(a: ArrayRecord, b: ArrayRecord) -> list[str]:
    """Where two records differ: names, dtypes, shapes or bytes (empty if they are identical)."""
    left, right = _arrays(a), _arrays(b)
    if list(left) != list(right):
        return [f"array names {list(left)} against {list(right)}"]
    return [
        f"'{name}' ({left[name].dtype}{left[name].shape} against {right[name].dtype}{right[name].shape})"
        for name in left
        if left[name].dtype != right[name].dtype
        or left[name].shape != right[name].shape
        or left[name].tobytes() != right[name].tobytes()
    ]


def _non_finite(record: ArrayRecord) -> list[str]:
    """Names of the floating-point arrays holding NaN or infinite values."""
    return [
        name for name, a in _arrays(record).items() if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()
    ]


def _trained(case: TaskCase, seed: int = 0) -> Any:
    """A model built from the case's statistics and trained one round on its data."""
    model = case.task.init_model(_stats(case), seed)
    case.task.fit(model, case.data, case.cfg, first_round=0, num_rounds=1, seed=seed)
    return model


def check_declares(case: TaskCase) -> None:
    """The task names its primary metric, threshold scope, score kind and model family, and accepts its settings."""
    task = case.task
    if not isinstance(getattr(task, "primary_metric", None), str) or not task.primary_metric:
        _fail(case, "primary_metric must name the metric the scenario is judged on")
    if getattr(task, "threshold_scope", None) not in ("pooled", "site"):
        _fail(case, f"threshold_scope must be 'pooled' or 'site', got {getattr(task, 'threshold_scope', None)!r}")
    if getattr(task, "score_kind", None) not in ("probability", "anomaly"):
        _fail(case, f"score_kind must be 'probability' or 'anomaly', got {getattr(task, 'score_kind', None)!r}")
    if getattr(task, "model_family", None) not in ("torch", "xgboost"):
        _fail(case, f"model_family must be 'torch' or 'xgboost', got {getattr(task, 'model_family', None)!r}")
    task.check_config(case.cfg)  # a ConfigError here means the case's settings are wrong, and says why


def check_builds_from_stats(case: TaskCase) -> None:
    """``init_model`` builds a model from feature statistics; the same seed gives the same finite arrays."""
    stats = _stats(case)
    first = case.task.model_arrays(case.task.init_model(stats, 0))
    if len(first) == 0:
        _fail(case, "model_arrays of a new model holds no array")
    if bad := _non_finite(first):
        _fail(case, f"a new model holds non-finite values in {', '.join(bad)}")
    if diff := _differences(first, case.task.model_arrays(case.task.init_model(stats, 0))):
        _fail(case, f"two models built with seed 0 differ: {'; '.join(diff[:3])}")


def check_arrays_round_trip(case: TaskCase) -> None:
    """Arrays read from a model, loaded into another, read back exactly (get, set, get)."""
    task = case.task
    source = _trained(case)
    sent = task.model_arrays(source)
    target = task.init_model(_stats(case), 1)
    task.load_model_arrays(target, sent)
    if diff := _differences(sent, task.model_arrays(target)):
        _fail(case, f"arrays changed on the way through load_model_arrays: {'; '.join(diff[:3])}")
    x = case.data.x
    if not np.array_equal(task.predict(source, x), task.predict(target, x)):
        _fail(case, "a model loaded from another's arrays scores the records differently")


def check_fit_one_round(case: TaskCase) -> None:
    """A round of training returns finite metrics and an update the server can aggregate.

    For weights (``model_family="torch"``): the same arrays as the model's, of the
    same shapes and dtypes, finite, and not all unchanged. For boosted trees: one
    booster that parses, with finite numbers only.
    """
    task = case.task
    model = task.init_model(_stats(case), 0)
    before = task.model_arrays(model)
    out = task.fit(model, case.data, case.cfg, first_round=0, num_rounds=1, seed=0)
    if not isinstance(out, Mapping) or not out:
        _fail(case, f"fit must return its training metrics as a dict, got {out!r}")
    for key, value in out.items():
        if not isinstance(value, int | float) or not np.isfinite(value):
            _fail(case, f"fit returned a non-finite or non-numeric metric {key}={value!r}")
    update = task.update_arrays(model, case.cfg)
    if task.model_family == "xgboost":
        if not is_booster(update):
            _fail(case, f"the update of a tree model must be one uint8 booster array, got {list(update.keys())}")
        if problem := booster_problem(record_bytes(update)):
            _fail(case, f"the update is not a usable booster: {problem}")
        return
    old, new = _arrays(before), _arrays(update)
    if list(old) != list(new):
        _fail(case, f"the update holds arrays {list(new)}, the model {list(old)}")
    for name in old:
        if old[name].shape != new[name].shape or old[name].dtype != new[name].dtype:
            _fail(
                case,
                f"'{name}' was {old[name].dtype}{old[name].shape}, the update sends {new[name].dtype}{new[name].shape}",
            )
    if bad := _non_finite(update):
        _fail(case, f"the update holds non-finite values in {', '.join(bad)}")
    if all(np.array_equal(old[name], new[name]) for name in old):
        _fail(case, "a round of training left every array unchanged")


def check_same_seed_same_model(case: TaskCase) -> None:
    """Two models built and trained with the same seed on the same data are identical, and score alike."""
    task = case.task
    a, b = _trained(case), _trained(case)
    if diff := _differences(task.model_arrays(a), task.model_arrays(b)):
        _fail(case, f"the same seed gave different models: {'; '.join(diff[:3])}")
    if not np.array_equal(task.predict(a, case.data.x), task.predict(b, case.data.x)):
        _fail(case, "the same seed gave different scores")


def check_scores(case: TaskCase) -> None:
    """One finite score per record (a probability where the task is a classifier), and stable metric keys.

    A record's score does not depend on the others scored with it (the model
    scores in eval mode). ``score`` returns the primary metric, and the same keys
    with or without an operating point (Flower requires identical metric keys from
    every site).
    """
    task = case.task
    model = _trained(case)
    x, y = case.data.x, case.data.y
    scores = np.asarray(task.predict(model, x))
    if scores.shape != (len(x),):
        _fail(case, f"predict must return one score per record, shape ({len(x)},); got {scores.shape}")
    if not np.isfinite(scores).all():
        _fail(case, f"{int((~np.isfinite(scores)).sum())} of {len(scores)} scores are not finite")
    if case.classifier and not ((scores >= 0) & (scores <= 1)).all():
        _fail(case, f"a classifier's scores must lie in [0, 1]; got {scores.min()} to {scores.max()}")
    alone = np.asarray(task.predict(model, x[:1]))
    if not np.allclose(alone, scores[:1], rtol=1e-5, atol=1e-6):
        _fail(case, f"the first record scores {alone.tolist()} alone but {scores[:1].tolist()} among the others")
    plain = task.score(y, scores)
    if task.primary_metric not in plain:
        _fail(case, f"score does not return the primary metric '{task.primary_metric}': {sorted(plain)}")
    threshold = task.choose_threshold(y, scores)
    if threshold is not None and not np.isfinite(threshold):
        _fail(case, f"choose_threshold returned {threshold!r}; expected a finite number or None")
    at = task.score(y, scores, threshold if threshold is not None else float(np.median(scores)))
    if set(at) != set(plain):
        _fail(case, f"score's keys change with a threshold: {sorted(set(at) ^ set(plain))}")


def check_refuses_arrays_that_do_not_fit(case: TaskCase) -> None:
    """Arrays that do not fit the model are refused with an error naming the array, never loaded silently.

    Three records are tried: one with an array missing, one with an unexpected
    extra array, and (for weights) one whose array has a row more than the model's.
    """
    task = case.task
    good = dict(task.model_arrays(task.init_model(_stats(case), 0)).items())
    first = next(iter(good))
    variants: list[tuple[str, str, dict[str, Any]]] = [
        ("an array missing", first, {k: v for k, v in good.items() if k != first}),
        ("an extra array", "unexpected", {**good, "unexpected": Array(np.zeros(3, dtype=np.float32))}),
    ]
    if task.model_family != "xgboost":  # a booster is bytes: its length is no shape
        name, values = next(((k, v.numpy()) for k, v in good.items() if v.numpy().ndim >= 1), (first, None))
        if values is not None:
            variants.append(
                ("an array with a row more", name, {**good, name: Array(np.concatenate([values, values[:1]]))})
            )
    for what, name, arrays in variants:
        model = task.init_model(_stats(case), 0)
        try:
            task.load_model_arrays(model, ArrayRecord(arrays))
        except Exception as err:  # which type is the task's choice; the message must say what is wrong
            if name not in str(err) and "array" not in str(err):
                _fail(case, f"loading {what} raised an error that names neither '{name}' nor the arrays: {err}")
            continue
        _fail(case, f"load_model_arrays accepted {what} ('{name}') instead of refusing it")


CHECKS: tuple[Check, ...] = (
    check_declares,
    check_builds_from_stats,
    check_arrays_round_trip,
    check_fit_one_round,
    check_same_seed_same_model,
    check_scores,
    check_refuses_arrays_that_do_not_fit,
)


def task_checks(cases: Iterable[TaskCase]) -> Iterator[tuple[TaskCase, Check]]:
    """Every (case, check) pair, for ``pytest.mark.parametrize``."""
    for case in cases:
        for check in CHECKS:
            yield case, check


def task_failures(case: TaskCase) -> list[str]:
    """Run every check on ``case``; one line per check that failed (empty if it passes them all).

    A check fails by raising :class:`TaskCheckError`; any other exception that
    escapes the task is a failure too, reported with its type.
    """
    failures = []
    for check in CHECKS:
        try:
            check(case)
        except TaskCheckError as err:
            failures.append(f"{check.__name__}: {err}")
        except Exception as err:  # a task that crashes fails the check; say how
            failures.append(f"{check.__name__}: {case.name}: raised {type(err).__name__}: {err}")
    return failures
