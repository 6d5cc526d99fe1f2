"""Every registered scenario (its task included) and strategy passes the conformance checks of flcore.checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from flcore import scenario
from flcore.checks import (
    ConformanceError,
    TaskCase,
    check_id,
    check_scenario,
    check_strategy,
    check_task,
    scenario_checks,
    strategy_checks,
    task_checks,
)
from flcore.checks.scenario import CHECKS as SCENARIO_CHECKS
from flcore.checks.strategy import CHECKS as STRATEGY_CHECKS
from flcore.checks.task import check_scores, small_slice
from flcore.config import RunConfig
from flcore.data.site import FeatureStats, SiteData
from flcore.exceptions import TaskCheckError
from flcore.federation.strategies import REGISTRY
from flcore.learning.models import TabularMLP
from flcore.learning.task import AnomalyDetectionTask, BinaryClassificationTask
from flcore.learning.training import Standardize
from flcore.learning.xgb import XGBoostTask


@pytest.mark.parametrize(("sc", "check"), list(scenario_checks()), ids=check_id)
def test_scenario_conformance(sc: scenario.Scenario, check: Any, tmp_path: Path) -> None:
    check(sc, tmp_path)


@pytest.mark.parametrize(("name", "check"), list(strategy_checks()), ids=check_id)
def test_strategy_conformance(name: str, check: Any) -> None:
    check(name)


def test_every_registered_scenario_and_strategy_is_enumerated() -> None:
    assert {sc.name for sc, _ in scenario_checks()} == set(scenario.available())
    assert {name for name, _ in strategy_checks()} == set(REGISTRY)
    assert len(list(scenario_checks("medical-clinical"))) == len(SCENARIO_CHECKS)
    assert len(list(strategy_checks("krum"))) == len(STRATEGY_CHECKS)


# --------------------------------------------------------------------------------------
# The task checks on the core's own tasks, and on tasks that break the contract
# --------------------------------------------------------------------------------------


def tabular(n: int = 48, d: int = 6, seed: int = 0) -> SiteData:
    """A learnable binary problem, about a third positive."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return SiteData("tiny", x, (x[:, 0] + 0.3 * rng.normal(size=n) > 0.4).astype(np.int64))


class Autoencoder(nn.Module):
    """Reconstruction error of a one-layer bottleneck: one anomaly score per record."""

    def __init__(self, stats: FeatureStats) -> None:
        super().__init__()
        self.standardize = Standardize(stats)
        width = int(stats.mean.size)
        self.net = nn.Sequential(nn.Linear(width, 2), nn.Linear(2, width))

    def forward(self, x: Any) -> Any:
        z = self.standardize(x)
        return ((self.net(z) - z) ** 2).mean(dim=1)


CORE_CASES = [
    TaskCase("mlp", BinaryClassificationTask(build=lambda s: TabularMLP(s, hidden=(8,)), pos_weight=2.0), tabular()),
    TaskCase(
        "mlp-youden",
        BinaryClassificationTask(build=lambda s: TabularMLP(s, hidden=()), pos_weight=1.0, threshold_rule="youden"),
        tabular(),
    ),
    TaskCase("autoencoder", AnomalyDetectionTask(build=Autoencoder, threshold_quantile=0.9), tabular()),
    TaskCase(
        "xgboost",
        XGBoostTask(booster_params={"max_depth": 2}, threads=1),
        tabular(),
        RunConfig(strategy="fedxgb-bagging", local_epochs=1),
    ),
]


@pytest.mark.parametrize(("case", "check"), list(task_checks(CORE_CASES)), ids=check_id)
def test_core_task_conformance(case: TaskCase, check: Any) -> None:
    check(case)


@dataclass
class Noisy(BinaryClassificationTask):
    """Breaks three promises: scores outside [0, 1], a different model for the same seed, arrays loaded blindly."""

    calls: int = 0

    def predict(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        return super().predict(model, x) + 1.0

    def init_model(self, stats: FeatureStats, seed: int) -> nn.Module:
        self.calls += 1
        return super().init_model(stats, seed + self.calls)

    def load_model_arrays(self, model: nn.Module, arrays: Any) -> None:
        model.load_state_dict(arrays.to_torch_state_dict(), strict=False)


def test_check_task_lists_every_broken_promise() -> None:
    task = Noisy(build=lambda s: TabularMLP(s, hidden=(4,)), pos_weight=1.0)
    with pytest.raises(ConformanceError, match=r"task noisy fails \d conformance check") as caught:
        check_task(TaskCase("noisy", task, tabular()))
    failed = {line.split(":")[0] for line in caught.value.failures}
    assert {"check_builds_from_stats", "check_scores", "check_refuses_arrays_that_do_not_fit"} <= failed
    assert "check_declares" not in failed
    assert any("scores must lie in [0, 1]" in line for line in caught.value.failures)


def test_a_task_that_crashes_fails_the_check_with_a_message() -> None:
    mlp = BinaryClassificationTask(build=lambda s: TabularMLP(s), pos_weight=1.0)
    wrong = TaskCase("mlp-on-trees", mlp, tabular(), RunConfig(strategy="fedxgb-bagging", local_epochs=1))
    with pytest.raises(ConformanceError, match=r"check_declares: mlp-on-trees: raised ConfigError: strategy=fedxgb"):
        check_task(wrong)


def test_one_check_raises_an_assertion_naming_the_case() -> None:
    case = TaskCase("noisy", Noisy(build=lambda s: TabularMLP(s), pos_weight=1.0), tabular())
    with pytest.raises(TaskCheckError, match=r"noisy: a classifier's scores must lie in \[0, 1\]"):
        check_scores(case)


def test_small_slice_keeps_both_classes() -> None:
    y = np.r_[np.zeros(500), np.ones(3)].astype(np.int64)
    part = small_slice(SiteData("s", np.arange(503, dtype=np.float32).reshape(-1, 1), y), n=20)
    assert len(part) == 20 and int(part.y.sum()) == 3
    assert np.all(np.diff(part.x[:, 0]) > 0)  # records keep their order


def test_check_strategy_reports_an_unknown_name() -> None:
    with pytest.raises(
        ConformanceError, match=r"(?s)strategy fedsgd fails 7 conformance check.*Unknown strategy 'fedsgd'"
    ):
        check_strategy("fedsgd")


def test_check_scenario_runs_every_check_of_a_registered_name() -> None:
    check_scenario("medical-clinical")  # raises ConformanceError listing any failure
