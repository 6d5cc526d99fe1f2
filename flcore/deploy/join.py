"""``flsuite site join``: the site's own checks, then its SuperNode and ClientApp worker in the foreground.

``join`` runs the site's data and governance check, then ``flower-supernode`` with the
site's key, the pilot CA and the site's data folder and policy in its node config, and
prints the command it runs. By default (``clientapp="warm"``) the SuperNode runs with
``--isolation process`` beside one ClientApp worker (:mod:`flcore.deploy.worker`) that
imports the ClientApp once and forks a process per message; with
``clientapp="per-message"`` Flower's own SuperExec starts a fresh ``flwr-clientapp``
process, with all its imports, for every message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flcore.deploy.certs import public_key_line
from flcore.deploy.processes import Say, die_with_parent, flower_env, flower_tool, free_port, show, stop_tree
from flcore.deploy.worker import WORKER_FAILED_EXIT
from flcore.exceptions import ConfigError, DeploymentError, FlsuiteError
from flcore.experiment.sitecheck import check_sites
from flcore.governance.policy import load_policy

#: How ``flsuite site join`` runs the site's ClientApp (see :class:`JoinOptions`); the environment
#: variable ``FLSUITE_CLIENTAPP`` chooses it where the command line does not.
CLIENTAPP_MODES = ("warm", "per-message")
CLIENTAPP_ENV = "FLSUITE_CLIENTAPP"

#: Exit status of ``flsuite site join`` when the SuperLink refuses the site's key (Flower's exit code 305,
#: which Flower only logs: its process exits with 1, and exit statuses stop at 255).
REFUSED_EXIT = 5


def _default_clientapp() -> str:
    return os.environ.get(CLIENTAPP_ENV, "").strip() or CLIENTAPP_MODES[0]


@dataclass
class JoinOptions:
    """What ``flsuite site join`` needs.

    ``clientapp`` is how the SuperNode runs the ClientApp: ``warm`` (default; the
    ``FLSUITE_CLIENTAPP`` environment variable overrides it) starts one
    :func:`~flcore.deploy.worker.clientapp_worker` beside a ``--isolation process`` SuperNode, which pays
    the ClientApp's imports once and forks a process per message; ``per-message`` is
    Flower's default, a fresh ``flwr-clientapp`` process (about 5 s of imports on a
    small machine) for every message.
    """

    superlink: str
    domain: str
    data: Path
    key: Path | None
    ca: Path | None
    policy: Path | None = None
    port: int | None = None
    insecure: bool = False
    lenient: bool = False
    clientapp: str = field(default_factory=_default_clientapp)
    #: The federation's schema file, to check the site's tables as the run will read them (the run itself
    #: sends its schema in every message).
    schema: Path | None = None


def supernode_command(opts: JoinOptions, port: int) -> list[str]:
    """The ``flower-supernode`` command line for a site."""
    config = {"data-dir": opts.data.resolve()}
    if opts.policy is not None:
        config["policy"] = opts.policy.resolve()
    for key, path in config.items():
        if '"' in str(path) or " " in str(path):
            raise ConfigError(
                f"The {key} path {path} contains a space or a double quote, which Flower's node config cannot "
                "carry. Move or link the folder to a path without them."
            )
    node_config = " ".join(f"{k}={json.dumps(str(v))}" for k, v in config.items())
    cmd = [flower_tool("flower-supernode"), "--superlink", opts.superlink]
    if opts.insecure:
        cmd.append("--insecure")
    elif opts.ca is None:
        raise ConfigError(
            "A SuperNode that connects over TLS needs --ca, the pilot CA certificate (ca.crt from `flsuite certs "
            "init`) that signed the SuperLink's certificate; or pass --insecure for a plain-text trial."
        )
    else:
        cmd += ["--root-certificates", str(opts.ca.resolve())]
    if opts.key is not None:
        cmd += ["--auth-supernode-private-key", str(opts.key.resolve())]
    if opts.clientapp == "warm":  # the ClientApp worker, not a SuperExec of the SuperNode's, takes the messages
        cmd += ["--isolation", "process"]
    return [*cmd, "--node-config", node_config, "--port", str(port)]


def clientapp_worker_command(port: int, parent_pid: int) -> list[str]:
    """The command of a SuperNode's ClientApp worker (:mod:`flcore.deploy.worker`) on its Runtime API ``port``."""
    return [
        sys.executable,
        "-m",
        "flcore.deploy.worker",
        "clientapp-worker",
        "--runtime-api-address",
        f"127.0.0.1:{port}",
        "--parent-pid",  # so that process_tree() finds the worker and its forks with the SuperNode
        str(parent_pid),
    ]


def check_join(opts: JoinOptions, say: Say = print) -> None:
    """The site's own checks before it connects: address, key, CA, data and governance policy."""
    if opts.clientapp not in CLIENTAPP_MODES:
        raise ConfigError(
            f"Unknown ClientApp mode {opts.clientapp!r} (from {CLIENTAPP_ENV} or the command line); "
            f"choose {' or '.join(CLIENTAPP_MODES)}."
        )
    host, _, port = opts.superlink.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--superlink expects HOST:PORT (for example 127.0.0.1:9092), got {opts.superlink!r}.")
    if not opts.insecure and (opts.ca is None or not opts.ca.is_file()):
        raise ConfigError(
            f"--ca {opts.ca} is not a file. Pass the pilot CA certificate (ca.crt from `flsuite certs init`) "
            "that signed the SuperLink's certificate, or --insecure for a plain-text trial."
        )
    if opts.key is None and not opts.insecure:
        raise ConfigError("--key is required: the SuperLink admits only sites whose key it registered.")
    if opts.key is not None:
        if not opts.key.is_file():
            raise ConfigError(f"--key {opts.key} is not a file. Pass this site's private key (sites/<name>.key).")
        public_key_line(opts.key)  # an unreadable or wrong-format key fails here, with the file named
    if opts.policy is not None:
        load_policy(opts.policy)
    report = check_sites(opts.domain, opts.data, strict=not opts.lenient, policy_file=opts.policy, schema=opts.schema)
    if len(report.sites) != 1:
        raise ConfigError(
            f"--data {opts.data} holds {len(report.sites)} site folders; a SuperNode serves one site. "
            "Pass that site's own folder."
        )
    say(report.text())
    if not report.ok:
        raise DeploymentError(f"The site check of {opts.data} failed (see above); fix it before joining.")


def join(opts: JoinOptions, say: Say = print) -> int:
    """Check the site, then run its SuperNode in the foreground; returns the SuperNode's exit code."""
    check_join(opts, say)
    port = opts.port or free_port()
    cmd = supernode_command(opts, port)
    show(cmd, say)
    proc = subprocess.Popen(
        cmd,
        env=flower_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent(),
    )
    supernode_log = proc.stdout
    if supernode_log is None:  # stdout=PIPE always gives one
        stop_tree(proc, grace_s=5)
        raise FlsuiteError("join: the SuperNode's output pipe is missing (a bug in flsuite, please report it).")

    worker: subprocess.Popen[Any] | None = None

    def start_worker() -> subprocess.Popen[Any]:
        # Its output (the ClientApp's log) goes straight to this command's own output.
        return subprocess.Popen(
            clientapp_worker_command(port, proc.pid),
            env=flower_env(),
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    if opts.clientapp == "warm":
        worker = start_worker()
        say(f"ClientApp worker started (pid {worker.pid}): one process per message, forked after the imports")

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    refused = threading.Event()

    def pump() -> None:  # the SuperNode's log, passed through
        for line in supernode_log:
            sys.stdout.write(line)
            sys.stdout.flush()
            if "Exit Code: 305" in line:  # Flower logs the refusal's code, but its process exits with 1
                refused.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    gave_up = False
    try:
        while True:
            try:
                code = proc.wait(timeout=None if worker is None else 1.0)
                break
            except subprocess.TimeoutExpired:
                if worker is None or worker.poll() is None or proc.poll() is not None:
                    continue
                if worker.returncode == WORKER_FAILED_EXIT:  # it said why: a restart would fail the same way
                    gave_up = True
                    say("the ClientApp worker gave up (see its message above); stopping the SuperNode")
                    break
                # The SuperNode outlived its worker (killed, or a crash): without one it answers nothing.
                say(f"the ClientApp worker stopped (exit code {worker.returncode}); starting it again")
                worker = start_worker()
            except OSError:  # a signal landed while waiting; it was forwarded, keep waiting
                continue
    finally:
        stop_tree(worker, grace_s=5)  # the ClientApp worker and the ClientApp it may be running
        stop_tree(proc, grace_s=5)  # and its SuperExec, which holds the log pipe open
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            reader.join(timeout=5)
        except OSError:
            pass
    if refused.is_set():
        print(
            "flsuite: error: the SuperLink refused this SuperNode (Flower exit code 305): its key is not "
            "registered there. Send the coordinator this site's public key (sites/<name>.pub) to register.",
            file=sys.stderr,
        )
        return REFUSED_EXIT
    if gave_up:
        return WORKER_FAILED_EXIT
    return int(code)
