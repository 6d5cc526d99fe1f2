"""Small runs of both medical scenarios through the CLI, on the in-process grid (the same apps, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flcore.cli import main
from flcore.experiment.results import validate_results


@pytest.fixture(scope="module")
def imaging_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("med-e2e")
    data = root / "hospitals"
    assert main(["data", "make", "medical-three-hospitals", "--out", str(data), "--scale", "0.15"]) == 0
    out = root / "out"
    args = ["run", "medical-three-hospitals", "--data", str(data), "--rounds", "2", "--out", str(out), "--quiet"]
    args += ["--engine", "inprocess"]
    assert main([*args, "--set", "local-epochs=1", "--set", "channels=8,16"]) == 0
    return json.loads((out / "results.json").read_text())


def test_imaging_run_writes_valid_results_with_operating_points(imaging_results: dict) -> None:
    validate_results(imaging_results)
    assert imaging_results["primary_metric"] == "roc_auc" and imaging_results["domain"] == "medical"
    sites = {s["name"]: s for s in imaging_results["data"]["sites"]}
    assert set(sites) == {"hospital-a", "hospital-b", "hospital-c"}
    assert all(s["n_val"] > 0 for s in sites.values())
    for arm in ("federated", "centralised", "local_only"):
        for site, m in imaging_results["arms"][arm]["per_site"].items():
            assert 0.0 <= m["sensitivity"] <= 1.0 and 0.0 <= m["specificity"] <= 1.0, (arm, site)
    # Global models use one operating point; local-only models each their own.
    fed = imaging_results["arms"]["federated"]
    assert len({m["threshold"] for m in fed["per_site"].values()}) == 1
    assert fed["union"]["threshold"] == fed["per_site"]["hospital-a"]["threshold"]
    assert [r["sites_replied"] for r in fed["history"]] == [3, 3]


def test_clinical_run_on_the_real_data(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(["run", "medical-clinical", "--rounds", "3", "--out", str(out), "--quiet", "--engine", "inprocess"]) == 0
    )
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    assert sum(s["n_train"] + s["n_val"] + s["n_test"] for s in results["data"]["sites"]) == 569
    assert results["arms"]["federated"]["union"]["roc_auc"] > 0.9  # a real signal after only 3 rounds
