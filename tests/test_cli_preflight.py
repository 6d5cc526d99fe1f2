"""The command line refuses bad output folders and arguments before any work, with exit code 2.

Runs that must really happen use the in-process engine (tests/localgrid.py puts it in place of Ray), as in
tests/test_seeds_end_to_end.py; runs that must not happen fail the test if they start.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from localgrid import RecordingEngine, recording_engine

from flcore.cli import main

SC = "medical-clinical"
WRITTEN = "2024-01-02T03:04:05+00:00"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingEngine]:
    """The in-process engine for every test of this module."""
    with recording_engine(tmp_path_factory.mktemp("cache")) as fake:
        yield fake


class Started(Exception):
    """Raised by a stand-in for the work a command does once its checks passed."""


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every kind of work fail the test: runs, robustness tables, reports, deployments, data."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started although the command should have been refused first")

    from flcore.deploy import serve as deploy
    from flcore.experiment import arms as harness
    from flcore.experiment import robustness
    from flcore.reporting import report

    monkeypatch.setattr(harness, "run_experiment", fail)
    monkeypatch.setattr(robustness, "run_robustness", fail)
    monkeypatch.setattr(report, "build_report", fail)
    monkeypatch.setattr(deploy, "serve", fail)


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit code 2 and one paragraph on stderr; return it unwrapped."""
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.startswith("flsuite: error: ") and "Traceback" not in captured.err
    return " ".join(captured.err.split())


def fake_results(folder: Path, **extra: Any) -> Path:
    """A finished run's results.json (what the checks read: its time of writing and kind)."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "results.json"
    file.write_text(json.dumps({"kind": "run", "created_utc": WRITTEN, **extra}))
    return file


# --------------------------------------------------------------------------------------
# Output folders that cannot be written
# --------------------------------------------------------------------------------------


def test_run_refuses_an_out_that_is_a_file(tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")

    err = refused(["run", "--engine", "recording", SC, "--out", str(out), "--quiet"], capsys)

    assert f"--out {out} is a file, not a folder" in err
    assert "Expected a folder for the run's outputs" in err and "Choose another --out" in err
    assert out.read_text() == "not a folder"


def test_run_refuses_an_out_under_a_file(tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "run"

    err = refused(["run", "--engine", "recording", SC, "--out", str(out), "--quiet"], capsys)

    assert f"--out {out} cannot be created: {tmp_path / 'file'} is a file, not a folder" in err
    assert "Choose another --out" in err


def deny_writes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``os.access`` says no write to ``folder`` (tests run as root, where chmod does not stop writes)."""
    real = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_run_refuses_a_folder_it_cannot_write(
    tmp_path: Path, no_work: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    deny_writes(monkeypatch, out)

    err = refused(["run", "--engine", "recording", SC, "--out", str(out), "--quiet"], capsys)

    assert f"--out {out} is a folder this user cannot write to" in err and f"chmod u+w {out}" in err
    assert list(out.iterdir()) == []

    err = refused(["run", "--engine", "recording", SC, "--out", str(out / "new" / "run"), "--quiet"], capsys)

    assert f"this user cannot write to {out}, its nearest existing folder" in err
    assert not (out / "new").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0555")
def test_run_refuses_a_read_only_folder(tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        err = refused(["run", "--engine", "recording", SC, "--out", str(out), "--quiet"], capsys)
    finally:
        out.chmod(0o755)
    assert f"--out {out} is a folder this user cannot write to" in err


def test_run_refuses_an_audit_path_that_is_a_folder(
    tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(
        ["run", "--engine", "recording", SC, "--out", str(tmp_path / "out"), "--audit", str(tmp_path), "--quiet"],
        capsys,
    )

    assert f"--audit {tmp_path} is a folder, not a file" in err and f"--audit {tmp_path / 'audit.jsonl'}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["report", "RUN"],
        ["robustness", "--engine", "recording", SC],
        ["certs", "init", "--sites", "a,b"],
        ["sweep", "--engine", "recording", SC, "--strategies", "fedavg,fedprox"],
        ["serve", SC, "--insecure"],
    ],
)
def test_every_command_with_an_out_refuses_a_file(
    tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    out = tmp_path / "out"
    out.write_text("")
    command = [str(tmp_path) if a == "RUN" else a for a in command]

    err = refused([*command, "--out", str(out)], capsys)

    assert f"--out {out} is a file, not a folder" in err and "Choose another --out" in err


def test_commands_refuse_an_unwritable_out(
    tmp_path: Path, no_work: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    deny_writes(monkeypatch, tmp_path)
    for command in (
        ["robustness", "--engine", "recording", SC],
        ["report", str(tmp_path)],
        ["certs", "init", "--sites", "a,b"],
    ):
        err = refused([*command, "--out", str(tmp_path / "new")], capsys)
        assert f"--out {tmp_path / 'new'} cannot be created: this user cannot write to {tmp_path}" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# Finished runs are not overwritten without --force
# --------------------------------------------------------------------------------------


def test_run_refuses_a_folder_with_finished_results(
    tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    file = fake_results(out)
    before = file.read_bytes()

    err = refused(["run", "--engine", "recording", SC, "--out", str(out), "--quiet"], capsys)

    assert f"{out} holds the results of a finished run (results.json, written {WRITTEN})" in err
    assert "choose another --out, or pass --force to overwrite it" in err
    assert file.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no audit trail, no checkpoint


def test_serve_refuses_finished_results_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flcore.deploy import serve as deploy

    served: list[Any] = []
    monkeypatch.setattr(deploy, "serve", lambda opts, say: served.append(opts) or 0)
    out = tmp_path / "deployed"
    fake_results(out)

    err = refused(["serve", SC, "--insecure", "--out", str(out)], capsys)

    assert "holds the results of a finished run" in err and "--force" in err
    assert served == []
    assert main(["serve", SC, "--insecure", "--out", str(out), "--force"]) == 0
    assert [o.run.out for o in served] == [out]


def test_an_unfinished_run_still_points_at_resume_and_resume_continues_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flcore import scenario
    from flcore.config import to_dict
    from flcore.experiment import arms as harness
    from flcore.federation.checkpoint import CHECKPOINT_FILE, Checkpoint, write_checkpoint

    cfg, params = scenario.get(SC).configure({"num-server-rounds": 3})
    out = tmp_path / "out"
    fake_results(out)  # from an earlier, finished run the interrupted one was overwriting (--force)
    ckpt = Checkpoint("run-1", SC, to_dict(cfg), to_dict(params), 1, {"w": np.zeros(2, np.float32)})
    write_checkpoint(out / CHECKPOINT_FILE, ckpt)

    def started(*args: Any, **kwargs: Any) -> Any:
        raise Started(kwargs["resume"].run_id if kwargs.get("resume") else None)

    monkeypatch.setattr(harness, "run_experiment", started)

    err = refused(["run", "--engine", "recording", SC, "--out", str(out), "--quiet"], capsys)

    assert f"{out} holds the checkpoint of run run-1, stopped after round 1 of 3" in err
    assert f"Continue it with --resume {out}" in err and "--fresh" in err
    with pytest.raises(Started, match="run-1"):  # no --force needed to continue in its own folder
        main(["run", "--engine", "recording", SC, "--resume", str(out), "--quiet"])
    with pytest.raises(Started, match="run-1"):
        main(["run", "--engine", "recording", SC, "--resume", str(out), "--out", str(out) + "/", "--quiet"])
    err = refused(
        ["run", "--engine", "recording", SC, "--fresh", "--out", str(out), "--quiet"], capsys
    )  # a new run: finished results
    assert "holds the results of a finished run" in err and "--force" in err


@pytest.fixture(scope="module")
def finished(engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-round run of seed 0, really run."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "--engine", "recording", SC, "--rounds", "1", "--out", str(out), "--quiet", "--no-report"]) == 0
    return out


def test_force_overwrites_a_finished_run(
    finished: Path, engine: RecordingEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = json.loads((out / "results.json").read_text())
    before["created_utc"] = WRITTEN
    (out / "results.json").write_text(json.dumps(before))
    engine.calls.clear()

    err = refused(
        ["run", "--engine", "recording", SC, "--rounds", "1", "--out", str(out), "--quiet", "--no-report"], capsys
    )

    assert f"(results.json, written {WRITTEN})" in err and engine.seeds == []
    assert (
        main(
            [
                "run",
                "--engine",
                "recording",
                SC,
                "--rounds",
                "1",
                "--out",
                str(out),
                "--quiet",
                "--no-report",
                "--force",
            ]
        )
        == 0
    )
    assert engine.seeds == [0]
    after = json.loads((out / "results.json").read_text())
    assert after["created_utc"] != WRITTEN and after["rounds"] == 1


def test_seeds_reuse_finished_seeds_but_refuse_to_overwrite_others(
    finished: Path, engine: RecordingEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seeds"
    shutil.copytree(finished, out / "seed-0")  # seed 0, one round: what `--seeds 2 --rounds 1` runs first
    args = [
        "run",
        "--engine",
        "recording",
        SC,
        "--seeds",
        "2",
        "--rounds",
        "1",
        "--out",
        str(out),
        "--quiet",
        "--no-report",
    ]
    engine.calls.clear()

    assert main(args) == 0
    assert engine.seeds == [1]  # seed 0 reused
    assert main(args) == 0  # the same command again reuses both, without --force
    assert engine.seeds == [1]
    summary = (out / "results.json").read_bytes()

    err = refused([*args[:7], "2", *args[8:]], capsys)  # --rounds 2: seed 0's settings differ

    assert f"{out / 'seed-0'} holds the results of a finished run of seed 0" in err
    assert "num-server-rounds 1 there, 2 now" in err and "pass --force to overwrite it" in err
    err = refused([*args, "--fresh"], capsys)
    assert "--fresh runs every seed again" in err and "drop --fresh to reuse it" in err
    err = refused([*args, "--seed", "5"], capsys)  # seeds 5 and 6 would replace the summary over 0 and 1
    assert f"{out} holds the results of a finished run over seeds [0, 1]" in err and "--force" in err
    assert engine.seeds == [1] and (out / "results.json").read_bytes() == summary
    assert not (out / "seed-5").exists()

    single = refused(["run", "--engine", "recording", SC, "--rounds", "1", "--out", str(out), "--quiet"], capsys)
    assert "holds the results of a finished run" in single


def test_sweep_checks_every_strategy_before_the_first_and_passes_force(
    tmp_path: Path, no_work: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flcore import scenario
    from flcore.commands import sweep as sweep_command
    from flcore.config import to_dict
    from flcore.experiment.results import clean
    from flcore.reporting import report

    cfg, params = scenario.get(SC).configure({"strategy": "fedprox", "num-server-rounds": 1})
    config, params = (json.loads(json.dumps(clean(to_dict(obj)))) for obj in (cfg, params))
    out = tmp_path / "sweep"
    config["learning-rate"] = 0.5  # fedprox's seed 0, run earlier with another learning rate
    fake_results(out / "fedprox" / "seed-0", config=config, params=params, data={"source": "synthetic"})
    sweep = [
        "sweep",
        "--engine",
        "recording",
        SC,
        "--strategies",
        "fedavg,fedprox",
        "--seeds",
        "2",
        "--rounds",
        "1",
        "--out",
        str(out),
    ]

    err = refused(sweep, capsys)

    assert f"{out / 'fedprox' / 'seed-0'} holds the results of a finished run of seed 0" in err
    assert "its settings differ from this run's: learning-rate 0.5 there, 0.05 now)" in err
    assert sorted(p.name for p in out.iterdir()) == ["fedprox"]  # fedavg did not run first

    runs: list[Any] = []
    monkeypatch.setattr(sweep_command, "cmd_run", lambda one: runs.append(one) or 0)
    monkeypatch.setattr(report, "build_report", lambda folders: type("R", (), {"comparison": None})())
    monkeypatch.setattr(report, "save_report", lambda rep, where: [])
    assert main([*sweep, "--force"]) == 0
    assert [(r.strategy, r.force, r.out) for r in runs] == [
        ("fedavg", True, str(out / "fedavg")),
        ("fedprox", True, str(out / "fedprox")),
    ]


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--scale", "-1"],
            "--scale must be a finite number greater than 0 (1 keeps the scenario's own sizes); got -1.0",
        ),
        (["--scale", "0"], "got 0.0"),
        (["--scale", "nan"], "got nan"),
        (["--scale", "inf"], "got inf"),
        (["--seed", "-1"], "--seed must be an integer of at least 0; got -1"),
    ],
)
def test_data_make_refuses_bad_arguments_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "data"

    err = refused(["data", "make", "finance-five-banks", "--out", str(out), *extra], capsys)

    assert message in err and "Example:" in err
    assert not out.exists()


@pytest.mark.parametrize("devices", ["0", "-3", "1"])
def test_data_make_needs_two_devices_for_a_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], devices: str
) -> None:
    out = tmp_path / "fleet"

    err = refused(["data", "make", "iot-vibration-fleet", "--out", str(out), "--devices", devices], capsys)

    assert (
        f"--devices must be an integer of at least 2: a fleet federation needs 2 devices or more; got {devices}" in err
    )
    assert not out.exists()


def test_data_make_refuses_an_out_that_is_a_file_or_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "file"
    file.write_text("")

    err = refused(["data", "make", "finance-five-banks", "--out", str(file), "--scale", "0.01"], capsys)

    assert f"--out {file} is a file, not a folder. Expected a folder for the synthetic bank folders" in err
    err = refused(["data", "make", "finance-five-banks", "--out", str(tmp_path), "--scale", "0.01"], capsys)
    assert f"--out {tmp_path} exists and is not empty" in err and "pass --force to write into it" in err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_rounds_and_seeds_are_checked_before_any_run(
    tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(
        ["run", "--engine", "recording", "finance-five-banks", "--rounds", "0", "--out", str(tmp_path / "a")], capsys
    )
    assert "'num-server-rounds' setting of scenario finance-five-banks must be an int in the range [1, inf)" in err

    err = refused(["run", "--engine", "recording", SC, "--seeds", "-2", "--out", str(tmp_path / "b")], capsys)
    assert "--seeds must be at least 1; got -2. Pass --seeds N with N of 1 or more" in err

    code = main(
        [
            "sweep",
            "--engine",
            "recording",
            SC,
            "--strategies",
            "fedavg,fedprox",
            "--seeds",
            "0",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and "--seeds must be at least 1; got 0." in captured.err
    assert "=== strategy" not in captured.out  # refused before the first strategy started
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# audit verify: a missing file is not a broken trail
# --------------------------------------------------------------------------------------


def test_audit_verify_missing_file_is_exit_2_not_a_broken_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"

    err = refused(["audit", "verify", str(path)], capsys)

    assert f"No such file: {path} (the audit trail is written to OUT/audit.jsonl by flsuite run" in err
    assert "nothing was verified" in err and "NOT intact" not in err


def test_audit_verify_folder_and_unreadable_file_are_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flcore.governance.audit import AuditTrail

    path = tmp_path / "audit.jsonl"
    AuditTrail(path).append("test", note="x")

    err = refused(["audit", "verify", str(tmp_path)], capsys)
    assert f"{tmp_path} is a folder, not an audit trail file" in err
    assert f"flsuite audit verify {path}" in err

    real_open = pathlib.Path.open

    def unreadable(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", unreadable)
    err = refused(["audit", "verify", str(path)], capsys)
    assert f"Cannot read {path} (Permission denied); nothing was verified" in err
    monkeypatch.undo()

    assert main(["audit", "verify", str(path)]) == 0
    path.write_bytes(path.read_bytes().replace(b'"x"', b'"y"'))
    assert main(["audit", "verify", str(path)]) == 1  # a broken chain stays exit 1
    assert "is NOT intact" in capsys.readouterr().out
