"""The SuperLink's Control API, through Flower's own ``flwr`` command: register sites, submit, list and stop runs.

Every call runs ``flwr`` with a private ``FLWR_HOME`` (the coordinator's state folder)
whose ``config.toml`` names one SuperLink connection, :data:`CONNECTION`, on the
loopback address the Control API listens on. Calls that change something are printed
first, as a shell would take them, so an operator can repeat them by hand.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from flcore.deploy.processes import Say, flower_env, flower_tool, show
from flcore.exceptions import DeploymentError
from flcore.outputs import write_text_atomic

CONNECTION = "flsuite"  # the SuperLink connection's name in the private FLWR_HOME
#: Run states (``flwr list``) of a run that has not ended.
UNFINISHED = ("pending", "starting", "running")


class Control:
    """The Control API of one SuperLink at ``address`` (``HOST:PORT``), TLS checked against ``ca`` unless None."""

    def __init__(self, home: Path, address: str, ca: Path | None) -> None:
        self.home = home
        self.address = address
        self.ca = ca
        self.env = flower_env(home)

    def write_connection(self) -> None:
        """Write the connection ``flwr`` reads, ``FLWR_HOME/config.toml``."""
        self.home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
        lines.append(f"address = {json.dumps(self.address)}")
        lines.append(f"root-certificates = {json.dumps(str(self.ca))}" if self.ca is not None else "insecure = true")
        write_text_atomic(self.home / "config.toml", "\n".join(lines) + "\n")

    def flwr(self, args: list[str], say: Say | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``flwr ARGS`` against this SuperLink (printed first when ``say`` is given)."""
        cmd = [flower_tool("flwr"), *args]
        if say is not None:
            show(cmd, say)
        try:
            return subprocess.run(
                cmd, env={**self.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(
                cmd, 124, "", f"{shlex.join(cmd)} did not answer within {timeout_s:.0f} s"
            )

    def register(self, site: str, public_key: Path, say: Say) -> bool:
        """Register ``site``'s public key under its name; False when it was registered already."""
        done = self.flwr(
            ["supernode", "register", str(public_key), CONNECTION, "--name", site, "--format", "json"], say
        )
        text = done.stdout + done.stderr
        if done.returncode == 0 and _reply(done).get("success"):
            return True
        if "already in use" in text:  # the SuperLink's database keeps registrations across restarts
            return False
        raise DeploymentError(f"Registering {site}'s key {public_key} failed: {flower_message(text)}")

    def submit(self, app: Path, say: Say) -> str:
        """Submit the app project ``app`` (``flwr run``); the new run's id."""
        done = self.flwr(["run", str(app), CONNECTION, "--format", "json"], say)
        reply = _reply(done)
        if done.returncode != 0 or not reply.get("success"):
            raise DeploymentError(f"flwr run failed: {flower_message(done.stdout + done.stderr)}")
        return str(reply["run-id"])

    def runs(self) -> list[dict[str, Any]]:
        """Every run the SuperLink knows (``flwr list``); empty when it does not answer."""
        runs = _reply(self.flwr(["list", CONNECTION, "--format", "json"])).get("runs", [])
        return [r for r in runs if isinstance(r, dict)]

    def run_state(self, run_id: str) -> str:
        """The state of run ``run_id`` (``finished:completed``, ``running``...; empty when unknown)."""
        runs = _reply(self.flwr(["list", CONNECTION, "--run-id", run_id, "--format", "json"])).get("runs", [])
        return str(runs[0].get("status", "")) if runs else ""

    def stop(self, run_id: str, say: Say) -> None:
        """Stop run ``run_id`` (``flwr stop``)."""
        done = self.flwr(["stop", run_id, CONNECTION, "--format", "json"], say)
        if done.returncode != 0:
            raise DeploymentError(f"flwr stop {run_id} failed: {flower_message(done.stdout + done.stderr)}")


def _reply(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        return {}
    return reply if isinstance(reply, dict) else {}


def flower_message(text: str) -> str:
    """The error Flower's ``flwr`` reported, from its JSON reply or its (boxed) console text."""
    try:
        return str(json.loads(text).get("error-message", text.strip()))
    except (ValueError, AttributeError):
        return " ".join(text.replace("│", " ").split())[-600:]
