"""Deployed sites read their tables through the run's schema; the coordinator fits the encoding from their summaries.

The deployed ServerApp runs on the in-process grid against the suite's default
ClientApp, each node reading its own site folder (``data-dir`` in its node config),
as a SuperNode does: what travels is the schema (inside the settings), each site's
summary, and the fitted preprocessing; never rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, RecordDict

from domains.tabular.synthetic import write_sites
from flcore import scenario as registry
from flcore.data.schema import TableSchema
from flcore.exceptions import DataValidationError
from flcore.experiment.deployed import serverapp_main
from flcore.experiment.prepare import prepare_data
from flcore.federation.clientapp import make_client_app
from flcore.federation.engines import LocalGrid, task_identity
from flcore.serving.model import load_model


@pytest.fixture(scope="module")
def banks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("banks")
    write_sites(root, seed=3, scale=0.15)
    return root


def _deployed_run(banks: Path, out: Path, schema_setting: str) -> dict:
    sites = sorted(p for p in banks.iterdir() if p.is_dir())
    grid = LocalGrid(make_client_app(), len(sites))
    for context, site in zip(grid.contexts.values(), sites, strict=True):
        context.node_config = {"data-dir": str(site)}
    run_config = {
        "scenario": "tabular",
        "out-dir": str(out),
        "num-sites-expected": len(sites),
        "num-server-rounds": 2,
        "local-epochs": 1,
        "schema": schema_setting,
    }
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    with task_identity():  # what a SuperLink gives the ServerApp's process
        serverapp_main(grid, context)
    return json.loads((out / "results.json").read_text())


def test_deployed_sites_encode_their_tables_as_the_simulation_does_and_the_model_is_exported(
    banks: Path, tmp_path: Path
) -> None:
    setting = TableSchema.load(banks / "schema.toml").setting()
    results = _deployed_run(banks, tmp_path / "run", setting)

    # The preprocessing fitted from the sites' summaries over the wire equals the one the simulation fits in-process.
    sc = registry.get("tabular")
    cfg, params = sc.configure({"schema": setting, "local-epochs": 1})
    prepared = prepare_data(sc, cfg, banks, progress=lambda line: None, params=params)
    assert prepared.preprocessing is not None
    fitted = results["governance"]["preprocessing"]["result"]
    assert fitted["categories"] == prepared.preprocessing.categories
    assert fitted["columns"] == prepared.preprocessing.columns
    for column, mean in prepared.preprocessing.impute.items():
        assert fitted["impute"][column] == pytest.approx(mean, rel=1e-12)
    disclosed = {d["site"]: d for d in results["governance"]["preprocessing"]["disclosed"]}
    assert sorted(disclosed) == sorted(s.name for s in prepared.splits)
    for d in prepared.disclosures:
        assert disclosed[d.site]["category_sets"] == d.categories
        assert disclosed[d.site]["rows"] == d.rows

    # The federated model comes out of a deployed run too, and scores a bank's table through the same schema.
    model = load_model(tmp_path / "run")
    assert model.manifest["preprocessing"]["categories"] == fitted["categories"]
    assert model.manifest["trained_on"] == sorted(disclosed)
    table = next((banks / "bank_east").glob("*.csv"))
    rows = pd.read_csv(table).drop(columns="is_fraud").head(20)
    scores = model.predict_proba(rows)
    assert scores.shape == (20,) and np.isfinite(scores).all()
    assert results["models"]["federated"]["digest"] == model.digest


def test_deployed_sites_without_the_runs_schema_read_the_default_contract_and_name_what_is_missing(
    banks: Path, tmp_path: Path
) -> None:
    # A site reads with the run's schema only, never one lying beside its folder: without it, the tabular default
    # contract (a 'label' column) applies, and the site says which column it lacks and how to name another.
    with pytest.raises(DataValidationError, match=r"no 'label' column.*name the label column in the schema"):
        _deployed_run(banks, tmp_path / "run", "")


def test_a_deployed_run_is_reported_round_by_round_per_site_with_its_governance(banks: Path, tmp_path: Path) -> None:
    from flcore.cli import main

    results = _deployed_run(banks, tmp_path / "run", TableSchema.load(banks / "schema.toml").setting())
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    metric = results["primary_metric"]
    rounds = text.split("### Round by round")[1].split("###")[0]
    assert len([line for line in rounds.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]) == 2
    per_site = text.split("### Per site, after the last round")[1].split("###")[0]
    last = results["history"][-1]["per_site_evaluate"]
    for site, values in last.items():
        row = next(line for line in per_site.splitlines() if line.startswith(f"| {site} |"))
        assert f"| {int(values['num-examples'])} |" in row and f"{values[metric]:.3f}" in row
    assert "preprocessing from 3 sites' statistics" in text
    assert results["models"]["federated"]["digest"] in text and results["run_id"] in text
    # A deployed run has no baselines and no seeds to compare: it is reported alone, and says so.
    assert main(["report", str(tmp_path / "run"), str(tmp_path / "run"), "--out", str(tmp_path / "both")]) == 2
