"""Conformance checks of the package contracts, run against every registered adapter, task, scenario and strategy.

As scikit-learn's ``check_estimator`` and ``parametrize_with_checks`` do for
estimators, these checks are public so that a plug-in proves it fits the core:
:func:`check_adapter`, :func:`check_task`, :func:`check_scenario` and
:func:`check_strategy` run every check of one contract and raise one
:class:`ConformanceError` listing the failures; :func:`adapter_checks`,
:func:`task_checks`, :func:`scenario_checks` and :func:`strategy_checks` yield the
checks one by one, for ``pytest.mark.parametrize`` (with :func:`check_id` for
readable test ids).

How a new domain or strategy proves it fits
-------------------------------------------
* **A domain** registers its scenario under the ``flsuite.scenarios`` entry point;
  ``tests/test_conformance.py`` then runs :func:`scenario_checks` on it with the
  others: name and site noun, a policy that survives its TOML form, recommended
  settings that validate, synthetic sites its adapter reads in strict mode, and a
  task that passes the task checks on a slice of them. Its adapter also joins the
  bad-file checks of ``tests/test_adapter_conformance.py`` with an
  :class:`~flcore.checks.adapter.AdapterCase` saying how to damage its files.
* **A strategy** is added to ``REGISTRY`` in :mod:`flcore.federation.strategies`
  (with its summary naming the settings it reads, and its paper); the same test
  file runs :func:`strategy_checks` on it: it builds, refuses bad settings with a
  ConfigError naming them, aggregates hand-made replies to the model's shapes,
  repeats itself exactly, and survives an empty round, an error reply and a
  non-finite update (screened out).
* **A task** outside any scenario is checked with :func:`check_task` on a
  :class:`~flcore.checks.task.TaskCase` holding a few dozen records.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from flcore import scenario as registry
from flcore.checks.adapter import CHECKS as ADAPTER_CHECKS
from flcore.checks.adapter import AdapterCase, adapter_checks
from flcore.checks.scenario import CHECKS as SCENARIO_CHECKS
from flcore.checks.scenario import scenario_checks
from flcore.checks.strategy import CHECKS as STRATEGY_CHECKS
from flcore.checks.strategy import strategy_checks
from flcore.checks.task import TaskCase, task_checks, task_failures
from flcore.exceptions import ConformanceError
from flcore.scenario import Scenario

__all__ = [
    "AdapterCase",
    "ConformanceError",
    "TaskCase",
    "adapter_checks",
    "check_adapter",
    "check_id",
    "check_scenario",
    "check_strategy",
    "check_task",
    "scenario_checks",
    "strategy_checks",
    "task_checks",
]


def _run(subject: str, calls: Iterable[tuple[str, Callable[[], None]]]) -> None:
    """Run every check; collect failures (and exceptions that escaped) into one ConformanceError."""
    failures = []
    for name, call in calls:
        try:
            call()
        except AssertionError as err:
            failures.append(f"{name}: {err}")
        except Exception as err:  # a plug-in that crashes fails the check; say how
            failures.append(f"{name}: raised {type(err).__name__}: {err}")
    if failures:
        raise ConformanceError(subject, failures)


def check_adapter(case: AdapterCase) -> None:
    """Run every bad-file check (:mod:`flcore.checks.adapter`) on one adapter.

    Parameters
    ----------
    case : AdapterCase
        The adapter, how to write one valid site and which file to damage.

    Raises
    ------
    ConformanceError
        Listing every check the adapter fails.
    """
    with tempfile.TemporaryDirectory(prefix="flsuite-adapter-check-") as tmp:
        _run(f"adapter {case.name}", ((c.__name__, partial(c, case, _fresh(tmp, c.__name__))) for c in ADAPTER_CHECKS))


def check_task(case: TaskCase) -> None:
    """Run every task check (:mod:`flcore.checks.task`) on one task and its tiny data set.

    Parameters
    ----------
    case : TaskCase
        The task, a few dozen records it trains on and settings it accepts.

    Raises
    ------
    ConformanceError
        Listing every check the task fails.
    """
    failures = task_failures(case)
    if failures:
        raise ConformanceError(f"task {case.name}", failures)


def check_scenario(scenario: Scenario | str) -> None:
    """Run every scenario check (:mod:`flcore.checks.scenario`), task checks included, on one scenario.

    Parameters
    ----------
    scenario : Scenario or str
        The scenario, or the name it is registered under.

    Raises
    ------
    ConformanceError
        Listing every check the scenario fails.
    UnknownNameError
        If ``scenario`` is a name that is not registered.
    """
    sc = registry.get(scenario) if isinstance(scenario, str) else scenario
    with tempfile.TemporaryDirectory(prefix="flsuite-scenario-check-") as tmp:
        _run(f"scenario {sc.name}", ((c.__name__, partial(c, sc, _fresh(tmp, c.__name__))) for c in SCENARIO_CHECKS))


def check_strategy(name: str) -> None:
    """Run every strategy check (:mod:`flcore.checks.strategy`) on one registered strategy.

    Parameters
    ----------
    name : str
        The strategy's registry name.

    Raises
    ------
    ConformanceError
        Listing every check the strategy fails (an unknown name fails them all).
    """
    _run(f"strategy {name}", ((c.__name__, partial(c, name)) for c in STRATEGY_CHECKS))


def _fresh(root: str, name: str) -> Path:
    """An empty folder per check, all in ``root`` (the checks share data they make once next to it)."""
    folder = Path(root) / name
    folder.mkdir()
    return folder


def check_id(value: object) -> str:
    """A readable pytest id: a name as it is, a case's or scenario's name, a check's function name."""
    if isinstance(value, str):
        return value
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else getattr(value, "__name__", str(value))
