"""``flsuite submit`` and ``flsuite serve``: a run submitted to the coordinator, followed to its end.

``submit`` sends the suite's ServerApp to a running coordinator service
(:mod:`flcore.deploy.coordinator`) with ``flwr run``: a generated app project that holds
the run's configuration and no code (every party runs the ``flsuite`` it installed), then
follows the run until it ends. The sites stay connected between runs. ``serve`` is the
one-run form: it starts a coordinator for one run, submits it, and stops the coordinator
at the end. Every command either runs is printed.

The deployed ServerApp (:mod:`flcore.experiment.deployed`) checkpoints every round, writes
``results.json`` and the audit trail into the output folder, and reports its progress
and its end in ``run-status.json`` there (:mod:`flcore.experiment.status`), which both read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flcore.deploy.control import Control
from flcore.deploy.coordinator import Coordinator, CoordinatorInfo, CoordinatorOptions
from flcore.deploy.processes import Say, free_port, stop_on_signals
from flcore.exceptions import ConfigError, DeploymentError
from flcore.experiment.status import PROGRESS_FILE, STATUS_FILE, read_status
from flcore.federation.registry import registered_sites
from flcore.outputs import write_text_atomic


@dataclass
class RunOptions:
    """The run ``flsuite submit`` (and ``serve``) sends, resolved from the command line."""

    scenario: str
    run_config: dict[str, Any]  # every setting of the run (kebab-case keys)
    out: Path
    wait_for_sites_s: float = 300.0
    policy_file: Path | None = None
    audit_file: Path | None = None
    resume_from: Path | None = None


@dataclass
class ServeOptions:
    """What ``flsuite serve`` needs: the run, and the coordinator it starts for it."""

    run: RunOptions
    host: str = "127.0.0.1"
    port: int = 9092
    certs: Path | None = None
    sites: Sequence[str] | None = None  # register only these sites' keys (default: every sites/*.pub)
    insecure: bool = False
    xgb_port: int = 9094


def write_app_project(folder: Path, name: str, config: Mapping[str, Any]) -> Path:
    """A Flower app project with no code: the suite's apps by reference and the run's configuration.

    ``flwr run`` bundles it (a FAB of a few hundred bytes) for the SuperLink; every
    party imports ``flcore.federation.clientapp`` from the ``flsuite`` it installed itself.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `flsuite submit`: the run's configuration, submitted with `flwr run`.",
        "[project]",
        f"name = {json.dumps(name)}",
        'version = "1.0.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "flsuite"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "flcore.experiment.deployed:server_app"',
        'clientapp = "flcore.federation.clientapp:client_app"',
        "",
        "[tool.flwr.app.config]",
    ]
    for key, value in config.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return write_text_atomic(folder / "pyproject.toml", "\n".join(lines) + "\n")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic-string escapes


#: Seconds between two checks that the run is alive beside its own status file. Each asks the Control API
#: with a `flwr list` process (about 1.5 CPU-seconds): on a small coordinator, more often slows the rounds.
STATE_CHECK_S = 60.0


def submit(opts: RunOptions, coordinator: CoordinatorInfo, say: Say = print) -> int:
    """Submit the run to a running coordinator and follow it to its end; returns the exit code."""
    coordinator.check_running()
    out = opts.out.resolve()
    registered = registered_sites(Path(coordinator.database)) if coordinator.ca else {}
    num_sites = int(opts.run_config.get("num-sites-expected") or len(registered))
    if num_sites < 1:
        raise ConfigError(
            "Say how many sites take part: --num-sites N (a plain-text coordinator has no registered keys to count)."
        )
    config = {
        "scenario": opts.scenario,
        "out-dir": str(out),
        "num-sites-expected": num_sites,
        "wait-for-sites": float(opts.wait_for_sites_s),
        "policy-file": str(opts.policy_file.resolve()) if opts.policy_file else "",
        "audit-file": str((opts.audit_file or out / "audit.jsonl").resolve()),
        "resume-from": str(opts.resume_from.resolve()) if opts.resume_from else "",
        "site-registry": coordinator.database if registered else "",
        **coordinator.collective_config(),
        **{k: v for k, v in opts.run_config.items() if k != "num-sites-expected"},
    }
    app = write_app_project(out / ".app", "flsuite-federation", config)
    for name in (STATUS_FILE, PROGRESS_FILE):
        (out / name).unlink(missing_ok=True)
    control = coordinator.control_api()
    run_id = control.submit(app.parent, say)
    say(f"run {run_id} submitted; waiting for {num_sites} site(s) to connect (up to {opts.wait_for_sites_s:.0f} s)")
    return _follow(out, run_id, control, coordinator.check_running, say)


def serve(opts: ServeOptions, say: Say = print) -> int:
    """One run on a coordinator of its own: start it, submit the run, stop it at the end; returns the exit code."""
    state = opts.run.out.resolve() / ".superlink"
    service = CoordinatorOptions(
        state=state,
        certs=opts.certs,
        host=opts.host,
        port=opts.port,
        control=f"127.0.0.1:{free_port()}",
        sites=list(opts.sites) if opts.sites else None,
        insecure=opts.insecure,
        xgb_port=opts.xgb_port,
    )
    try:
        with stop_on_signals(), Coordinator(service, say) as coordinator:
            say(f"SuperLink ready on {opts.host}:{opts.port}; sites may join now")
            return submit(opts.run, coordinator.info, say)
    except KeyboardInterrupt:
        say(f"interrupted: stopping the coordinator. Continue the run with --resume {opts.run.out}")
        raise


def _follow(out: Path, run_id: str, control: Control, check_running: Callable[[], None], say: Say) -> int:
    """Print the ServerApp's progress until the run ends; the run's exit code."""
    shown = 0
    last_check = last_alive = time.monotonic()
    while True:
        lines = _read_lines(out / PROGRESS_FILE)
        for line in lines[shown:]:
            say(line)
        shown = len(lines)
        status = read_status(out)
        if status.get("state") == "completed":
            say(f"run {run_id} completed\nresults: {status.get('results')}")
            return 0
        if status.get("state") == "failed":
            failed = DeploymentError(f"run {run_id} failed: {status.get('error')}")
            failed.exit_code = int(status.get("exit_code") or DeploymentError.exit_code)  # e.g. 2: a site refused
            raise failed
        if time.monotonic() - last_alive > 5:  # a socket connect: the coordinator crashed if nothing listens
            last_alive = time.monotonic()
            check_running()
        if time.monotonic() - last_check > STATE_CHECK_S:  # a ServerApp that died without writing its status
            last_check = time.monotonic()
            state = control.run_state(run_id)
            time.sleep(1)  # let a status written just now land
            if state.startswith("finished") and read_status(out).get("state") not in ("completed", "failed"):
                raise DeploymentError(
                    f"run {run_id} ended as {state} without a result. See `flwr log {run_id}` and the "
                    "coordinator's superlink.log."
                )
        time.sleep(0.5)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
