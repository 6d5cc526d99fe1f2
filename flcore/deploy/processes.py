"""Starting and stopping Flower's processes: its executables, their environment, ports and process trees."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from flcore.exceptions import DeploymentError

QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}

Say = Callable[[str], None]


def flower_tool(name: str) -> str:
    """Path of a Flower executable installed beside this Python (the suite's environment)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DeploymentError(
            f"{name} was not found beside {sys.executable}. Install the suite with its dependencies "
            "(`make install`, or pip install -c constraints.txt -e .) and run flsuite from that environment."
        )
    return str(path)


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """Environment for Flower's processes: this environment's executables first, telemetry off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(QUIET)
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """``preexec_fn`` for a child that must not outlive this process, even when it is SIGKILLed.

    On Linux the kernel sends the child SIGKILL when its parent dies (``PR_SET_PDEATHSIG``),
    so a launcher killed by an operator or the OOM killer leaves no SuperNode or worker
    behind; elsewhere None (the launcher's own signal handlers stop its children). The C
    function is looked up here, in the parent: between fork and exec the child only calls it
    (no import, no lock), which is safe even when the parent runs threads.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))

    return set_death_signal


def show(cmd: Sequence[str], say: Say) -> None:
    """Say the command about to run, as a shell would take it."""
    say("$ " + shlex.join(cmd))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def process_tree(pid: int) -> list[Any]:
    """A process (if alive), its descendants, and Flower's helpers started for any of them.

    Flower starts its SuperExec and app processes with ``--parent-pid PID``; they outlive
    their parent for a while, so they are found by that argument, not by parentage.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        found = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        found = []
    parents = {str(pid)} | {str(p.pid) for p in found}
    grew = True
    while grew:  # a helper's own helpers name the helper as their parent
        grew = False
        for p in psutil.process_iter(["cmdline"]):
            cmdline = p.info.get("cmdline") or []
            i = cmdline.index("--parent-pid") if "--parent-pid" in cmdline else -1
            if 0 <= i < len(cmdline) - 1 and cmdline[i + 1] in parents and str(p.pid) not in parents:
                found.append(p)
                parents.add(str(p.pid))
                grew = True
    return found


def stop_tree(proc: subprocess.Popen[Any] | None, grace_s: float = 10.0) -> None:
    """Stop a process and everything it started (Flower detaches its SuperExec and app processes)."""
    if proc is None:
        return
    import psutil

    procs = process_tree(proc.pid)
    if proc.poll() is not None:  # reaped: its pid may belong to another process by now
        procs = [p for p in procs if p.pid != proc.pid]
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (empty if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within it, SIGTERM, SIGHUP and SIGINT (a service stop, a closed ssh session, Ctrl-C) raise KeyboardInterrupt.

    SIGINT too: a shell starts a background job with SIGINT ignored, and Python then leaves it ignored.
    """
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
