"""`flsuite site join` ClientApp modes: a warm worker beside the SuperNode, or Flower's process per message.

The warm mode (default) runs the SuperNode with ``--isolation process`` and one
ClientApp worker that imports the ClientApp once and forks a process per message;
``FLSUITE_CLIENTAPP=per-message`` keeps Flower's default (a fresh ``flwr-clientapp``
per message). One real run has a site of each kind; both must train, and a
stopped ``site join`` must leave nothing running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flcore.deploy.join import CLIENTAPP_ENV, JoinOptions, check_join, supernode_command
from flcore.deploy.processes import free_port, process_tree, stop_tree
from flcore.exceptions import ConfigError

pytestmark = pytest.mark.deploy

FLSUITE = str(Path(sys.executable).parent / "flsuite")
BANKS = ("bank_a", "bank_b")


def _options(tmp_path: Path, clientapp: str | None = None) -> JoinOptions:
    opts = JoinOptions(superlink="127.0.0.1:9092", domain="finance", data=tmp_path, key=None, ca=None, insecure=True)
    if clientapp is not None:
        opts.clientapp = clientapp
    return opts


def test_the_mode_sets_the_supernode_isolation_and_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CLIENTAPP_ENV, raising=False)
    assert _options(tmp_path).clientapp == "warm"
    warm = supernode_command(_options(tmp_path), 9999)
    assert warm[warm.index("--isolation") + 1] == "process"
    assert "--isolation" not in supernode_command(_options(tmp_path, clientapp="per-message"), 9999)
    monkeypatch.setenv(CLIENTAPP_ENV, "per-message")
    assert _options(tmp_path).clientapp == "per-message"
    with pytest.raises(ConfigError, match="Unknown ClientApp mode 'lukewarm'"):
        check_join(_options(tmp_path, clientapp="lukewarm"), say=lambda line: None)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in reversed(procs):
        stop_tree(proc, grace_s=5)


def _start(procs: list[subprocess.Popen[bytes]], log: Path, cmd: list[str], **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env}
        )
    procs.append(proc)
    return proc


def _wait_for(text: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, f"timed out waiting for {text!r} in {log}"
        time.sleep(0.5)


def test_a_warm_site_and_a_per_message_site_train_together_and_leave_nothing_running(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    certs, data, out, port = tmp_path / "certs", tmp_path / "data", tmp_path / "out", free_port()
    for cmd in (
        [FLSUITE, "certs", "init", "--out", str(certs), "--sites", ",".join(BANKS)],
        [FLSUITE, "data", "make", "finance-five-banks", "--scale", "0.05", "--out", str(data)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    serve = _start(
        started,
        tmp_path / "serve.log",
        [FLSUITE, "serve", "finance-five-banks", "--certs", str(certs), "--port", str(port), "--out", str(out),
         "--rounds", "1", "--set", "local-epochs=1", "--wait", "180"],
    )  # fmt: skip
    _wait_for("sites may join now", tmp_path / "serve.log", 90)
    joins = {}
    for bank, mode in zip(BANKS, ("warm", "per-message"), strict=True):
        cmd = [FLSUITE, "site", "join", "--superlink", f"127.0.0.1:{port}", "--domain", "finance"]
        cmd += ["--data", str(data / bank), "--key", str(certs / "sites" / f"{bank}.key")]
        cmd += ["--ca", str(certs / "ca.crt")]
        joins[mode] = _start(started, tmp_path / f"join-{mode}.log", cmd, **{CLIENTAPP_ENV: mode})
    assert serve.wait(timeout=400) == 0, (tmp_path / "serve.log").read_text()

    history = json.loads((out / "results.json").read_text())["history"]
    assert [r["sites_trained"] for r in history] == [list(BANKS)]
    assert history[0]["evaluate_replied"] == 2
    warm_log = (tmp_path / "join-warm.log").read_text(errors="replace")
    assert "ClientApp worker started" in warm_log and "--isolation process" in warm_log
    assert "ClientApp worker" not in (tmp_path / "join-per-message.log").read_text(errors="replace")

    # Stopping `site join` stops its SuperNode, the worker and anything the worker forked.
    for proc in joins.values():
        tree = process_tree(proc.pid)
        assert len(tree) >= 3, [p.cmdline() for p in tree]  # join, SuperNode, and the worker or SuperExec
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        _, alive = psutil.wait_procs([p for p in tree if p.pid != proc.pid], timeout=15)
        assert not alive, [p.cmdline() for p in alive]
