"""Deployment with real processes on 127.0.0.1: the coordinator service, `flsuite submit` and `flsuite site join`.

A coordinator service (SuperLink with TLS, SuperNode authentication and its database,
the Fleet gateway in front) and three bank sites run as services would: several
federations in a row on the same processes, a site killed and restarted mid-run, the
coordinator killed and restarted, the run resumed. Each test starts and stops its own
processes on free ports.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from flcore.deploy.processes import free_port, listening, process_tree
from flcore.deploy.sitelog import REFUSED_EXIT, UNTRUSTED_EXIT
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


def _coordinator(procs: Processes, pilot: Path, state: Path, port: int, control: int, name: str) -> Any:
    cmd = [FLSUITE, "coordinator", "start", "--state", str(state), "--certs", str(pilot / "certs")]
    cmd += ["--port", str(port), "--control", f"127.0.0.1:{control}"]
    proc = procs.start(name, cmd)
    _wait(lambda: "coordinator ready" in procs.log(name), 90, f"{name} to start", procs)
    return proc


def _submit(procs: Processes, state: Path, out: Path, name: str, *extra: str) -> Any:
    cmd = [FLSUITE, "submit", "finance-five-banks", "--coordinator", str(state), "--out", str(out), "--wait", "120"]
    return procs.start(name, [*cmd, "--set", "local-epochs=1", *extra])


def _join(procs: Processes, pilot: Path, port: int, bank: str, key: Path | None = None, ca: Path | None = None,
          name: str | None = None) -> Any:  # fmt: skip
    key = key or pilot / "certs" / "sites" / f"{bank}.key"
    cmd = [FLSUITE, "site", "join", "--superlink", f"127.0.0.1:{port}", "--domain", "finance"]
    cmd += ["--data", str(pilot / "data" / bank), "--key", str(key), "--ca", str(ca or pilot / "certs" / "ca.crt")]
    return procs.start(name or f"join-{bank}", cmd)


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


def _post(port: int, path: str, ca: Path) -> int:
    """HTTP status of an empty POST to ``path`` on the TLS port."""
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _checkpointed(out: Path) -> int:
    try:
        return read_checkpoint(out).round
    except Exception:
        return 0


def test_one_coordinator_serves_federations_in_a_row_survives_a_site_restart_and_its_own_crash(
    pilot: Path, procs: Processes, tmp_path: Path
) -> None:
    port, control, state = free_port(), free_port(), tmp_path / "coordinator"
    ca = pilot / "certs" / "ca.crt"
    _coordinator(procs, pilot, state, port, control, "coordinator")
    # The Fleet address speaks TLS with the pilot CA's certificate only, and serves the Fleet API only:
    # the Control API (submit, stop, register a key) answers on loopback, on its own port.
    _tls_handshake(port, ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(port, pilot / "stranger" / "ca.crt")
    assert _post(port, "/v1/control/list-runs", ca) == 403
    assert _post(port, "/v1/runtime/pull-messages", ca) == 403
    assert _post(control, "/v1/control/list-runs", ca) != 403  # Flower itself answers there (refusing the body)
    assert "--host 127.0.0.1 --port " + str(control) in procs.log("coordinator")

    for bank in BANKS:
        _join(procs, pilot, port, bank)
    # Causes a retry cannot fix end a site with their own status and words.
    stranger = _join(procs, pilot, port, "bank_c", key=pilot / "stranger" / "sites" / "bank_x.key", name="stranger")
    untrusting = _join(procs, pilot, port, "bank_c", ca=pilot / "stranger" / "ca.crt", name="untrusting")
    assert stranger.wait(timeout=120) == REFUSED_EXIT
    assert "key is not registered" in procs.log("stranger")
    assert untrusting.wait(timeout=120) == UNTRUSTED_EXIT
    assert "not signed by" in procs.log("untrusting")

    # Two federations in a row on the same coordinator and site processes.
    first, second = tmp_path / "first", tmp_path / "second"
    assert _submit(procs, state, first, "submit-1", "--rounds", "1").wait(timeout=300) == 0, procs.log("submit-1")
    run = _submit(
        procs, state, second, "submit-2", "--rounds", "12", "--set", "min-sites=2", "--set", "reply-timeout=20"
    )
    # Mid-run, bank_c's site service is SIGKILLed (its SuperNode and worker die with it) and restarted 5 s later.
    _wait(lambda: _checkpointed(second) >= 2, 300, "round 2 of the second run", procs)
    procs.crash("join-bank_c")
    time.sleep(5)
    _join(procs, pilot, port, "bank_c", name="join-bank_c-again")
    assert run.wait(timeout=400) == 0, procs.log("submit-2")

    one = json.loads((first / "results.json").read_text())
    assert one["history"][0]["sites_trained"] == list(BANKS)
    assert one["site_names"]["source"] == "coordinator registrations" and one["site_names"]["misnamed"] == {}
    history = json.loads((second / "results.json").read_text())["history"]
    assert [r["round"] for r in history] == list(range(1, 13))
    assert all(r["sites_trained"] == list(BANKS) for r in history[:2])
    # bank_c is silent (sampled while the coordinator still counted its old session) or absent (not connected
    # at all) for a while, is noted back in a later round, and trains again.
    gone = [r["round"] for r in history if "bank_c" in r["sites_missing"] + r["sites_absent"]]
    back = [r["round"] for r in history if r["sites_rejoined"] == ["bank_c"]]
    assert gone and back and back[0] > gone[0], [(r["round"], r["sites_missing"], r["sites_absent"]) for r in history]
    assert all("bank_c" not in history[n - 1]["sites_trained"] for n in gone)
    assert "bank_c" in history[back[0] - 1]["sites_trained"] and "bank_c" in history[-1]["sites_trained"]
    rounds = {e["round"]: e for e in _audit(second) if e["kind"] == "round"}
    assert "bank_c" in rounds[gone[0]]["missing"] + rounds[gone[0]]["absent"]
    assert rounds[back[0]]["rejoined"] == ["bank_c"]
    restarted = procs.log("join-bank_c-again")
    assert "still active" in restarted and "connected to the coordinator" in restarted
    assert "Traceback" not in restarted

    # The coordinator's machine dies mid-run (service, SuperLink, gateway, ServerApp at once), comes back with
    # the same state folder, and the run resumes from its checkpoint; the sites reconnect by themselves.
    third = tmp_path / "third"
    crashed = _submit(procs, state, third, "submit-3", "--rounds", "3")
    _wait(lambda: _checkpointed(third) >= 1, 300, "round 1 of the third run", procs)
    procs.crash("coordinator")
    crashed_at = read_checkpoint(third)
    assert crashed.wait(timeout=60) != 0
    _wait(lambda: not listening("127.0.0.1", port), 30, "the Fleet port to close", procs)
    _coordinator(procs, pilot, state, port, control, "coordinator-again")
    assert "was registered already" in procs.log("coordinator-again")  # registrations kept in its database
    assert "left unfinished by the previous coordinator" in procs.log("coordinator-again")
    resumed = _submit(procs, state, third, "submit-3-resumed", "--resume", str(third))
    assert resumed.wait(timeout=400) == 0, procs.log("submit-3-resumed")
    results = json.loads((third / "results.json").read_text())
    assert [r["round"] for r in results["history"]] == [1, 2, 3]  # no round lost, none repeated
    assert results["run_id"] == crashed_at.run_id
    assert [r["aggregate_hash"] for r in results["history"][: crashed_at.round]] == [
        r["aggregate_hash"] for r in crashed_at.monitor["rounds"]
    ]
    assert verify(third / "audit.jsonl", expected_head=results["audit"]["head"]).ok
    # The sites served all of it as the same processes, and never printed a traceback.
    for bank in ("bank_a", "bank_b"):
        assert procs.started[f"join-{bank}"].poll() is None
        assert "Traceback" not in procs.log(f"join-{bank}")
