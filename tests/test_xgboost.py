"""XGBoost as a federated task: the booster exchange, Flower's FedXgbBagging, the checks, one real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from flcore import keys
from flcore import scenario as registry
from flcore.config import RunConfig, apply_settings
from flcore.data.site import FeatureStats, SiteData
from flcore.exceptions import ConfigError
from flcore.federation.strategies import build_strategy
from flcore.learning.xgb import (
    XGBoostModel,
    XGBoostTask,
    booster_bytes,
    booster_from_bytes,
    booster_problem,
    booster_record,
    perturb_leaves,
    record_bytes,
    tree_count,
)

#: Small trees, one thread: every fit below takes milliseconds.
TASK = XGBoostTask(booster_params={"eta": 0.3, "max_depth": 3}, threads=1)
FEATURES = 6


def site_data(seed: int, n: int = 300, name: str = "site") -> SiteData:
    """A learnable binary problem: the label follows the first two features, about 15% positives."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n) > 1.2).astype(np.int64)
    return SiteData(name, x, y)


def run_cfg(strategy: str = "fedxgb-bagging", **values: object) -> RunConfig:
    return apply_settings(RunConfig(), {"strategy": strategy, "local-epochs": 1, **values})


def initial_model(seed: int = 0) -> XGBoostModel:
    data = site_data(seed)
    return TASK.init_model(FeatureStats.of(data.x, data.y), seed=0)


def trained_update(start: ArrayRecord, data: SiteData, cfg: RunConfig) -> ArrayRecord:
    """What a site sends after one round: load the global model, boost once, export."""
    model = TASK.init_model(FeatureStats.of(data.x[:1]), 0)
    TASK.load_model_arrays(model, start)
    TASK.fit(model, data, cfg, first_round=0, num_rounds=1, seed=0)
    return TASK.update_arrays(model, cfg)


def base_score(raw: bytes) -> float:
    text = json.loads(raw)["learner"]["learner_model_param"]["base_score"]
    return float(str(text).strip("[]"))  # XGBoost 3 writes a vector: "[1.3E-1]"


def trees_of(raw: bytes) -> list[dict[str, list[float]]]:
    return json.loads(raw)["learner"]["gradient_booster"]["model"]["trees"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------
# The task's exchange
# --------------------------------------------------------------------------------------


def test_init_model_has_no_tree_and_the_positive_rate_as_base_score() -> None:
    data = site_data(0)
    stats = FeatureStats.of(data.x, data.y)
    rate = stats.positives / stats.count
    assert 0.05 < rate < 0.5  # the fixture is imbalanced, not trivially 0.5
    model = TASK.init_model(stats, seed=0)
    assert model.trees == 0
    raw = booster_bytes(model.booster)
    assert tree_count(raw) == 0
    assert base_score(raw) == pytest.approx(rate, rel=1e-5)


def test_fit_with_one_round_of_one_epoch_adds_exactly_one_tree() -> None:
    model = initial_model()
    data = site_data(1)
    out = TASK.fit(model, data, run_cfg(), first_round=0, num_rounds=1, seed=0)
    assert model.trees == 1 and model.loaded_trees == 0
    assert np.isfinite(out[keys.TRAIN_LOSS])
    TASK.fit(model, data, run_cfg(), first_round=1, num_rounds=1, seed=0)
    assert model.trees == 2 and model.loaded_trees == 1  # the tree it started from is the global one


def test_fit_refuses_dp() -> None:
    with pytest.raises(ConfigError, match="XGBoost trains without DP-SGD"):
        TASK.fit(initial_model(), site_data(1), run_cfg(), first_round=0, num_rounds=1, seed=0, dp=object())


def test_bagging_update_is_only_the_new_tree_and_cyclic_the_whole_ensemble() -> None:
    # A global model that already holds two trees.
    model = initial_model()
    TASK.fit(model, site_data(1), run_cfg(), first_round=0, num_rounds=2, seed=0)
    start = TASK.model_arrays(model)
    assert list(start.keys()) == ["0"] and tree_count(record_bytes(start)) == 2

    bagging = trained_update(start, site_data(2), run_cfg("fedxgb-bagging"))
    assert list(bagging.keys()) == ["0"]
    assert bagging["0"].numpy().dtype == np.uint8 and bagging["0"].numpy().ndim == 1
    raw = record_bytes(bagging)
    assert tree_count(raw) == 1
    assert booster_problem(raw) is None and booster_from_bytes(raw).num_boosted_rounds() == 1
    # It is the tree the site added, not one of the global ones.
    new_tree = trees_of(raw)[0]
    old_trees = trees_of(record_bytes(start))
    assert all(new_tree["split_conditions"] != t["split_conditions"] for t in old_trees)

    cyclic = trained_update(start, site_data(2), run_cfg("fedxgb-cyclic"))
    assert list(cyclic.keys()) == ["0"]
    full = record_bytes(cyclic)
    assert tree_count(full) == 3
    assert trees_of(full)[:2] == old_trees  # the global trees, unchanged, then the site's
    assert trees_of(full)[2]["split_conditions"] == new_tree["split_conditions"]


def test_model_arrays_round_trip() -> None:
    model = initial_model()
    TASK.fit(model, site_data(1), run_cfg(), first_round=0, num_rounds=2, seed=0)
    copy = initial_model(seed=5)
    TASK.load_model_arrays(copy, TASK.model_arrays(model))
    assert copy.trees == copy.loaded_trees == 2
    x = site_data(9).x
    np.testing.assert_array_equal(TASK.predict(copy, x), TASK.predict(model, x))


def test_baseline_rounds_grow_as_many_trees_as_the_federation() -> None:
    cfg = run_cfg("fedxgb-bagging", **{"num-server-rounds": 7})
    assert TASK.baseline_rounds(cfg, 5) == 35  # one tree per site per round
    cfg = run_cfg("fedxgb-cyclic", **{"num-server-rounds": 7, "local-epochs": 3})
    assert TASK.baseline_rounds(cfg, 5) == 7  # one site per round, local-epochs trees each (fit multiplies)


# --------------------------------------------------------------------------------------
# Flower's FedXgbBagging, as build_strategy builds it
# --------------------------------------------------------------------------------------


class StubGrid:
    """Just enough of a Grid for Flower's node sampling."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


def reply_to(msg: Message, arrays: ArrayRecord, site: str, n: int = 300) -> Message:
    content = RecordDict(
        {
            keys.ARRAYS: arrays,
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: n, keys.TRAIN_LOSS: 0.1}),
            keys.SITE: ConfigRecord({keys.SITE_NAME: site}),
        }
    )
    return Message(content, reply_to=msg)


def bagging_round(
    strategy: Strategy, start: ArrayRecord, sites: int, change: dict[int, object] | None = None
) -> tuple[ArrayRecord | None, list[Message]]:
    """configure_train with ``start``, each site boosts once on its own data, aggregate_train."""
    messages = list(strategy.configure_train(1, start, ConfigRecord(), StubGrid(sites)))  # type: ignore[arg-type]
    assert len(messages) == sites
    replies = []
    for i, msg in enumerate(messages):
        update = trained_update(msg.content[keys.ARRAYS], site_data(10 + i), run_cfg())  # type: ignore[arg-type]
        if change and i in change:
            update = booster_record(perturb_leaves(record_bytes(update), 0, change[i]))  # type: ignore[arg-type]
        replies.append(reply_to(msg, update, f"bank_{i}"))
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays, replies


@pytest.mark.usefixtures("flower_task")
@pytest.mark.parametrize("previous", [0, 2])
def test_bagging_appends_one_tree_per_site(previous: int) -> None:
    model = initial_model()
    if previous:
        TASK.fit(model, site_data(1), run_cfg(), first_round=0, num_rounds=previous, seed=0)
    start = TASK.model_arrays(model)
    strategy = build_strategy(run_cfg("fedxgb-bagging"), 3)
    arrays, replies = bagging_round(strategy, start, 3)
    assert arrays is not None and list(arrays.keys()) == ["0"]
    raw = record_bytes(arrays)
    assert booster_problem(raw) is None
    trees = trees_of(raw)
    assert len(trees) == previous + 3
    # The previous trees first, then each site's tree in reply order.
    assert trees[:previous] == trees_of(record_bytes(start))
    for i, reply in enumerate(replies):
        sent = trees_of(record_bytes(reply.content[keys.ARRAYS]))  # type: ignore[arg-type]
        assert trees[previous + i]["split_conditions"] == sent[0]["split_conditions"]
    # XGBoost loads the merged ensemble and predicts finite probabilities.
    merged = XGBoostModel(booster_from_bytes(raw))
    assert merged.trees == previous + 3
    p = TASK.predict(merged, site_data(99).x)
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    # The base score travelled with the ensemble.
    assert base_score(raw) == pytest.approx(base_score(record_bytes(start)))


# --------------------------------------------------------------------------------------
# booster_problem: the screen's test for tree ensembles
# --------------------------------------------------------------------------------------


def _one_tree() -> bytes:
    model = initial_model()
    TASK.fit(model, site_data(1), run_cfg(), first_round=0, num_rounds=1, seed=0)
    return booster_bytes(model.booster)


def test_booster_problem_accepts_real_boosters() -> None:
    assert booster_problem(booster_bytes(initial_model().booster)) is None  # no tree yet
    raw = _one_tree()
    assert booster_problem(raw) is None
    # Finite changes to the leaves keep it valid (and loadable).
    scaled = perturb_leaves(raw, 0, lambda v: 2.0 * v)
    assert booster_problem(scaled) is None and booster_from_bytes(scaled).num_boosted_rounds() == 1


@pytest.mark.parametrize(
    ("bad", "word"), [(np.nan, "NaN"), (np.inf, "Infinity"), (-np.inf, "-Infinity")], ids=["nan", "inf", "-inf"]
)
def test_booster_problem_names_a_non_finite_leaf(bad: float, word: str) -> None:
    raw = _one_tree()
    broken = perturb_leaves(raw, 0, lambda v: np.where(np.arange(v.size) == 0, bad, v))
    problem = booster_problem(broken)
    assert problem is not None and "non-finite" in problem and word in problem


def test_booster_problem_refuses_what_is_not_a_tree_ensemble() -> None:
    assert booster_problem(b"\x00\x01garbage") == "not XGBoost JSON"
    assert booster_problem(b"") == "not XGBoost JSON"
    no_trees = json.dumps({"learner": {"gradient_booster": {"model": {}}}}).encode()
    problem = booster_problem(no_trees)
    assert problem is not None and "not an XGBoost tree ensemble" in problem
    assert booster_problem(b"[1, 2, 3]") is not None  # JSON, but a list
    params = {"gbtree_model_param": {"num_trees": "0", "num_parallel_tree": "1"}, "iteration_indptr": [0]}
    not_a_list = json.dumps({"learner": {"gradient_booster": {"model": {"trees": {}, "tree_info": [], **params}}}})
    assert "trees is not a list" in str(booster_problem(not_a_list.encode()))
    # What Flower's merge would crash on (no tree parameters) fails the screen instead.
    bare = json.dumps({"learner": {"gradient_booster": {"model": {"trees": []}}}}).encode()
    assert "not an XGBoost tree ensemble" in str(booster_problem(bare))


def test_booster_problem_refuses_what_xgboost_cannot_load() -> None:
    model = initial_model()
    TASK.fit(model, site_data(1), run_cfg(), first_round=0, num_rounds=1, seed=0)
    tree_json = json.loads(booster_bytes(model.booster))
    tree = tree_json["learner"]["gradient_booster"]["model"]["trees"][0]
    leaf = tree["left_children"].index(-1)
    tree["split_conditions"][leaf] = "not a number"  # finite-looking JSON, but no leaf value
    problem = booster_problem(json.dumps(tree_json).encode())
    assert problem is not None and "XGBoost cannot load it" in problem


def test_perturb_leaves_changes_only_leaves_of_the_chosen_trees() -> None:
    model = initial_model()
    TASK.fit(model, site_data(1), run_cfg(), first_round=0, num_rounds=2, seed=0)
    raw = booster_bytes(model.booster)
    out = perturb_leaves(raw, 1, lambda v: -10.0 * v)
    before, after = trees_of(raw), trees_of(out)
    assert after[0] == before[0]
    leaf = [c == -1 for c in before[1]["left_children"]]
    assert any(leaf) and not all(leaf)
    for is_leaf, old, new in zip(leaf, before[1]["split_conditions"], after[1]["split_conditions"], strict=True):
        assert new == pytest.approx(-10.0 * old if is_leaf else old, rel=1e-6)


# --------------------------------------------------------------------------------------
# Settings refused with a way out
# --------------------------------------------------------------------------------------

FINANCE = "finance-five-banks"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "xgboost", "strategy": "fedavg"}, r"model=xgboost needs a tree strategy .*not strategy=fedavg"),
        (
            {"model": "xgboost", "strategy": "fedxgb-bagging", "local-epochs": 2},
            r"fedxgb-bagging with local-epochs=2: .*Set local-epochs=1",
        ),
        ({"model": "xgboost", "privacy": "dp"}, r"model=xgboost does not support privacy=dp.*Set privacy=none"),
        (
            {"model": "xgboost", "update-compression": "int8"},
            r"model=xgboost does not support update-compression=int8",
        ),
        (
            {"model": "mlp", "strategy": "fedxgb-bagging"},
            r"strategy=fedxgb-bagging merges XGBoost tree ensembles, but this model is a neural network",
        ),
    ],
    ids=["fedavg", "epochs", "dp", "codec", "mlp-bagging"],
)
def test_configure_refuses_settings_trees_cannot_run(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry.get(FINANCE).configure(values)


def test_model_xgboost_brings_its_own_defaults() -> None:
    cfg, params = registry.get(FINANCE).configure({"model": "xgboost"})
    assert params.model == "xgboost"
    # 10 rounds of 30 trees grown by all banks together: as many trees as the baselines' 300.
    assert cfg.strategy == "fedxgb-hist" and (cfg.num_server_rounds, cfg.local_epochs) == (10, 30)
    # Cyclic may boost several rounds per turn; the user's own settings win over the model defaults.
    cfg, _ = registry.get(FINANCE).configure({"model": "xgboost", "strategy": "fedxgb-cyclic", "local-epochs": 3})
    assert cfg.strategy == "fedxgb-cyclic" and cfg.local_epochs == 3
    # The MLP keeps the domain's recommendation.
    cfg, _ = registry.get(FINANCE).configure({})
    assert cfg.strategy == "fedavg-sizeweighted" and cfg.local_epochs == 5
    assert isinstance(registry.get(FINANCE).make_task(params), XGBoostTask)


# --------------------------------------------------------------------------------------
# One real run
# --------------------------------------------------------------------------------------


def test_cli_run_with_xgboost(tmp_path: Path) -> None:
    from domains.finance.scenario import make_data
    from flcore.cli import main
    from flcore.experiment.results import validate_results

    data = tmp_path / "banks"
    make_data(data, seed=0, scale=0.15)
    out = tmp_path / "out"
    code = main(
        [
            "run",
            FINANCE,
            "--data",
            str(data),
            "--set",
            "model=xgboost",
            "--set",
            "xgb-max-depth=3",
            "--set",
            "local-epochs=4",
            "--rounds",
            "3",
            "--out",
            str(out),
            "--quiet",
            "--engine",
            "inprocess",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    assert results["config"]["strategy"] == "fedxgb-hist"
    assert results["params"]["model"] == "xgboost"
    for arm in ("federated", "centralised", "local_only"):
        pr_auc = results["arms"][arm]["union"]["pr_auc"]
        assert pr_auc is not None and 0.0 < pr_auc <= 1.0, arm
    fed = results["arms"]["federated"]
    assert [r["round"] for r in fed["history"]] == [1, 2, 3]
    banks = {"bank_a", "bank_b", "bank_c", "bank_d", "bank_e"}
    hashes = []
    for r in fed["history"]:
        assert r["sites_rejected"] == {}
        assert set(r["sites_trained"]) == banks
        hashes.append(r["aggregate_hash"])
    assert len(set(hashes)) == 3  # the ensemble grew every round
    assert fed["rejected_updates"] == {}
    # What the communicator cost each bank, measured on its sockets, and who could see what.
    collective = fed["collective"]
    assert collective["trees"] == 12 and collective["max_bin"] == 256
    assert set(collective["per_site"]) == banks and collective["bytes_measured"]
    for cost in collective["per_site"].values():
        assert cost["bytes_sent"] > 0 and cost["bytes_received"] > 0 and cost["session_seconds"] > 0
    assert "gradient and hessian sums" in collective["trust"]["coordinator"]
    # The same number of trees in every arm, and no cover statistics in any exported model.
    for folder in ("federated", "centralised", "local_only/bank_a"):
        exported = json.loads((out / "models" / folder / "model.json").read_text())
        trees = exported["learner"]["gradient_booster"]["model"]["trees"]
        assert len(trees) == 12, folder
        assert all(h == 0.0 for t in trees for h in t["sum_hessian"]), folder
