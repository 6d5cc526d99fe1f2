"""One small run of finance-five-banks through the real Flower simulation engine, via the CLI.

The default engine, as a user types the command: Ray. Most other end-to-end tests run the same
ServerApp and ClientApp on the in-process grid (``--engine inprocess``); what only Ray does
(worker processes, counted in the peak memory) is checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domains.finance.scenario import make_data
from flcore.cli import main
from flcore.experiment.results import validate_results


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    data = root / "banks"
    make_data(data, seed=0, scale=0.15, file_format="parquet")
    out = root / "out"
    code = main(
        [
            "run",
            "finance-five-banks",
            "--data",
            str(data),
            "--rounds",
            "3",
            "--seed",
            "1",
            "--set",
            "local-epochs=3",
            "--set",
            "batch-size=32",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_results_follow_the_schema(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    validate_results(results)
    assert results["scenario"] == "finance-five-banks" and results["seed"] == 1
    assert results["strategy"] == "fedavg-sizeweighted" and results["rounds"] == 3
    assert results["config"]["local-epochs"] == 3 and results["config"]["batch-size"] == 32


def test_federated_arm_ran_every_round_with_every_bank(run_dir: Path) -> None:
    fed = json.loads((run_dir / "results.json").read_text())["arms"]["federated"]
    assert [r["round"] for r in fed["history"]] == [1, 2, 3]
    for r in fed["history"]:
        assert r["sites_sampled"] == 5 and r["sites_replied"] == 5 and r["sites_failed"] == 0
        assert r["bytes_sent"] > 0 and r["bytes_received"] > 0
        assert set(r["per_site_evaluate"]) == {"bank_a", "bank_b", "bank_c", "bank_d", "bank_e"}
    # Model of about 10k float32 parameters, to 5 banks and back, per round (train + evaluate out).
    assert fed["bytes_sent"] > 3 * 5 * 4 * 10_000
    # The totals add the statistics round before round 1: small (config out, sums back), never zero.
    for way in ("sent", "received"):
        setup = fed[f"bytes_{way}"] - sum(r[f"bytes_{way}"] for r in fed["history"])
        assert 0 < setup < fed["history"][0][f"bytes_{way}"]
    assert fed["wall_time_s"] > 0


def test_every_arm_is_scored_on_test_splits_of_every_bank(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    sites = {s["name"]: s for s in results["data"]["sites"]}
    n_test = sum(s["n_test"] for s in sites.values())
    for arm in ("federated", "centralised", "local_only"):
        a = results["arms"][arm]
        assert a["union"]["n"] == n_test  # the union of test splits, not training data
        for name, m in a["per_site"].items():
            assert m["n"] == sites[name]["n_test"]
            assert m["pr_auc"] is None or 0.0 <= m["pr_auc"] <= 1.0
    assert set(results["arms"]["local_only"]["per_site_model_on_union"]) == set(sites)


def test_federated_learns_something(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    fed = results["arms"]["federated"]
    # Fraud is ~0.6% of the union: a model that learned nothing has PR-AUC near 0.006.
    assert fed["union"]["pr_auc"] > 0.1
    assert fed["union"]["roc_auc"] > 0.75


def test_peak_memory_counts_the_simulation_workers(run_dir: Path) -> None:
    res = json.loads((run_dir / "results.json").read_text())["resources"]
    assert res["peak_processes"] > 1  # the simulation workers are counted
    assert 100 * 2**20 < res["peak_rss_bytes"] < 24 * 2**30
