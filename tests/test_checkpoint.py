"""Checkpoints after every round, resuming with no round lost, and dropout tolerance (in-process federations)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flcore import scenario
from flcore.experiment.prepare import prepare_data
from flcore.federation.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_strategy,
    read_checkpoint,
    restore_strategy,
    write_checkpoint,
)
from flcore.federation.engines import LocalGrid, federation_grid, save_splits
from flcore.federation.plan import FederationPlan
from flcore.federation.rounds import QuorumError
from flcore.federation.serverapp import run_federation
from flcore.federation.strategies import build_strategy
from flcore.governance.audit import AuditTrail, verify
from flcore.governance.siteguard import SiteGovernance, split_facts

pytestmark = pytest.mark.usefixtures("flower_task")

SC = scenario.get("finance-five-banks")


@pytest.fixture(scope="module")
def banks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, list[str]]:
    """Three small banks (generated), saved as prepared splits."""
    cfg, params = SC.configure(
        {"num-server-rounds": 3, "local-epochs": 1, "strategy": "fedadam", "num-cpus-per-client": 1}
    )
    splits = prepare_data(SC, cfg, None, lambda _: None, params).splits[:3]
    return cfg, params, save_splits(splits, tmp_path_factory.mktemp("splits"))


def _grid(cfg: Any, paths: list[str]) -> LocalGrid:
    from flcore.data.splitfiles import load_split

    govs = [SiteGovernance(load_split(Path(p)).name, SC.policy, None, split_facts(load_split(Path(p)))) for p in paths]
    return federation_grid(paths, govs, cfg)


def _plan(cfg: Any, params: Any, **kw: Any) -> FederationPlan:
    return FederationPlan(SC.name, cfg, params, num_sites=3, connect_timeout_s=5, **kw)


class Crash(Exception):
    pass


def test_resume_after_a_crash_loses_no_round_and_matches_an_uninterrupted_run(banks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, params, paths = banks
    cfg = dataclasses.replace(cfg, fraction_train=0.67, fraction_evaluate=0.67)  # 2 of 3 sampled each round
    whole = run_federation(_grid(cfg, paths), _plan(cfg, params))

    def crash_in_round_3(rec: Any) -> None:
        if rec.round == 3:
            raise Crash

    ckpt_path = tmp_path / "checkpoint.npz"
    audit = AuditTrail(tmp_path / "audit.jsonl")
    first = _plan(cfg, params, checkpoint=ckpt_path, on_round=crash_in_round_3, audit=audit)
    with pytest.raises(Crash):
        run_federation(_grid(cfg, paths), first)
    ckpt = read_checkpoint(tmp_path)  # the folder finds checkpoint.npz
    assert ckpt.round == 2 and ckpt.run_id == first.run_id
    assert [r["round"] for r in ckpt.monitor["rounds"]] == [1, 2]
    assert ckpt.strategy_state["1.m_t"] is not None  # FedAdam's moments are in it (depth 1: under the screen)

    # A new coordinator process: a fresh grid (a new Flower run), the checkpoint's run id.
    resumed = run_federation(
        _grid(cfg, paths), _plan(cfg, params, checkpoint=ckpt_path, resume=ckpt, run_id=ckpt.run_id, audit=audit)
    )
    assert resumed.monitor is not None and whole.monitor is not None
    assert [r.round for r in resumed.monitor.rounds] == [1, 2, 3]
    # Same global model after every round, and at the end, to the last bit: no round lost or repeated,
    # FedAdam's server moments restored, the same sites sampled.
    assert [r.per_site_train.keys() for r in resumed.monitor.rounds] == [
        r.per_site_train.keys() for r in whole.monitor.rounds
    ]
    assert [r.aggregate_hash for r in resumed.monitor.rounds] == [r.aggregate_hash for r in whole.monitor.rounds]
    assert resumed.arrays is not None and whole.arrays is not None
    for k, v in whole.arrays.items():
        np.testing.assert_array_equal(resumed.arrays[k].numpy(), v.numpy())  # type: ignore[union-attr]
    assert read_checkpoint(ckpt_path).round == 3
    # The audit trail is one unbroken chain that records the resume.
    report = verify(tmp_path / "audit.jsonl")
    assert report.ok
    kinds = [e["kind"] for e in _entries(tmp_path / "audit.jsonl")]
    assert kinds.count("resume") == 1 and kinds.count("checkpoint") == 3
    # Round 3 of the crashed attempt was audited before its checkpoint was written: the trail shows it, the
    # resume after round 2, and round 3 again with the same aggregate (an audit entry is never lost, at
    # worst repeated).
    rows = [(e["kind"], e.get("round", e.get("after_round"))) for e in _entries(tmp_path / "audit.jsonl")]
    rows = [r for r in rows if r[0] in ("round", "resume")]
    assert rows == [("round", 1), ("round", 2), ("round", 3), ("resume", 2), ("round", 3)]
    third = [e["aggregate"] for e in _entries(tmp_path / "audit.jsonl") if e.get("kind") == "round" and e["round"] == 3]
    assert third[0] == third[1] == whole.monitor.rounds[2].aggregate_hash


def test_resume_without_checkpointed_strategy_state_would_differ(banks) -> None:  # type: ignore[no-untyped-def]
    """The strategy state matters: restoring only the model gives another FedAdam trajectory."""
    cfg = banks[0]
    strategy = build_strategy(cfg, 3)
    inner = strategy.strategy  # type: ignore[attr-defined]  # FedAdam, under the screen
    inner.m_t = {"w": np.ones(3, dtype=np.float32)}  # type: ignore[attr-defined]
    inner.v_t = {"w": np.full(3, 2.0, dtype=np.float32)}  # type: ignore[attr-defined]
    state = capture_strategy(strategy)
    fresh = build_strategy(cfg, 3)
    assert fresh.m_t is None  # type: ignore[attr-defined]
    restore_strategy(fresh, state)
    np.testing.assert_array_equal(fresh.strategy.m_t["w"], np.ones(3))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(fresh.strategy.v_t["w"], np.full(3, 2.0))  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match="another strategy"):
        restore_strategy(build_strategy(dataclasses.replace(cfg, strategy="fedavg"), 3), state)


def test_checkpoint_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "checkpoint.npz"
    ckpt = Checkpoint("run1", SC.name, {"a": 1}, {}, 1, {"w": np.arange(4, dtype=np.float32)})
    write_checkpoint(path, ckpt)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, dataclasses.replace(ckpt, round=2))
    monkeypatch.undo()
    assert read_checkpoint(path).round == 1  # the previous round's checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # no partial file left
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        read_checkpoint(tmp_path / "elsewhere")


def test_resume_refuses_a_checkpoint_of_other_settings(banks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, params, paths = banks
    ckpt = Checkpoint("r", SC.name, {**dataclasses.asdict(cfg)}, {}, 1, {})
    from flcore.config import to_dict

    ckpt = Checkpoint("r", SC.name, {**to_dict(cfg), "local-epochs": 7}, to_dict(params), 1, {})
    with pytest.raises(CheckpointError, match="local-epochs"):
        run_federation(_grid(cfg, paths), _plan(cfg, params, resume=ckpt, run_id="r"))


def test_a_silent_site_is_dropped_and_recorded_while_the_minimum_holds(banks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, params, paths = banks
    cfg = dataclasses.replace(cfg, num_server_rounds=2, strategy="fedavg", reply_timeout=1.0)
    grid = _grid(cfg, paths)
    audit = AuditTrail(tmp_path / "audit.jsonl")
    names = sorted(Path(p).stem for p in paths)
    assert names  # silence the third node from round 1 on (after the statistics round)
    third = sorted(grid.contexts)[2]

    def after(rec: Any) -> None:
        pass

    plan = _plan(cfg, params, audit=audit, on_round=after)
    original = grid.send_and_receive

    def send(messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            grid.silent.add(third)
        return original(messages, timeout=timeout)

    grid.send_and_receive = send  # type: ignore[method-assign]
    outcome = run_federation(grid, plan)
    assert outcome.monitor is not None
    rounds = [r.to_json() for r in outcome.monitor.rounds]
    assert [r["sites_replied"] for r in rounds] == [2, 2]
    assert [r["sites_dropped"] for r in rounds] == [1, 1]
    lost = rounds[0]["sites_missing"]
    assert len(lost) == 1 and lost[0] not in rounds[0]["sites_trained"]
    entries = [e for e in _entries(tmp_path / "audit.jsonl") if e["kind"] == "round"]
    assert [e["missing"] for e in entries] == [lost, lost]


def test_fewer_sites_than_the_minimum_stops_the_run_resumably(banks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, params, paths = banks
    cfg = dataclasses.replace(cfg, num_server_rounds=3, strategy="fedavg", min_sites=3, reply_timeout=1.0)
    grid = _grid(cfg, paths)
    third = sorted(grid.contexts)[2]

    def drop_after_round_1(rec: Any) -> None:
        if rec.round == 1:
            grid.silent.add(third)

    plan = _plan(cfg, params, on_round=drop_after_round_1, checkpoint=tmp_path / "checkpoint.npz")
    with pytest.raises(QuorumError, match=r"Round 2: only 2 of 3 sampled sites answered") as err:
        run_federation(grid, plan)
    assert err.value.exit_code == 3 and len(err.value.missing) == 1
    assert "resume with --resume" in str(err.value)
    assert read_checkpoint(tmp_path).round == 1


def _entries(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_resumed_dp_run_charges_every_round_before_the_crash(banks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A resumed run is a new Flower run: the sites' DP step counts restart, so they charge the earlier rounds."""
    cfg, params, paths = banks
    cfg = dataclasses.replace(cfg, strategy="fedavg", num_server_rounds=2, privacy="dp", dp_epsilon=2.0, dp_delta=1e-5)
    whole = run_federation(_grid(cfg, paths), _plan(cfg, params))

    def crash_in_round_2(rec: Any) -> None:
        if rec.round == 2:
            raise Crash

    ckpt_path = tmp_path / "checkpoint.npz"
    with pytest.raises(Crash):
        run_federation(_grid(cfg, paths), _plan(cfg, params, checkpoint=ckpt_path, on_round=crash_in_round_2))
    ckpt = read_checkpoint(ckpt_path)
    resumed = run_federation(_grid(cfg, paths), _plan(cfg, params, resume=ckpt, run_id=ckpt.run_id))
    spent, expected = resumed.privacy["per_site_epsilon"], whole.privacy["per_site_epsilon"]
    assert spent.keys() == expected.keys() and len(spent) == 3
    for site, eps in expected.items():  # every site trained in both rounds: the charge is exact
        assert spent[site] == pytest.approx(eps, rel=1e-9)
        assert 0 < eps <= 2.0


def test_cli_resume_refuses_other_settings_and_another_scenario(banks, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from flcore.cli import main
    from flcore.config import to_dict

    cfg, params, _ = banks
    write_checkpoint(tmp_path / "checkpoint.npz", Checkpoint("r1", SC.name, to_dict(cfg), to_dict(params), 1, {}))
    assert main(["run", SC.name, "--resume", str(tmp_path), "--rounds", "9", "--engine", "inprocess"]) == 2
    err = capsys.readouterr().err
    assert "num-server-rounds (checkpoint 3, given 9) differ" in " ".join(err.split())
    assert main(["run", "medical-clinical", "--resume", str(tmp_path), "--engine", "inprocess"]) == 2
    assert f"flsuite run {SC.name} --resume" in " ".join(capsys.readouterr().err.split())
    assert main(["run", SC.name, "--resume", str(tmp_path / "nowhere"), "--engine", "inprocess"]) == 2
    assert "No checkpoint at" in capsys.readouterr().err


def test_a_site_lost_before_evaluation_does_not_hang_the_round(banks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Flower's sampling waits without limit for enough nodes; the round loop waits reply-timeout, then stops."""
    cfg, params, paths = banks
    cfg = dataclasses.replace(cfg, num_server_rounds=2, strategy="fedavg", min_sites=3, reply_timeout=1.0)
    grid = _grid(cfg, paths)
    third = sorted(grid.contexts)[2]
    original = grid.send_and_receive

    def send(messages: Any, *, timeout: float | None = None) -> Any:
        replies = original(list(messages), timeout=timeout)
        if grid.sent and grid.sent[-1].metadata.message_type == "train":
            grid.down.add(third)  # disconnects right after answering its training step
        return replies

    grid.send_and_receive = send  # type: ignore[method-assign]
    plan = _plan(cfg, params, checkpoint=tmp_path / "checkpoint.npz")
    with pytest.raises(QuorumError, match="Round 2 could not start: only 2 site"):
        run_federation(grid, plan)
    ckpt = read_checkpoint(tmp_path)
    assert ckpt.round == 1
    assert ckpt.monitor["rounds"][0]["evaluate_sampled"] == 0  # round 1 went unevaluated, not hung


def test_resume_accepts_the_same_settings_spelled_differently_and_operational_changes(banks, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import argparse

    from flcore.commands.common import _resumed_values
    from flcore.config import to_dict

    cfg, params, _ = banks
    write_checkpoint(tmp_path / "checkpoint.npz", Checkpoint("r1", SC.name, to_dict(cfg), to_dict(params), 1, {}))
    args = argparse.Namespace(resume=str(tmp_path), data=None)
    ckpt, values = _resumed_values(SC, args, {"num-server-rounds": "3", "reply-timeout": "600", "min-sites": "3"})
    assert ckpt.run_id == "r1"
    assert float(values["reply-timeout"]) == 600 and int(values["min-sites"]) == 3
    assert values["strategy"] == "fedadam"


def test_the_ledger_keeps_a_runs_dp_steps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flcore.governance.ledger import PrivacyLedger

    ledger = PrivacyLedger(tmp_path / "ledger.json", "bank_a")
    assert ledger.reserve("r1", 1.0, 1e-5, "sha256:x", "dp")
    ledger.record("r1", 0.4, steps=120)
    ledger.record("r1", 0.3, steps=60)  # a restarted SuperNode that lost count never lowers it
    assert ledger.steps("r1") == 120 and ledger.steps("other") == 0
    assert PrivacyLedger(tmp_path / "ledger.json", "bank_a").entries()[0]["epsilon"] == 0.4
