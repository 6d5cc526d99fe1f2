"""Deployment with real processes on 127.0.0.1: `flsuite serve` (SuperLink + ServerApp) and `flsuite site join`.

Each test starts and stops its own processes on free ports: a SuperLink with TLS
and SuperNode authentication, and one SuperNode per bank. They are slow (every
Flower message starts a ClientApp process), so there are two runs in all.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from flcore.deploy.sitelog import REFUSED_EXIT
from flcore.deploy.processes import free_port, listening, process_tree
from flcore.federation.checkpoint import read_checkpoint
from flcore.governance.audit import verify

pytestmark = pytest.mark.deploy

FLSUITE = str(Path(sys.executable).parent / "flsuite")
BANKS = ("bank_a", "bank_b", "bank_c")


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates for three banks, a stranger's key, and small generated bank data."""
    root = tmp_path_factory.mktemp("pilot")
    _ok([FLSUITE, "certs", "init", "--out", str(root / "certs"), "--sites", ",".join(BANKS)])
    _ok([FLSUITE, "certs", "init", "--out", str(root / "stranger"), "--sites", "bank_x"])
    _ok([FLSUITE, "data", "make", "finance-five-banks", "--scale", "0.05", "--out", str(root / "data")])
    return root


class Processes:
    """Processes started by a test, each with its log file; all killed at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def crash(self, name: str) -> None:
        """SIGKILL the process and everything it started, as a power cut would."""
        proc = self.started[name]
        victims = process_tree(proc.pid)
        for p in victims:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name, proc in self.started.items():
            if proc.poll() is None or process_tree(proc.pid):
                self.crash(name)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def _ok(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _wait(condition: Callable[[], bool], timeout: float, what: str, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{procs.log(n)[-3000:]}" for n in procs.started)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(0.5)


def _serve(procs: Processes, pilot: Path, out: Path, port: int, *extra: str, name: str = "serve") -> Any:
    cmd = [FLSUITE, "serve", "finance-five-banks", "--certs", str(pilot / "certs"), "--port", str(port)]
    cmd += ["--out", str(out), "--wait", "180", *extra]
    proc = procs.start(name, cmd)
    _wait(lambda: "sites may join now" in procs.log(name), 90, f"{name} to register the sites", procs)
    return proc


def _join(procs: Processes, pilot: Path, port: int, bank: str, key: Path | None = None) -> Any:
    key = key or pilot / "certs" / "sites" / f"{bank}.key"
    cmd = [FLSUITE, "site", "join", "--superlink", f"127.0.0.1:{port}", "--domain", "finance"]
    cmd += ["--data", str(pilot / "data" / bank), "--key", str(key), "--ca", str(pilot / "certs" / "ca.crt")]
    return procs.start(f"join-{bank}", cmd)


def _progress(out: Path) -> str:
    path = out / "progress.log"
    return path.read_text() if path.exists() else ""


def _audit(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]


def _tls_handshake(port: int, ca: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1"):
            pass


def test_tls_and_site_keys_three_banks_complete_rounds_a_stranger_is_refused_and_a_lost_bank_is_survived(
    pilot: Path, procs: Processes, tmp_path: Path
) -> None:
    port, out = free_port(), tmp_path / "out"
    serve = _serve(
        procs,
        pilot,
        out,
        port,
        "--rounds",
        "3",
        "--set",
        "local-epochs=1",
        "--set",
        "min-sites=2",
        "--set",
        "reply-timeout=45",
    )
    # The SuperLink speaks TLS with the pilot CA's certificate, and only that: another CA is not trusted.
    _tls_handshake(port, pilot / "certs" / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(port, pilot / "stranger" / "ca.crt")

    for bank in BANKS:
        _join(procs, pilot, port, bank)
    # A SuperNode whose key the coordinator never registered is refused (Flower's exit code 305).
    stranger = _join(procs, pilot, port, "bank_d", key=pilot / "stranger" / "sites" / "bank_x.key")
    assert stranger.wait(timeout=120) == REFUSED_EXIT
    assert "Exit Code: 305" in procs.log("join-bank_d")
    assert "key is not registered" in procs.log("join-bank_d")

    # Two full rounds with all three banks, then bank_c's machine dies.
    _wait(lambda: "round   2/3" in _progress(out), 400, "round 2", procs)
    procs.crash("join-bank_c")
    assert serve.wait(timeout=400) == 0, procs.log("serve")

    results = json.loads((out / "results.json").read_text())
    history = results["history"]
    assert [r["round"] for r in history] == [1, 2, 3]
    assert [r["sites_trained"] for r in history[:2]] == [list(BANKS)] * 2
    assert history[2]["sites_trained"] == ["bank_a", "bank_b"]
    assert history[2]["sites_missing"] == ["bank_c"] and history[2]["sites_dropped"] == 1
    assert history[2]["evaluate_replied"] == 2
    assert all(0.0 <= r["evaluate"]["pr_auc"] <= 1.0 for r in history)
    # The dropout is in the audit trail, which is intact and ends where results.json says.
    report = verify(out / "audit.jsonl", expected_head=results["audit"]["head"])
    assert report.ok
    rounds = [e for e in _audit(out) if e["kind"] == "round"]
    assert rounds[2]["missing"] == ["bank_c"] and rounds[1]["missing"] == []
    assert read_checkpoint(out).round == 3
    assert "$ " + str(Path(sys.executable).parent / "flower-superlink") in procs.log("serve")  # commands shown
    assert "--enable-supernode-auth" in procs.log("serve")
    assert "--root-certificates" in procs.log("join-bank_a")


def test_a_crashed_coordinator_resumes_from_its_last_round(pilot: Path, procs: Processes, tmp_path: Path) -> None:
    port, out = free_port(), tmp_path / "out"
    _serve(procs, pilot, out, port, "--rounds", "2", "--set", "local-epochs=1")
    for bank in BANKS:
        _join(procs, pilot, port, bank)

    def checkpointed() -> int:
        try:
            return read_checkpoint(out).round
        except Exception:
            return 0

    _wait(lambda: checkpointed() >= 1, 400, "the round-1 checkpoint", procs)
    procs.crash("serve")  # the coordinator's machine dies: serve, SuperLink and ServerApp at once
    crashed_at = read_checkpoint(out)
    assert crashed_at.round == 1
    _wait(lambda: not listening("127.0.0.1", port), 30, "the port to close", procs)

    resumed = procs.start(
        "serve-resumed",
        [FLSUITE, "serve", "finance-five-banks", "--certs", str(pilot / "certs"), "--port", str(port), "--wait", "180",
         "--resume", str(out)],
    )  # fmt: skip
    assert resumed.wait(timeout=500) == 0, procs.log("serve-resumed")

    results = json.loads((out / "results.json").read_text())
    history = results["history"]
    assert [r["round"] for r in history] == [1, 2]  # no round lost, none repeated
    assert results["run_id"] == crashed_at.run_id
    assert [r["aggregate_hash"] for r in history[: crashed_at.round]] == [
        r["aggregate_hash"] for r in crashed_at.monitor["rounds"]
    ]
    assert all(r["sites_trained"] == list(BANKS) for r in history)
    entries = _audit(out)
    resumes = [e for e in entries if e["kind"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["after_round"] == crashed_at.round
    assert verify(out / "audit.jsonl", expected_head=results["audit"]["head"]).ok
    assert read_checkpoint(out).round == 2
