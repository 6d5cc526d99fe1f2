"""The public Python API: what a notebook user calls, through the same code as the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from localgrid import RecordingEngine, recording_engine

import flcore
from flcore.exceptions import ConfigError, OutputFolderError

SC = "medical-clinical"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingEngine]:
    with recording_engine(tmp_path_factory.mktemp("cache")) as fake:
        yield fake


@pytest.fixture(scope="module")
def two_seeds(engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory) -> flcore.Run:
    out = tmp_path_factory.mktemp("api") / "run"
    return flcore.run(SC, engine="recording", seeds=2, rounds=1, out=out, settings={"local-epochs": 1})


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = "import sys, flcore; print(','.join(m for m in ('torch', 'flwr', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_scenarios_lists_every_registered_one() -> None:
    table = flcore.scenarios()
    assert {"finance-five-banks", SC, "medical-three-hospitals", "iot-vibration-fleet"} <= set(table.index)
    assert table.loc[SC, "domain"] == "medical" and table.loc[SC, "site"] == "hospital"


def test_run_returns_the_figures_of_its_results_json(two_seeds: flcore.Run, engine: RecordingEngine) -> None:
    results = json.loads((two_seeds.out / "results.json").read_text())
    stats = results["statistics"]
    assert two_seeds.metric == stats["metric"] == "roc_auc"
    figures = two_seeds.figures
    assert list(figures.index) == ["federated", "centralised", "local_only"]
    for arm in figures.index:
        assert figures.loc[arm, "roc_auc"] == stats["arms"][arm]["union"]["mean"]
        assert figures.loc[arm, "ci_low"] == stats["arms"][arm]["union"]["ci_low"]  # two seeds: an interval
    fed = figures.loc["federated"]
    assert fed["ci_low"] <= fed["roc_auc"] <= fed["ci_high"]
    assert sorted(two_seeds.per_site.index) == sorted(stats["sites"])
    assert {"results.json", "report.md", "report.html", "seed-0", "seed-1"} <= set(two_seeds.paths)


def test_run_refuses_like_the_command_line(two_seeds: flcore.Run, tmp_path: Path) -> None:
    with pytest.raises(OutputFolderError, match="finished run"):
        flcore.run(SC, engine="recording", seeds=1, rounds=1, out=two_seeds.out / "seed-0")
    with pytest.raises(ConfigError, match="local-epochs"):
        flcore.run(SC, engine="recording", rounds=1, out=tmp_path / "x", settings={"local-epochs": 0})


def test_report_and_check_site(two_seeds: flcore.Run, tmp_path: Path) -> None:
    paths = flcore.write_report(two_seeds, out=tmp_path / "report")
    assert sorted(p.name for p in paths) >= ["report.html", "report.md"]
    flcore.scenarios()  # the registry is loaded; a site check reads its domain's adapter
    from flcore import scenario

    scenario.get(SC).make_data(tmp_path / "data", 0)
    checked = flcore.check_site("medical", tmp_path / "data")
    assert checked.ok and len(checked.sites) == 3


def test_sweep_returns_each_strategys_run(engine: RecordingEngine, tmp_path: Path) -> None:
    runs = flcore.sweep(SC, ["fedavg", "fedprox"], engine="recording", seeds=2, rounds=1, out=tmp_path / "sweep")
    assert sorted(runs) == ["fedavg", "fedprox"]
    assert all(r.results["statistics"]["n_seeds"] == 2 for r in runs.values())
    assert (tmp_path / "sweep" / "report.html").is_file()
