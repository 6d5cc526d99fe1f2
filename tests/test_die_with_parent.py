"""The SuperNode and worker of `flsuite site join` (and the SuperLink of `serve`) die with it, even when SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

LAUNCHER = textwrap.dedent(
    """
    import subprocess, sys, time
    from flcore.deploy.processes import die_with_parent
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                             preexec_fn=die_with_parent())
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def test_a_child_started_to_die_with_its_parent_is_gone_after_the_parent_is_sigkilled() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    child = int(launcher.stdout.readline())
    assert psutil.pid_exists(child)
    os.kill(launcher.pid, signal.SIGKILL)  # no handler runs: only the kernel can stop the child now
    launcher.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its SIGKILLed parent")
