"""Per-round curves of the baselines (``scoring.Curve``): scoring after each round never changes training."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from flcore import scenario
from flcore.config import RunConfig, apply_settings
from flcore.data.site import FeatureStats, SiteData, SiteSplit
from flcore.experiment.prepare import prepare_data
from flcore.experiment.scoring import CURVE_DEFINITION, Curve
from flcore.learning.xgb import XGBoostTask, booster_bytes

# --------------------------------------------------------------------------------------
# Curve on a stand-in task: which rounds are scored, and how sites are weighted
# --------------------------------------------------------------------------------------


class ConstantTask:
    """Predicts the model's number for every example; the metric "m" is that number (None for NaN)."""

    primary_metric = "m"

    def predict(self, model: float, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), model)

    def score(self, y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
        value = float(scores[0])
        return {"m": None if np.isnan(value) else value}


def split(name: str, n_test: int) -> SiteSplit:
    train = SiteData(name, np.zeros((4, 2), dtype=np.float32), np.array([0, 1, 0, 1]))
    test = SiteData(name, np.zeros((n_test, 2), dtype=np.float32), np.zeros(n_test, dtype=np.int64))
    return SiteSplit(name, train, test)


SPLITS = [split("a", 1), split("b", 3), split("empty", 0)]


def test_curve_weights_sites_by_their_test_examples() -> None:
    # Prepare: 2 rounds, one baseline round each; site a (1 test example) and b (3); "empty" is never scored.
    curve = Curve(ConstantTask(), SPLITS, rounds=2, baseline=2)  # type: ignore[arg-type]
    values = {"a": 0.5, "b": 0.9, "empty": 0.0}

    # Execute
    score = curve.after(values.__getitem__)
    score(1)
    values.update(a=1.0, b=0.6)
    score(2)

    # Assert: (0.5 * 1 + 0.9 * 3) / 4 = 0.8, then (1.0 * 1 + 0.6 * 3) / 4 = 0.7.
    assert curve.to_json() == {"metric": "m", "definition": CURVE_DEFINITION, "values": [0.8, pytest.approx(0.7)]}


def test_curve_scores_every_step_th_baseline_round() -> None:
    # 6 baseline rounds (e.g. bagged trees: one per site and round) on the axis of 2 federated rounds: step 3.
    curve = Curve(ConstantTask(), SPLITS, rounds=2, baseline=6)  # type: ignore[arg-type]
    seen: list[int] = []

    def model_for(site: str) -> float:
        seen.append(done)
        return 0.25 * done / 3

    score = curve.after(model_for)
    for done in range(1, 7):
        score(done)

    assert sorted(set(seen)) == [3, 6]
    assert curve.to_json()["values"] == [0.25, 0.5]


def test_curve_of_one_site_at_a_time_and_undefined_values() -> None:
    # Local-only: each site's own model scored on its own split only; b's metric is undefined in round 1.
    curve = Curve(ConstantTask(), SPLITS, rounds=3, baseline=3)  # type: ignore[arg-type]
    only_a = curve.after(lambda _: 0.4, only=SPLITS[0])
    only_b = curve.after(lambda _: float("nan") if len(curve.points) < 2 else 0.8, only=SPLITS[1])

    only_a(1)
    only_b(1)  # undefined: left out
    only_a(2)
    only_b(2)

    # Round 1: a alone (0.4); round 2: (0.4 * 1 + 0.8 * 3) / 4 = 0.7; round 3 never scored.
    assert curve.to_json()["values"] == [0.4, pytest.approx(0.7), None]
    assert set(curve.points[1]) == {"a"} and set(curve.points[2]) == {"a", "b"}


# --------------------------------------------------------------------------------------
# Scoring inside fit leaves training unchanged
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clinical() -> tuple[Any, RunConfig, SiteSplit]:
    """medical-clinical's task with dropout (train and eval mode differ), 2 local epochs, one hospital."""
    sc = scenario.get("medical-clinical")
    cfg, params = sc.configure({"num-server-rounds": 3, "local-epochs": 2, "dropout": 0.3})
    splits = prepare_data(sc, cfg, None, lambda _: None, params).splits
    return sc.make_task(params), cfg, splits[1]


def test_binary_task_trains_the_same_while_scored_every_round(clinical: tuple[Any, RunConfig, SiteSplit]) -> None:
    task, cfg, site = clinical
    stats = FeatureStats.of(site.train.x, site.train.y)
    plain, scored = task.init_model(stats, 0), task.init_model(stats, 0)
    rounds: list[int] = []
    scores: list[float] = []

    def on_round(k: int) -> None:
        rounds.append(k)
        scores.append(task.score(site.test.y, task.predict(scored, site.test.x))["roc_auc"])  # eval mode

    loss_plain = task.fit(plain, site.train, cfg, first_round=0, num_rounds=3, seed=0)
    loss_scored = task.fit(scored, site.train, cfg, first_round=0, num_rounds=3, seed=0, on_round=on_round)

    assert rounds == [1, 2, 3]  # after epochs 2, 4 and 6
    assert loss_scored == loss_plain
    state, reference = scored.state_dict(), plain.state_dict()
    assert list(state) == list(reference)
    for name, tensor in reference.items():
        assert torch.equal(state[name], tensor), name
    # The last call saw the trained model.
    assert scores[-1] == task.score(site.test.y, task.predict(plain, site.test.x))["roc_auc"]


def test_binary_task_with_dropout_depends_on_the_mode_it_trains_in(clinical: tuple[Any, RunConfig, SiteSplit]) -> None:
    # Scoring leaves the model in eval mode (no dropout). The test above would miss a fit that went on
    # training in that mode only if dropout changed nothing; it does change the weights.
    task, cfg, site = clinical
    stats = FeatureStats.of(site.train.x, site.train.y)
    plain, frozen = task.init_model(stats, 0), task.init_model(stats, 0)
    frozen.eval()
    frozen.train = lambda mode=True: frozen  # type: ignore[method-assign]  # fit can no longer switch to train mode

    task.fit(plain, site.train, cfg, first_round=0, num_rounds=1, seed=0)
    task.fit(frozen, site.train, cfg, first_round=0, num_rounds=1, seed=0)

    assert not frozen.training
    pairs = zip(plain.state_dict().values(), frozen.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


XGB = XGBoostTask(booster_params={"eta": 0.3, "max_depth": 3}, threads=1)


def xgb_data(seed: int, n: int) -> SiteData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n) > 1.0).astype(np.int64)
    return SiteData("site", x, y)


def test_xgboost_task_grows_the_same_trees_while_scored_every_round() -> None:
    train, test = xgb_data(0, 300), xgb_data(1, 100)
    cfg = apply_settings(RunConfig(), {"strategy": "fedxgb-bagging", "local-epochs": 2})
    stats = FeatureStats.of(train.x, train.y)
    plain, scored = XGB.init_model(stats, 0), XGB.init_model(stats, 0)
    seen: list[tuple[int, int, np.ndarray]] = []

    def on_round(k: int) -> None:
        seen.append((k, scored.trees, XGB.predict(scored, test.x)))

    loss_plain = XGB.fit(plain, train, cfg, first_round=0, num_rounds=3, seed=0)
    loss_scored = XGB.fit(scored, train, cfg, first_round=0, num_rounds=3, seed=0, on_round=on_round)

    assert [(k, trees) for k, trees, _ in seen] == [(1, 2), (2, 4), (3, 6)]  # local-epochs=2 trees per round
    assert loss_scored == loss_plain
    assert booster_bytes(scored.booster) == booster_bytes(plain.booster)
    final = XGB.predict(plain, test.x)
    np.testing.assert_array_equal(XGB.predict(scored, test.x), final)
    np.testing.assert_array_equal(seen[-1][2], final)
    assert not np.array_equal(seen[0][2], final)  # round 1 scored the ensemble as it was then
    assert (scored.trees, scored.loaded_trees) == (6, 0)
