"""``flsuite coordinator start``: the federation's long-lived SuperLink, run after run.

The coordinator service runs two processes and keeps its state in one folder:

* ``flower-superlink`` on **loopback** only (``--control``, default 127.0.0.1:9093),
  with TLS, SuperNode authentication and its database in ``STATE/state.db``: registered
  keys, runs and messages survive a restart, a crash or a ``kill -9``;
* the Fleet gateway (:mod:`flcore.deploy.gateway`) on the public address
  (``--host``/``--port``), which passes the SuperNodes' Fleet API calls to it and refuses
  everything else, so the Control API (submit, stop, register a key), which has no user
  authentication in open-source Flower, is not reachable from the network.

At start it registers every ``CERTS/sites/<name>.pub`` under ``<name>`` (keys registered
before are kept) and stops the runs a crashed predecessor left "running" (their ServerApp
died with it; ``flsuite submit --resume`` continues them from their checkpoint). Runs are
submitted with ``flsuite submit``, which finds the service through ``STATE/coordinator.json``.
Sites stay connected between runs. If either process stops, the service stops with an error
naming it, for the service manager to restart it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from flcore.deploy.certs import CertBundle, check_server_cert, load_bundle
from flcore.deploy.control import UNFINISHED, Control
from flcore.deploy.processes import (
    Say,
    die_with_parent,
    flower_env,
    flower_tool,
    listening,
    show,
    stop_on_signals,
    stop_tree,
    tail,
)
from flcore.exceptions import ConfigError, DeploymentError
from flcore.federation.registry import registered_sites
from flcore.outputs import write_text_atomic

#: The service's description, in its state folder, read by ``flsuite submit``.
INFO_FILE = "coordinator.json"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class CoordinatorOptions:
    """What ``flsuite coordinator start`` needs, resolved from the command line."""

    state: Path  # the service's folder: Flower's database, logs, the connection for `flwr`
    certs: Path | None = None
    host: str = "127.0.0.1"  # the Fleet API's public address (the gateway)
    port: int = 9092
    control: str = "127.0.0.1:9093"  # the SuperLink itself: Control and Runtime APIs, loopback
    sites: list[str] | None = None  # register only these sites' keys (default: every sites/*.pub)
    insecure: bool = False
    xgb_port: int = 9094  # XGBoost's federated server for fedxgb-hist runs (all interfaces: XGBoost's choice)


@dataclass
class CoordinatorInfo:
    """How to reach a running coordinator service (``STATE/coordinator.json``)."""

    state: str
    fleet: str  # HOST:PORT the sites connect to
    control: str  # HOST:PORT of the Control API
    ca: str | None  # the CA that signed the SuperLink's certificate (None: plain text)
    database: str
    pid: int
    #: fedxgb-hist: XGBoost's federated server's certificate, key and port (None: a plain-text coordinator).
    xgb_server: dict[str, Any] | None = None

    @classmethod
    def read(cls, state: Path) -> CoordinatorInfo:
        path = state / INFO_FILE
        try:
            data = json.loads(path.read_text())
            optional = {"xgb_server"}  # absent from files written before it existed
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k not in optional or k in data})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{path} does not describe a coordinator service ({err}). Pass the folder given to "
                "`flsuite coordinator start --state`, and start the service first."
            ) from err

    def collective_config(self) -> dict[str, Any]:
        """Run-config keys with which a fedxgb-hist run starts XGBoost's federated server (none without TLS)."""
        if not self.xgb_server or not self.ca:
            return {}
        return {
            "xgb-server-cert": self.xgb_server["cert"],
            "xgb-server-key": self.xgb_server["key"],
            "xgb-ca": self.ca,
            "xgb-port": int(self.xgb_server["port"]),
        }

    def control_api(self) -> Control:
        return Control(Path(self.state) / "flwr-home", self.control, Path(self.ca) if self.ca else None)

    def check_running(self) -> None:
        host, _, port = self.control.rpartition(":")
        if not listening(host.strip("[]"), int(port)):
            raise DeploymentError(
                f"No coordinator answers on {self.control} (from {Path(self.state) / INFO_FILE}). Start it with "
                f"`flsuite coordinator start --state {self.state} ...` (or see its service's log)."
            )


def _split(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{what} expects HOST:PORT (for example 127.0.0.1:9093), got {address!r}.")
    return host.strip("[]"), int(port)


class Coordinator:
    """The SuperLink and its Fleet gateway, started on ``__enter__`` and stopped, with their helpers, on exit."""

    def __init__(self, opts: CoordinatorOptions, say: Say = print) -> None:
        self.opts = opts
        self.say = say
        self.state = opts.state.resolve()
        self.bundle: CertBundle | None = None
        if opts.certs is not None:
            self.bundle = load_bundle(opts.certs.resolve())
        elif not opts.insecure:
            raise ConfigError(
                "The coordinator needs --certs DIR (made by `flsuite certs init`): the SuperLink serves TLS and "
                "admits registered sites only. For a plain-text trial on one machine, pass --insecure instead."
            )
        self.control_host, self.control_port = _split(opts.control, "--control")
        self.fleet_connect = "127.0.0.1" if opts.host in ("0.0.0.0", "::", "") else opts.host
        same_host = opts.host in ("0.0.0.0", "::", "") or {opts.host, self.control_host} <= set(LOOPBACK)
        if opts.port == self.control_port and (same_host or opts.host == self.control_host):
            raise ConfigError(
                f"--control {opts.control} and the Fleet address {opts.host}:{opts.port} overlap: the Control API "
                "needs its own address (loopback). Choose another --port or --control."
            )
        if opts.insecure and (opts.host not in LOOPBACK or self.control_host not in LOOPBACK):
            raise ConfigError(
                f"--insecure with --host {opts.host} would serve plain text, without site authentication, beyond "
                "this machine. Plain text is for trials on one machine: use --host 127.0.0.1, or drop --insecure."
            )
        self.keys = self._site_keys()
        ca = None if opts.insecure or self.bundle is None else self.bundle.ca_cert
        self.control = Control(self.state / "flwr-home", f"{self.control_host}:{self.control_port}", ca)
        self.superlink: subprocess.Popen[Any] | None = None
        self.gateway: subprocess.Popen[Any] | None = None

    def _site_keys(self) -> dict[str, Path]:
        keys = dict(self.bundle.site_public_keys) if self.bundle is not None else {}
        if self.opts.sites:
            unknown = [s for s in self.opts.sites if s not in keys]
            if unknown:
                raise ConfigError(
                    f"No public key for site(s) {', '.join(unknown)} in {self.opts.certs}/sites. Known sites: "
                    f"{', '.join(sorted(keys)) or 'none'}. Put each site's key in {self.opts.certs}/sites/<name>.pub, "
                    "or fix --sites."
                )
            keys = {s: keys[s] for s in self.opts.sites}
        if self.bundle is not None and not keys:
            raise ConfigError(f"{self.opts.certs}/sites holds no site public key (*.pub); there is nobody to admit.")
        return keys

    @property
    def database(self) -> Path:
        return self.state / "state.db"

    def __enter__(self) -> Coordinator:
        self.state.mkdir(parents=True, exist_ok=True)
        tls = not self.opts.insecure and self.bundle is not None
        if tls and self.bundle is not None:
            check_server_cert(self.bundle.server_cert, self.fleet_connect)
            check_server_cert(self.bundle.server_cert, self.control_host)
        for host, port, what in (
            (self.control_host, self.control_port, "--control"),
            (self.fleet_connect, self.opts.port, "--port"),
        ):
            if listening(host, port):
                raise DeploymentError(
                    f"{host}:{port} is already in use (another coordinator?). Stop it or choose {what}."
                )
        try:
            self._start_superlink(tls)
            self.control.write_connection()
            for site, pub in sorted(self.keys.items()):
                self.say(
                    f"registered {site}"
                    if self.control.register(site, pub, self.say)
                    else f"{site} was registered already"
                )
            self._stop_orphaned_runs()
            self._start_gateway(tls)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        info = CoordinatorInfo(
            state=str(self.state),
            fleet=f"{self.opts.host}:{self.opts.port}",
            control=self.control.address,
            ca=str(self.control.ca) if self.control.ca else None,
            database=str(self.database),
            pid=os.getpid(),
            xgb_server=(
                {"cert": str(self.bundle.server_cert), "key": str(self.bundle.server_key), "port": self.opts.xgb_port}
                if self.bundle is not None
                else None
            ),
        )
        write_text_atomic(self.state / INFO_FILE, json.dumps(asdict(info), indent=2) + "\n")
        self.info = info
        return self

    def _start_superlink(self, tls: bool) -> None:
        cmd = [flower_tool("flower-superlink")]
        if tls and self.bundle is not None:
            cmd += ["--ssl-ca-certfile", str(self.bundle.ca_cert), "--ssl-certfile", str(self.bundle.server_cert)]
            cmd += ["--ssl-keyfile", str(self.bundle.server_key)]
            if self.keys:  # Flower authenticates SuperNodes only over TLS
                cmd.append("--enable-supernode-auth")
        else:
            cmd.append("--insecure")
        cmd += ["--database", str(self.database), "--disable-runtime-dependency-installation"]
        cmd += ["--host", self.control_host, "--port", str(self.control_port)]
        self.superlink = self._spawn(cmd, "superlink.log")
        _await_port(self.superlink, self.control_host, self.control_port, self.state / "superlink.log", "SuperLink")

    def _start_gateway(self, tls: bool) -> None:
        cmd = [sys.executable, "-m", "flcore.deploy.gateway", "--listen", f"{self.opts.host}:{self.opts.port}"]
        cmd += ["--upstream", self.control.address, "--database", str(self.database)]
        if tls and self.bundle is not None:
            cmd += ["--certfile", str(self.bundle.server_cert), "--keyfile", str(self.bundle.server_key)]
            cmd += ["--ca", str(self.bundle.ca_cert)]
        else:
            cmd.append("--insecure")
        self.gateway = self._spawn(cmd, "gateway.log")
        _await_port(self.gateway, self.fleet_connect, self.opts.port, self.state / "gateway.log", "Fleet gateway")

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen[Any]:
        show(cmd, self.say)
        with (self.state / log_name).open("ab") as log:
            return subprocess.Popen(
                cmd,
                env=flower_env(self.state / "flwr-home"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.state,
                preexec_fn=die_with_parent(),  # a SIGKILLed coordinator leaves nothing behind
            )

    def _stop_orphaned_runs(self) -> None:
        """Runs still "running" at start lost their ServerApp with the previous coordinator: stop them."""
        for run in self.control.runs():
            if str(run.get("status", "")).split(":")[0] in UNFINISHED:
                run_id = str(run.get("run-id", ""))
                self.say(
                    f"run {run_id} was left unfinished by the previous coordinator: stopping it "
                    "(continue it with `flsuite submit ... --resume OUT`)"
                )
                self.control.stop(run_id, self.say)

    def sites(self) -> dict[int, str]:
        """Node id -> name of every registered site."""
        return registered_sites(self.database)

    def check_alive(self) -> None:
        """Raise :class:`DeploymentError` naming the process that stopped, with the end of its log."""
        for proc, what, log in (
            (self.superlink, "SuperLink", "superlink.log"),
            (self.gateway, "Fleet gateway", "gateway.log"),
        ):
            if proc is not None and proc.poll() is not None:
                raise DeploymentError(
                    f"The coordinator's {what} stopped (exit code {proc.returncode}); the end of its log "
                    f"{self.state / log}:\n{tail(self.state / log)}"
                )

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        stop_tree(self.gateway, grace_s=5)
        stop_tree(self.superlink)  # SuperLink, SuperExec and ServerApp
        (self.state / INFO_FILE).unlink(missing_ok=True)


def _await_port(proc: subprocess.Popen[Any], host: str, port: int, log: Path, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not listening(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DeploymentError(
                f"The {what} did not start (exit code {proc.poll()}); the end of its log {log}:\n{tail(log)}"
            )
        time.sleep(0.2)


def run_coordinator(opts: CoordinatorOptions, say: Say = print) -> int:
    """Run the coordinator service until it is stopped (0) or one of its processes stops (an error)."""
    try:
        with stop_on_signals(), Coordinator(opts, say) as coordinator:
            names = sorted(coordinator.sites().values())
            say(f"registered sites: {', '.join(names) or 'none'}")
            say(
                f"coordinator ready: sites connect to {opts.host}:{opts.port} (Fleet API only); the Control API "
                f"listens on {coordinator.control.address}. Submit runs with "
                f"`flsuite submit SCENARIO --coordinator {coordinator.state}`"
            )
            while True:
                coordinator.check_alive()
                time.sleep(1.0)
    except KeyboardInterrupt:
        say("coordinator stopped")
        return 0
