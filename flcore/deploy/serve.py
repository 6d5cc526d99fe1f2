"""``flsuite serve``: the coordinator's SuperLink, the sites' registration, the run's submission and progress.

``serve`` starts ``flower-superlink`` with TLS and SuperNode authentication (state in
a database under the output folder, so a restarted SuperLink keeps its registered
sites), registers each site's public key with ``flwr supernode register``, submits the
suite's ServerApp with ``flwr run`` (a generated app project holding the run's
configuration, no code: every party runs the ``flsuite`` it installed), and follows
the run until it ends. Every command it runs is printed.

The deployed ServerApp (:mod:`flcore.experiment.deployed`) checkpoints every round, writes
``results.json`` and the audit trail into the output folder, and reports its progress
and its end in ``run-status.json`` there (:mod:`flcore.experiment.status`), which ``serve`` reads.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flcore.deploy.certs import check_server_cert, load_bundle
from flcore.deploy.processes import Say, die_with_parent, flower_env, flower_tool, listening, show, stop_tree, tail
from flcore.exceptions import ConfigError, DeploymentError, FlsuiteError
from flcore.experiment.status import PROGRESS_FILE, STATUS_FILE, read_status
from flcore.outputs import write_text_atomic

CONNECTION = "flsuite"  # the SuperLink connection's name in the private FLWR_HOME


@dataclass
class ServeOptions:
    """What ``flsuite serve`` needs, resolved from the command line."""

    scenario: str
    run_config: dict[str, Any]  # every setting of the run (kebab-case keys)
    out: Path
    host: str = "127.0.0.1"
    port: int = 9092
    certs: Path | None = None
    sites: Sequence[str] | None = None  # register only these sites' keys (default: every sites/*.pub)
    insecure: bool = False
    wait_for_sites_s: float = 300.0
    policy_file: Path | None = None
    audit_file: Path | None = None
    resume_from: Path | None = None


def write_app_project(folder: Path, name: str, config: Mapping[str, Any]) -> Path:
    """A Flower app project with no code: the suite's apps by reference and the run's configuration.

    ``flwr run`` bundles it (a FAB of a few hundred bytes) for the SuperLink; every
    party imports ``flcore.federation.clientapp`` from the ``flsuite`` it installed itself.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `flsuite serve`: the run's configuration, submitted with `flwr run`.",
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


def serve(opts: ServeOptions, say: Say = print) -> int:
    """Start a SuperLink, register the sites, run the ServerApp to the end; returns the exit code."""
    out = opts.out.resolve()
    work = out / ".superlink"
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    bundle = None
    if opts.certs is not None:
        bundle = load_bundle(opts.certs.resolve())
    elif not opts.insecure:
        raise ConfigError(
            "flsuite serve needs --certs DIR (made by `flsuite certs init`): the SuperLink serves TLS and admits "
            "registered sites only. For a plain-text trial on one machine, pass --insecure instead."
        )
    public_keys = dict(bundle.site_public_keys) if bundle is not None else {}
    if opts.sites:
        unknown = [s for s in opts.sites if s not in public_keys]
        if unknown:
            raise ConfigError(
                f"No public key for site(s) {', '.join(unknown)} in {opts.certs}/sites. Known sites: "
                f"{', '.join(sorted(public_keys)) or 'none'}. Put each site's key in {opts.certs}/sites/<name>.pub, "
                "or fix --sites."
            )
        public_keys = {s: public_keys[s] for s in opts.sites}
    if bundle is not None and not public_keys:
        raise ConfigError(f"{opts.certs}/sites holds no site public key (*.pub); there is nobody to admit.")
    connect = "127.0.0.1" if opts.host in ("0.0.0.0", "::", "") else opts.host
    if opts.insecure and connect not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"--insecure with --host {opts.host} would serve plain text, without site authentication, beyond this "
            "machine. Plain text is for trials on one machine: use --host 127.0.0.1, or drop --insecure."
        )
    if bundle is not None and not opts.insecure:
        check_server_cert(bundle.server_cert, connect)

    num_sites = int(opts.run_config.get("num-sites-expected") or len(public_keys))
    if num_sites < 1:
        raise ConfigError("Say how many sites take part: --num-sites N (with --insecure there are no keys to count).")
    config = {
        "scenario": opts.scenario,
        "out-dir": str(out),
        "num-sites-expected": num_sites,
        "wait-for-sites": float(opts.wait_for_sites_s),
        "policy-file": str(opts.policy_file.resolve()) if opts.policy_file else "",
        "audit-file": str((opts.audit_file or out / "audit.jsonl").resolve()),
        "resume-from": str(opts.resume_from.resolve()) if opts.resume_from else "",
        **{k: v for k, v in opts.run_config.items() if k != "num-sites-expected"},
    }
    app = write_app_project(work / "app", "flsuite-federation", config)
    for name in (STATUS_FILE, PROGRESS_FILE):
        (out / name).unlink(missing_ok=True)
    env = flower_env(home)

    cmd = [flower_tool("flower-superlink")]
    if opts.insecure:
        cmd.append("--insecure")
    elif bundle is None:  # refused above with a ConfigError: a TLS SuperLink needs --certs
        raise FlsuiteError("serve: a TLS SuperLink without its certificate bundle (a bug in flsuite, please report).")
    else:
        cmd += ["--ssl-ca-certfile", str(bundle.ca_cert), "--ssl-certfile", str(bundle.server_cert)]
        cmd += ["--ssl-keyfile", str(bundle.server_key)]
    if public_keys and not opts.insecure:  # Flower authenticates SuperNodes only over TLS
        cmd.append("--enable-supernode-auth")
    cmd += ["--database", str(work / "state.db"), "--disable-runtime-dependency-installation"]
    cmd += ["--host", opts.host, "--port", str(opts.port)]
    if listening(connect, opts.port):
        raise DeploymentError(
            f"Port {opts.port} on {connect} is already in use (another SuperLink?). Stop it or choose --port."
        )
    show(cmd, say)
    log = work / "superlink.log"
    superlink = subprocess.Popen(
        cmd,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=work,
        preexec_fn=die_with_parent(),  # a SIGKILLed `serve` leaves no SuperLink behind
    )
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        _await_port(superlink, connect, opts.port, log)
        _write_connection(home, f"{connect}:{opts.port}", None if opts.insecure else bundle.ca_cert if bundle else None)
        for site, pub in sorted(public_keys.items()):
            _register(site, pub, env, say)
        say(f"SuperLink ready on {opts.host}:{opts.port}; sites may join now")
        run_id = _submit(app.parent, env, say)
        say(f"run {run_id} submitted; waiting for {num_sites} site(s) to connect (up to {opts.wait_for_sites_s:.0f} s)")
        return _follow(out, superlink, run_id, env, log, say)
    except KeyboardInterrupt:
        say(f"interrupted: stopping the SuperLink. Continue the run with --resume {out}")
        raise
    finally:
        stop_tree(superlink)  # SuperLink, SuperExec and ServerApp: a stopped serve leaves nothing running
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM/SIGHUP (a service stop, a closed ssh session) end `serve` as Ctrl-C does."""
    raise KeyboardInterrupt


def _await_port(proc: subprocess.Popen[Any], host: str, port: int, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not listening(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DeploymentError(
                f"The SuperLink did not start (exit code {proc.poll()}); the end of its log {log}:\n{tail(log)}"
            )
        time.sleep(0.2)


def _write_connection(home: Path, address: str, ca: Path | None) -> None:
    lines = [
        "[superlink]",
        f'default = "{CONNECTION}"',
        "",
        f"[superlink.{CONNECTION}]",
        f"address = {json.dumps(address)}",
    ]
    lines.append(f"root-certificates = {json.dumps(str(ca))}" if ca is not None else "insecure = true")
    write_text_atomic(home / "config.toml", "\n".join(lines) + "\n")


def _flwr(args: list[str], env: dict[str, str], say: Say | None) -> subprocess.CompletedProcess[str]:
    cmd = [flower_tool("flwr"), *args]
    if say is not None:
        show(cmd, say)
    try:
        return subprocess.run(cmd, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{shlex.join(cmd)} did not answer within 120 s")


def _register(site: str, public_key: Path, env: dict[str, str], say: Say) -> None:
    done = _flwr(["supernode", "register", str(public_key), CONNECTION, "--name", site, "--format", "json"], env, say)
    text = done.stdout + done.stderr
    if done.returncode == 0:
        say(f"registered {site}")
    elif "already in use" in text:  # a restarted SuperLink keeps its registrations in its database
        say(f"{site} was already registered")
    else:
        raise DeploymentError(f"Registering {site}'s key {public_key} failed: {_flower_message(text)}")


def _submit(app: Path, env: dict[str, str], say: Say) -> str:
    done = _flwr(["run", str(app), CONNECTION, "--format", "json"], env, say)
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        reply = {}
    if done.returncode != 0 or not reply.get("success"):
        raise DeploymentError(f"flwr run failed: {_flower_message(done.stdout + done.stderr)}")
    return str(reply["run-id"])


def _flower_message(text: str) -> str:
    try:
        return str(json.loads(text).get("error-message", text.strip()))
    except ValueError:
        return " ".join(text.replace("│", " ").split())[-600:]


def _run_state(run_id: str, env: dict[str, str]) -> str:
    done = _flwr(["list", CONNECTION, "--run-id", run_id, "--format", "json"], env, None)
    try:
        runs = json.loads(done.stdout).get("runs", [])
    except ValueError:
        return ""
    return str(runs[0].get("status", "")) if runs else ""


def _follow(out: Path, superlink: subprocess.Popen[Any], run_id: str, env: dict[str, str], log: Path, say: Say) -> int:
    """Print the ServerApp's progress until the run ends; the run's exit code."""
    shown = 0
    last_check = time.monotonic()
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
        if superlink.poll() is not None:
            raise DeploymentError(
                f"The SuperLink stopped (exit code {superlink.returncode}); its log {log}:\n{tail(log)}"
            )
        if time.monotonic() - last_check > 10:  # a ServerApp that died before writing its status
            last_check = time.monotonic()
            state = _run_state(run_id, env)
            time.sleep(1)  # let a status written just now land
            if state.startswith("finished") and read_status(out).get("state") not in ("completed", "failed"):
                raise DeploymentError(
                    f"run {run_id} ended as {state} without a result. See `flwr log {run_id}` and {log}."
                )
        time.sleep(0.5)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
