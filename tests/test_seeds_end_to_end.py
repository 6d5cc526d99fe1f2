"""`flsuite run --seeds N` and `flsuite sweep` end to end, the federations in-process (no Ray).

The federated arm runs the suite's real ServerApp and ClientApp on the in-process
engine (tests/localgrid.py puts it in place of Flower's simulation engine), so two seeds
of medical-clinical take seconds. The engine itself is covered by the other end-to-end tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localgrid import RecordingEngine, recording_engine

from flcore.cli import main
from flcore.experiment.results import clean, validate_results
from flcore.experiment.seeds import file_sha256
from flcore.experiment.stats import summarise

ARMS = ("federated", "centralised", "local_only")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingEngine]:
    """The in-process engine for every test of this module."""
    with recording_engine(tmp_path_factory.mktemp("cache")) as fake:
        yield fake


def run_cli(args: list[str]) -> tuple[int, str]:
    """``main(args)`` and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def seeds_args(out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--engine",
        "recording",
        "medical-clinical",
        "--seeds",
        "2",
        "--rounds",
        "2",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def seeds_run(engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two seeds of medical-clinical, two rounds each: the folder, the engine's calls and the printed summary."""
    out = tmp_path_factory.mktemp("seeds") / "run"
    engine.calls.clear()
    code, printed = run_cli(seeds_args(out))
    assert code == 0
    return {"out": out, "calls": list(engine.calls), "printed": printed}


def test_each_seed_runs_once_and_writes_its_results(seeds_run: dict[str, Any]) -> None:
    out = seeds_run["out"]
    seed0, seed1 = load(out / "seed-0/results.json"), load(out / "seed-1/results.json")

    assert seeds_run["calls"] == [("fedavg", 0), ("fedavg", 1)]
    for seed, doc in ((0, seed0), (1, seed1)):
        validate_results(doc)
        assert doc.get("kind", "run") == "run"
        assert (doc["seed"], doc["seeds"], doc["config"]["seed"]) == (seed, [seed], seed)
        assert doc["rounds"] == 2 and len(doc["arms"]["federated"]["history"]) == 2
    # Another seed, another split and initial model: the federation's models differ from round 1.
    hashes = [[r["aggregate_hash"] for r in d["arms"]["federated"]["history"]] for d in (seed0, seed1)]
    assert hashes[0][0] != hashes[1][0] and hashes[0][1] != hashes[1][1]
    assert seed0["arms"]["local_only"]["per_site"] != seed1["arms"]["local_only"]["per_site"]
    # The rest of the configuration is the same.
    assert {k: v for k, v in seed0["config"].items() if k != "seed"} == {
        k: v for k, v in seed1["config"].items() if k != "seed"
    }


def test_summary_lists_both_seeds_and_holds_their_statistics(seeds_run: dict[str, Any]) -> None:
    out = seeds_run["out"]
    summary = load(out / "results.json")
    runs = [load(out / "seed-0/results.json"), load(out / "seed-1/results.json")]

    validate_results(summary)
    assert summary["kind"] == "seeds"
    assert (summary["scenario"], summary["strategy"], summary["rounds"], summary["seeds"]) == (
        "medical-clinical",
        "fedavg",
        2,
        [0, 1],
    )
    assert summary["runs"] == [
        {"seed": 0, "results": "seed-0/results.json", "sha256": file_sha256(out / "seed-0/results.json")},
        {"seed": 1, "results": "seed-1/results.json", "sha256": file_sha256(out / "seed-1/results.json")},
    ]
    assert summary["statistics"] == json.loads(json.dumps(clean(summarise(runs))))
    fed = summary["statistics"]["arms"]["federated"]["union"]
    assert fed["values"] == [r["arms"]["federated"]["union"]["roc_auc"] for r in runs]
    # The printed table shows the same numbers, to 4 digits.
    assert "2 seeds [0, 1]; roc_auc: mean [95% confidence interval]" in seeds_run["printed"]
    assert f"{fed['mean']:.4f} [{fed['ci_low']:.4f}, {fed['ci_high']:.4f}]" in seeds_run["printed"]


def test_every_arm_records_its_curve_round_by_round(seeds_run: dict[str, Any]) -> None:
    for seed in (0, 1):
        run = load(seeds_run["out"] / f"seed-{seed}/results.json")
        for arm in ARMS:
            curve = run["arms"][arm]["curve"]
            assert curve["metric"] == "roc_auc"
            assert len(curve["values"]) == 2
            assert all(isinstance(v, float) and 0 < v <= 1 for v in curve["values"]), (seed, arm, curve)
        # The federated curve is the federation's evaluate round.
        history = run["arms"]["federated"]["history"]
        assert run["arms"]["federated"]["curve"]["values"] == [r["evaluate"]["roc_auc"] for r in history]
        assert run["arms"]["centralised"]["curve"]["definition"] == run["arms"]["federated"]["curve"]["definition"]


def test_the_report_is_written_beside_the_summary(seeds_run: dict[str, Any]) -> None:
    out = seeds_run["out"]
    markdown = (out / "report.md").read_text()

    assert "## Per hospital" in markdown and "## Per seed" in markdown
    assert "mean over 2 seed(s) with the 95% confidence interval" in markdown
    assert "| 1 |" in markdown and "seed-1/results.json" in markdown
    assert (out / "report.html").read_text().count("<svg") == 3


def test_one_audit_trail_for_the_seeds(seeds_run: dict[str, Any]) -> None:
    entries = [json.loads(line) for line in (seeds_run["out"] / "audit.jsonl").read_text().splitlines()]

    ends = [e for e in entries if e["kind"] == "run-end"]
    assert len(ends) == 2 and ends[0]["run"] != ends[1]["run"]
    assert [e["round"] for e in entries if e["kind"] == "round"] == [1, 2, 1, 2]


def test_a_second_run_reuses_finished_seeds_and_fresh_runs_them_again(
    seeds_run: dict[str, Any], engine: RecordingEngine, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(seeds_run["out"], out)
    before = load(out / "results.json")
    trail = (out / "audit.jsonl").read_text()
    engine.calls.clear()

    assert run_cli(seeds_args(out))[0] == 0

    assert engine.calls == []
    again = load(out / "results.json")
    assert again["runs"] == before["runs"]
    assert again["statistics"] == before["statistics"]
    assert (out / "audit.jsonl").read_text() == trail  # nothing ran, nothing was audited

    assert run_cli(seeds_args(out, "--fresh", "--force"))[0] == 0

    assert engine.calls == [("fedavg", 0), ("fedavg", 1)]
    fresh = load(out / "results.json")
    assert [r["sha256"] for r in fresh["runs"]] != [r["sha256"] for r in before["runs"]]  # new files
    assert fresh["runs"][0]["sha256"] == file_sha256(out / "seed-0/results.json")
    # The same seed gives the same results.
    for arm in ARMS:
        assert fresh["statistics"]["arms"][arm]["union"] == before["statistics"]["arms"][arm]["union"]


def test_a_seed_with_other_settings_is_run_again(
    seeds_run: dict[str, Any], engine: RecordingEngine, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(seeds_run["out"], out)
    doc = load(out / "seed-1/results.json")
    doc["config"]["learning-rate"] = 0.5  # as if seed 1 had been run with another learning rate
    (out / "seed-1/results.json").write_text(json.dumps(doc))
    engine.calls.clear()

    assert run_cli(seeds_args(out, "--force"))[0] == 0

    assert engine.calls == [("fedavg", 1)]
    assert load(out / "seed-1/results.json")["config"]["learning-rate"] == 0.05


def test_seeds_and_resume_are_refused_together(
    seeds_run: dict[str, Any], engine: RecordingEngine, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    engine.calls.clear()

    code = main(seeds_args(tmp_path / "new", "--resume", str(seeds_run["out"] / "seed-0")))

    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--resume continues one seed's run; it cannot be combined with --seeds" in err
    assert "flsuite run medical-clinical --resume OUT/seed-S --out OUT/seed-S" in err
    assert engine.calls == []
    assert not (tmp_path / "new").exists()


def test_zero_seeds_are_refused(engine: RecordingEngine, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    engine.calls.clear()

    assert (
        main(["run", "--engine", "recording", "medical-clinical", "--seeds", "0", "--out", str(tmp_path), "--quiet"])
        == 2
    )

    assert "--seeds must be at least 1; got 0." in capsys.readouterr().err
    assert engine.calls == []


# --------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------


def sweep_args(out: Path, strategies: str) -> list[str]:
    options = ["--strategies", strategies, "--seeds", "2", "--rounds", "2", "--out", str(out), "--quiet"]
    return ["sweep", "--engine", "recording", "medical-clinical", *options]


def test_sweep_runs_each_strategy_over_the_same_seeds_and_ranks_them(
    seeds_run: dict[str, Any], engine: RecordingEngine, tmp_path: Path
) -> None:
    # fedavg's two seeds are those of the run above (same settings): the sweep reuses them.
    out = tmp_path / "sweep"
    shutil.copytree(seeds_run["out"], out / "fedavg")
    engine.calls.clear()

    code, printed = run_cli(sweep_args(out, "fedavg,fedprox"))

    assert code == 0
    assert engine.calls == [("fedprox", 0), ("fedprox", 1)]
    for name in ("fedavg", "fedprox"):
        summary = load(out / name / "results.json")
        assert (summary["kind"], summary["strategy"], summary["seeds"]) == ("seeds", name, [0, 1])
        assert (out / name / "report.md").is_file()
    markdown = (out / "report.md").read_text()
    assert "## Runs compared" in markdown and "## Ranking" in markdown
    assert "## Run: fedavg" in markdown and "## Run: fedprox" in markdown
    assert (out / "report.html").is_file()
    comparison = load(out / "comparison.json")
    assert (comparison["metric"], comparison["seeds"]) == ("roc_auc", [0, 1])
    ranking = comparison["ranking"]
    assert sorted(ranking["order"]) == ["fedavg", "fedprox"]
    (pair,) = ranking["pairs"]
    fed = {
        name: load(out / name / "results.json")["statistics"]["arms"]["federated"]["union"] for name in ranking["order"]
    }
    assert pair["differences"] == pytest.approx(
        [a - b for a, b in zip(fed[pair["a"]]["values"], fed[pair["b"]]["values"], strict=True)]
    )
    assert "(rank 1 = best; ties share)" in printed


@pytest.mark.parametrize(
    ("strategies", "message"),
    [
        ("fedavg", "--strategies needs at least two strategies to compare; got 'fedavg'."),
        ("fedavg, fedavg", "--strategies needs at least two strategies to compare; got 'fedavg, fedavg'."),
        ("fedavg,no-such-strategy", "no-such-strategy"),
    ],
)
def test_sweep_refuses_what_it_cannot_compare(
    engine: RecordingEngine, tmp_path: Path, capsys: pytest.CaptureFixture, strategies: str, message: str
) -> None:
    engine.calls.clear()

    assert main(sweep_args(tmp_path / "sweep", strategies)) == 2

    assert message in " ".join(capsys.readouterr().err.split())
    assert engine.calls == []
    assert not (tmp_path / "sweep").exists()
