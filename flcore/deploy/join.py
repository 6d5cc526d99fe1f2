"""``flsuite site join``: the site's own checks, then its SuperNode and ClientApp worker, as a service.

``join`` runs the site's data and governance check, then ``flower-supernode`` with the
site's key, the pilot CA and the site's data folder and policy in its node config, and
prints the command it runs. By default (``clientapp="warm"``) the SuperNode runs with
``--isolation process`` beside one ClientApp worker (:mod:`flcore.deploy.worker`) that
imports the ClientApp once and forks a process per message; with
``clientapp="per-message"`` Flower's own SuperExec starts a fresh ``flwr-clientapp``
process, with all its imports, for every message.

It runs until stopped, serving run after run: when the SuperNode stops, the site joins
again after a back-off, unless the cause needs a person (:mod:`flcore.deploy.sitelog`).
Its children die with it, even when it is SIGKILLed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flcore.data.site import SITE_STATE
from flcore.deploy.certs import pem_private_key, public_key_line
from flcore.deploy.processes import Say, die_with_parent, flower_env, free_port, show, stop_tree
from flcore.deploy.sitelog import SupernodeLog, diagnose
from flcore.deploy.supernode import supernode_command_prefix
from flcore.deploy.worker import WORKER_FAILED_EXIT
from flcore.exceptions import ConfigError, DeploymentError, FlsuiteError
from flcore.experiment.sitecheck import check_sites
from flcore.federation.collective import NODE_CA, NODE_CLIENT_CERT, NODE_CLIENT_KEY, NODE_HOST
from flcore.governance.policy import load_policy
from flcore.outputs import atomic_write

#: How ``flsuite site join`` runs the site's ClientApp (see :class:`JoinOptions`); the environment
#: variable ``FLSUITE_CLIENTAPP`` chooses it where the command line does not.
CLIENTAPP_MODES = ("warm", "per-message")
CLIENTAPP_ENV = "FLSUITE_CLIENTAPP"

#: Longest pause, in seconds, between two attempts of a site to join again.
MAX_BACKOFF_S = 30.0


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
    config.update(collective_identity(opts))
    for key, path in config.items():
        if '"' in str(path) or " " in str(path):
            raise ConfigError(
                f"The {key} path {path} contains a space or a double quote, which Flower's node config cannot "
                "carry. Move or link the folder to a path without them."
            )
    node_config = " ".join(f"{k}={json.dumps(str(v))}" for k, v in config.items())
    cmd = [*supernode_command_prefix(), "--superlink", opts.superlink]  # Flower's, with short polls
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


def collective_identity(opts: JoinOptions) -> dict[str, Any]:
    """Node config for XGBoost's federated communicator (``fedxgb-hist``): where and as whom the bank connects.

    The bank connects out to the host of its ``--superlink``, verifies the coordinator
    with ``--ca``, and shows ``sites/<name>.crt`` (the client certificate ``flsuite
    certs init`` issued for its key, next to the key), with the key itself as PEM
    (written, readable by this user only, to the site's state folder). Empty when the
    site has no such certificate or runs without TLS: a fedxgb-hist run then tells the
    coordinator what is missing.
    """
    if opts.insecure or opts.key is None or opts.ca is None or not opts.key.with_suffix(".crt").is_file():
        return {}
    pem = opts.data.resolve() / SITE_STATE / "xgb-client.key"
    with atomic_write(pem, "wb", permissions=0o600) as fh:
        fh.write(pem_private_key(opts.key))
    return {
        NODE_HOST: opts.superlink.rpartition(":")[0].strip("[]"),
        NODE_CA: opts.ca.resolve(),
        NODE_CLIENT_CERT: opts.key.with_suffix(".crt").resolve(),
        NODE_CLIENT_KEY: pem,
    }


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
    if opts.key is not None and opts.insecure:
        raise ConfigError(
            "--insecure with --key: Flower authenticates a site's key only over TLS, so a plain-text SuperNode "
            "cannot use it. Drop --insecure and pass --ca (the pilot CA), or drop --key for a plain-text trial."
        )
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
    """Check the site, then serve the federation until stopped; returns the exit code.

    A service: whenever the SuperNode stops (the coordinator restarted, dropped the
    session, or is unreachable; the previous session is still counted as connected),
    the site joins again after a back-off of 1 s doubling to :data:`MAX_BACKOFF_S`
    (reset after a session that lasted a minute). A cause a retry cannot fix (a key the
    coordinator does not know, an untrusted certificate, another Flower version) ends it
    with its own exit status and what to do (:mod:`flcore.deploy.sitelog`). SIGTERM,
    SIGINT and SIGHUP stop it (exit 0) with everything it started.
    """
    check_join(opts, say)
    port = opts.port or free_port()
    log = SupernodeLog(opts.data.resolve() / SITE_STATE / "supernode.log", _echo, opts.superlink)
    say(f"the SuperNode's full log: {log.path}")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    delay = 1.0
    try:
        while True:
            started = time.monotonic()
            code = _session(opts, port, log, stop, say)
            if stop.is_set():
                say("flsuite: site stopped")
                return 0
            if code == WORKER_FAILED_EXIT:
                return code
            cause = diagnose(list(log.tail), opts.superlink, opts.ca, code)
            if not cause.retry:
                print(f"flsuite: error: {cause.text()}", file=sys.stderr)
                return cause.exit_code
            if time.monotonic() - started > 60:
                delay = 1.0
            say(f"flsuite: {cause.text()} Joining again in {delay:.0f} s.")
            if stop.wait(delay):
                say("flsuite: site stopped")
                return 0
            delay = min(delay * 2, MAX_BACKOFF_S)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _session(opts: JoinOptions, port: int, log: SupernodeLog, stop: threading.Event, say: Say) -> int:
    """One SuperNode (and its ClientApp worker) until it stops or ``stop`` is set; the SuperNode's exit code."""
    log.new_session()
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
    output = proc.stdout
    if output is None:  # stdout=PIPE always gives one
        stop_tree(proc, grace_s=5)
        raise FlsuiteError("join: the SuperNode's output pipe is missing (a bug in flsuite, please report it).")
    reader = threading.Thread(target=log.read, args=(output,), daemon=True)
    reader.start()

    def start_worker() -> subprocess.Popen[Any]:
        # Its output (the ClientApp's log) goes straight to this command's own output.
        return subprocess.Popen(
            clientapp_worker_command(port, proc.pid),
            env=flower_env(),
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    worker: subprocess.Popen[Any] | None = None
    if opts.clientapp == "warm":
        worker = start_worker()
        say(f"ClientApp worker started (pid {worker.pid}): one process per message, forked after the imports")
    code: int | None = None
    try:
        while code is None and not stop.is_set():
            try:
                code = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if worker is None or worker.poll() is None:
                    continue
                if worker.returncode == WORKER_FAILED_EXIT:  # it said why: a restart would fail the same way
                    say("the ClientApp worker gave up (see its message above); stopping the SuperNode")
                    return WORKER_FAILED_EXIT
                # The SuperNode outlived its worker (killed, or a crash): without one it answers nothing.
                say(f"the ClientApp worker stopped (exit code {worker.returncode}); starting it again")
                worker = start_worker()
    finally:
        stop_tree(worker, grace_s=5)  # the ClientApp worker and the ClientApp it may be running
        stop_tree(proc, grace_s=5)  # and its SuperExec, which holds the log pipe open
        reader.join(timeout=5)
    return int(code) if code is not None else 0
