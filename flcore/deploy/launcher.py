"""Partner-site deployment: ``flsuite serve`` (SuperLink + ServerApp) and ``flsuite site join`` (SuperNode).

Both commands drive Flower's own executables and print each command they run:

* ``serve`` starts ``flower-superlink`` with TLS and SuperNode authentication
  (state in a database under the output folder, so a restarted SuperLink keeps
  its registered sites), registers each site's public key with ``flwr supernode
  register``, submits the suite's ServerApp with ``flwr run`` (a generated app
  project holding the run's configuration, no code: every party runs the
  ``flsuite`` it installed), and follows the run until it ends.
* ``join`` runs the site's data and governance check, then ``flower-supernode``
  with the site's key, the pilot CA and the site's data folder and policy in its
  node config. By default (``clientapp="warm"``) the SuperNode runs with
  ``--isolation process`` beside one ClientApp worker (:func:`clientapp_worker`)
  that imports the ClientApp once and forks a process per message; with
  ``clientapp="per-message"`` Flower's own SuperExec starts a fresh
  ``flwr-clientapp`` process, with all its imports, for every message.

The deployed ServerApp (:mod:`flcore.experiment.deployed`) checkpoints every round, writes
``results.json`` and the audit trail into the output folder, and reports its
progress and its end in ``run-status.json`` there, which ``serve`` reads.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flcore.exceptions import ConfigError, DeploymentError, FlsuiteError
from flcore.outputs import write_text_atomic

STATUS_FILE = "run-status.json"
PROGRESS_FILE = "progress.log"
RESULTS_FILE = "results.json"
CONNECTION = "flsuite"  # the SuperLink connection's name in the private FLWR_HOME
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}

Say = Callable[[str], None]

#: How ``flsuite site join`` runs the site's ClientApp (see :class:`JoinOptions`); the environment
#: variable ``FLSUITE_CLIENTAPP`` chooses it where the command line does not.
CLIENTAPP_MODES = ("warm", "per-message")
CLIENTAPP_ENV = "FLSUITE_CLIENTAPP"

#: Exit status of ``flsuite site join`` when the SuperLink refuses the site's key (Flower's exit code 305,
#: which Flower only logs: its process exits with 1, and exit statuses stop at 255).
REFUSED_EXIT = 5
#: Exit status of the ClientApp worker (:func:`clientapp_worker`) when it gives up, after saying why; ``flsuite
#: site join`` then stops its SuperNode and exits with it, instead of starting the worker again.
WORKER_FAILED_EXIT = 6


# --------------------------------------------------------------------------------------
# The deployed ServerApp
# --------------------------------------------------------------------------------------


def write_status(path: Path, state: str, **fields: Any) -> None:
    """Write the deployed ServerApp's ``run-status.json`` (``state`` and any fields), whole."""
    from flcore.experiment.results import write_json

    write_json(path, {"state": state, "time": time.time(), **fields})


def read_status(out: Path) -> dict[str, Any]:
    """The deployed ServerApp's ``run-status.json`` (empty before it starts)."""
    try:
        return dict(json.loads((out / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------
# Commands and processes
# --------------------------------------------------------------------------------------


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


def show(cmd: Sequence[str], say: Say) -> None:
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


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------
# flsuite serve
# --------------------------------------------------------------------------------------


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
    party imports ``flcore.federation.app`` from the ``flsuite`` it installed itself.
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
        'clientapp = "flcore.federation.app:client_app"',
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
    from flcore.deploy.certs import check_server_cert, load_bundle

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
        cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=work
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
                f"The SuperLink did not start (exit code {proc.poll()}); the end of its log {log}:\n{_tail(log)}"
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
                f"The SuperLink stopped (exit code {superlink.returncode}); its log {log}:\n{_tail(log)}"
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


# --------------------------------------------------------------------------------------
# flsuite site join
# --------------------------------------------------------------------------------------


def _default_clientapp() -> str:
    return os.environ.get(CLIENTAPP_ENV, "").strip() or CLIENTAPP_MODES[0]


@dataclass
class JoinOptions:
    """What ``flsuite site join`` needs.

    ``clientapp`` is how the SuperNode runs the ClientApp: ``warm`` (default; the
    ``FLSUITE_CLIENTAPP`` environment variable overrides it) starts one
    :func:`clientapp_worker` beside a ``--isolation process`` SuperNode, which pays
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
    """The command of a SuperNode's ClientApp worker (:func:`clientapp_worker`) on its Runtime API ``port``."""
    return [
        sys.executable,
        "-m",
        "flcore.deploy.launcher",
        "clientapp-worker",
        "--runtime-api-address",
        f"127.0.0.1:{port}",
        "--parent-pid",  # so that process_tree() finds the worker and its forks with the SuperNode
        str(parent_pid),
    ]


def check_join(opts: JoinOptions, say: Say = print) -> None:
    """The site's own checks before it connects: address, key, CA, data and governance policy."""
    from flcore.deploy.certs import public_key_line
    from flcore.experiment.sitecheck import check_sites
    from flcore.governance.policy import load_policy

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
    report = check_sites(opts.domain, opts.data, strict=not opts.lenient, policy_file=opts.policy)
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
        cmd, env=flower_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    supernode_log = proc.stdout
    if supernode_log is None:  # stdout=PIPE always gives one
        stop_tree(proc, grace_s=5)
        raise FlsuiteError("join: the SuperNode's output pipe is missing (a bug in flsuite, please report it).")

    worker: subprocess.Popen[Any] | None = None

    def start_worker() -> subprocess.Popen[Any]:
        # Its output (the ClientApp's log) goes straight to this command's own output.
        return subprocess.Popen(clientapp_worker_command(port, proc.pid), env=flower_env(), start_new_session=True)

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


# --------------------------------------------------------------------------------------
# The warm ClientApp worker of a site's SuperNode
# --------------------------------------------------------------------------------------

#: Modules the worker imports before its first message: the ClientApp (``[tool.flwr.app.components]``
#: of :func:`write_app_project`) and ``torch._dynamo``, which torch imports on the first optimiser it
#: builds (about 2 s, in every training message of a per-message ClientApp). Every registered
#: scenario's domain is loaded as well, as ``flcore.scenario.get`` does on each message.
WORKER_PRELOAD = ("flcore.federation.app", "torch._dynamo")


#: Seconds between the worker's log lines about one stretch of failed requests (the first is logged at once).
WORKER_LOG_EVERY_S = 30.0
#: Seconds of requests failing without a break, while the SuperNode lives, after which the worker gives up.
WORKER_GIVE_UP_S = 300.0


def transient_failure(err: BaseException) -> bool:
    """Whether a failed ``AcquireTask`` may succeed if simply tried again.

    Transient: the Runtime API cannot be reached or answers "try later", as while
    the SuperNode starts or stops (``httpx.TransportError``: connection refused or
    reset, timeouts; HTTP 502, 503, 504, which Flower's own HTTP retries also
    retry). Anything else will fail the same way every time: the Runtime API
    refusing the worker (HTTP 401, 403), not knowing the request (another Flower
    version: 400, 404), or something that is not a Runtime API at that address (a
    response that is not protobuf: ValueError).
    """
    import httpx

    if isinstance(err, httpx.TransportError):
        return True
    if isinstance(err, httpx.HTTPStatusError):
        return err.response.status_code in (502, 503, 504)
    return False


def _describe(err: BaseException) -> str:
    import httpx

    if isinstance(err, httpx.HTTPStatusError):
        body = err.response.text.strip().replace("\n", " ")[:200]
        return f"HTTP {err.response.status_code} {err.response.reason_phrase}" + (f": {body}" if body else "")
    if isinstance(err, SystemExit):
        return f"Flower ended it with exit status {err.code}, after logging why"
    return f"{type(err).__name__}: {str(err)[:300]}"


class WorkerFailures:
    """The ClientApp worker's stretch of failed requests: logged, rate-limited, bounded in time.

    The first failure is logged at once, then at most one line every ``log_every_s``
    seconds with the count so far, and one when a request succeeds again.

    Parameters
    ----------
    address : str
        The Runtime API, for the messages.
    give_up_after_s : float
        Seconds of failures without a success after which :meth:`failed` says to give up.
    log_every_s : float
        Seconds between two log lines of one stretch.
    say : callable
        Where lines go (standard error).
    clock : callable
        Monotonic seconds (a test passes its own).
    """

    def __init__(
        self,
        address: str,
        give_up_after_s: float = WORKER_GIVE_UP_S,
        log_every_s: float = WORKER_LOG_EVERY_S,
        say: Say | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.give_up_after_s = give_up_after_s
        self.log_every_s = log_every_s
        self.say: Say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self.count = 0
        self.since: float | None = None
        self._logged = 0.0

    def failed(self, err: BaseException) -> bool:
        """Count a transient failure; ``False`` once they have lasted ``give_up_after_s`` (the caller gives up)."""
        now = self.clock()
        self.count += 1
        if self.since is None:
            self.since, self._logged = now, now
            self.say(
                f"flsuite ClientApp worker: the SuperNode's Runtime API at {self.address} did not answer "
                f"({_describe(err)}); retrying (the SuperNode may be starting or stopping)."
            )
        elif now - self._logged >= self.log_every_s:
            self._logged = now
            self.say(
                f"flsuite ClientApp worker: still no answer from {self.address} after {now - self.since:.0f} s "
                f"({self.count} failed requests; last: {_describe(err)})."
            )
        return now - self.since < self.give_up_after_s

    def succeeded(self) -> None:
        """A request got through: end the stretch (and say so, if it was logged)."""
        if self.since is not None:
            self.say(
                f"flsuite ClientApp worker: the Runtime API at {self.address} answers again "
                f"(after {self.count} failed requests in {self.clock() - self.since:.0f} s)."
            )
        self.count, self.since = 0, None

    def gave_up(self, err: BaseException, permanent: bool) -> str:
        """The one-paragraph message of a worker that stops trying."""
        if permanent:
            why = (
                f"its request for a task failed in a way a retry cannot fix ({_describe(err)}): the Runtime API "
                "refused the worker, runs another Flower version than this flsuite's, or is not a SuperNode's "
                "Runtime API."
            )
        else:
            elapsed = 0.0 if self.since is None else self.clock() - self.since
            why = (
                f"its requests have failed for {elapsed:.0f} s without a break "
                f"({self.count} failed requests; last: {_describe(err)}), while the SuperNode process still runs."
            )
        return (
            f"flsuite ClientApp worker: giving up on the SuperNode's Runtime API at {self.address}: {why} "
            "This site answers no training until it is fixed. Check the SuperNode's log above, that flsuite and "
            "Flower are the same versions as the SuperNode's, then run `flsuite site join` again."
        )


def clientapp_worker(
    runtime_api_address: str,
    parent_pid: int | None = None,
    poll_s: float = 0.2,
    preload: Sequence[str] = WORKER_PRELOAD,
    retry_s: float = 1.0,
    failures: WorkerFailures | None = None,
) -> int:
    """Serve a ``--isolation process`` SuperNode's ClientApp messages from one pre-imported process.

    Flower 1.41's ``flwr-clientapp`` answers exactly one message (it needs the
    one-off token the SuperNode's Runtime API hands out for it, and ends with
    ``flwr_exit``), so the SuperExec of a default (``--isolation subprocess``)
    SuperNode starts a new one, which imports Flower, torch, scikit-learn and the
    suite again, for every message. This worker takes the SuperExec's place: it
    imports all that once, asks the Runtime API for tasks (``AcquireTask``, as
    ``flower-superexec`` does) every ``poll_s`` seconds, and runs each ClientApp
    task with Flower's own ``run_clientapp`` in a process forked for it, so every
    message still gets a fresh process, as before, only without the imports.

    A request that fails transiently (:func:`transient_failure`: the SuperNode
    starting or stopping) is tried again every ``retry_s`` seconds, logged to
    standard error as :class:`WorkerFailures` says. The worker gives up, with a
    one-paragraph message on standard error and :data:`WORKER_FAILED_EXIT`, when a
    module in ``preload`` (the ClientApp) cannot be imported, when a request fails
    in a way a retry cannot fix, or when transient failures last
    ``failures.give_up_after_s``. (A Runtime API of an incompatible Flower version
    may also end the process through Flower's own ``flwr_exit``, which logs why.)

    Returns
    -------
    int
        0 when the SuperNode (``parent_pid``) is gone or on SIGTERM/SIGINT;
        :data:`WORKER_FAILED_EXIT` when it gave up.
    """
    import psutil
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # type: ignore[attr-defined]
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    from flcore import scenario

    failures = failures or WorkerFailures(runtime_api_address)
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError as err:
            failures.say(
                f"flsuite ClientApp worker: cannot import {module} ({type(err).__name__}: {err}), so this site "
                "cannot run the ClientApp. Install flsuite with the extras of this site's domain in the Python "
                f"environment the SuperNode uses ({sys.executable}), then run `flsuite site join` again."
            )
            return WORKER_FAILED_EXIT
    scenario.available()
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,  # the SuperNode's Runtime API listens on 127.0.0.1 without TLS, as for its own SuperExec
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=None,  # a failed request is retried by the loop below, which also watches the SuperNode
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    running: set[int] = set()
    exit_code = 0
    try:
        while not stop.is_set() and (parent_pid is None or psutil.pid_exists(parent_pid)):
            _reap(running)
            try:
                reply = client.AcquireTask(request)
            except Exception as err:  # any failure: logged to stderr (WorkerFailures), retried or given up
                if transient_failure(err) and failures.failed(err):
                    stop.wait(retry_s)
                    continue
                failures.say(failures.gave_up(err, permanent=not transient_failure(err)))
                exit_code = WORKER_FAILED_EXIT
                break
            except SystemExit as done:  # Flower's flwr_exit, e.g. the Runtime API's version is incompatible
                failures.say(failures.gave_up(done, permanent=True))
                exit_code = WORKER_FAILED_EXIT
                break
            failures.succeeded()
            if not (reply.HasField("task") and reply.token):
                stop.wait(poll_s)
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the task's own process: Flower's ClientApp runner, then exit without our cleanup
                code = 1
                try:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)
                    run_clientapp(
                        runtime_api_address=runtime_api_address,
                        token=reply.token,
                        insecure=True,
                        parent_pid=os.getppid(),
                    )
                    code = 0
                except SystemExit as done:  # run_clientapp ends with flwr_exit, i.e. sys.exit
                    code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
                except BaseException:  # the task's process ends here: its traceback goes to the site's log
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            running.add(pid)
    finally:
        client.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for pid in running:  # the SuperNode is gone or we were stopped: so are the tasks
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while running and time.monotonic() < deadline:
            _reap(running)
            time.sleep(0.1)
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(running)
    return exit_code


def _reap(running: set[int]) -> None:
    """Collect the finished task processes among ``running``."""
    for pid in list(running):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            running.discard(pid)


def _main(argv: Sequence[str]) -> int:
    """``python -m flcore.deploy.launcher clientapp-worker --runtime-api-address HOST:PORT [--parent-pid PID]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m flcore.deploy.launcher", description="A SuperNode's ClientApp worker."
    )
    parser.add_argument("command", choices=["clientapp-worker"])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (HOST:PORT)")
    parser.add_argument("--parent-pid", type=int, help="the SuperNode's pid: stop when it is gone")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between requests for a task (default 0.2)")
    args = parser.parse_args(list(argv))
    os.environ.update(QUIET)
    return clientapp_worker(args.runtime_api_address, args.parent_pid, poll_s=args.poll)


__all__ = [
    "CLIENTAPP_MODES",
    "WORKER_FAILED_EXIT",
    "DeploymentError",
    "FlsuiteError",
    "JoinOptions",
    "ServeOptions",
    "WorkerFailures",
    "check_join",
    "clientapp_worker",
    "join",
    "serve",
    "supernode_command",
    "transient_failure",
    "write_app_project",
]


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
