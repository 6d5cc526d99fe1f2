"""The communicator XGBoost's distributed ``hist`` learner runs over, started by the ServerApp for each round.

Two kinds, one per place a federation runs:

* **rabit** (simulation): XGBoost's own tracker on 127.0.0.1, in ``xgboost-cpu``. The
  sites' workers connect to each other (a full mesh of plain TCP), which is fine on
  one machine and not between banks.
* **federated** (deployment): XGBoost's federated gRPC server, a star with mutual TLS.
  Each bank's worker connects *out* to the coordinator, with a client certificate
  the run's CA signed, and verifies the coordinator's certificate (the SuperLink's,
  from the same CA); no bank listens for connections. It needs an XGBoost built with
  the federated plugin (``xgboost==3.2.0``, the last release whose wheels carry it;
  ``xgboost-cpu`` does not): :func:`federated_available`.

Either server runs in its own process for one session (one Flower round), so a
round that fails can always be ended: XGBoost offers no call that stops a running
federated server, and a tracker waits for its workers without limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flcore.exceptions import ConfigError, FlsuiteError

#: Config key of a train message: the session's communicator, as JSON (:meth:`Session.worker_args`).
COLLECTIVE = "xgb-collective"


def federated_available() -> bool:
    """Whether the installed XGBoost has the federated communicator (the full ``xgboost`` 3.2 wheel)."""
    import xgboost

    return bool(xgboost.build_info().get("USE_FEDERATED", False))


FEDERATED_MISSING = (
    "The deployed fedxgb-hist strategy needs XGBoost's federated communicator (gRPC with mutual TLS), which the "
    "installed xgboost-cpu does not include. On the coordinator and every bank: "
    "`pip uninstall -y xgboost-cpu && pip install --no-deps 'xgboost==3.2.0'` (the last release whose wheels "
    "carry it; see docs/deploy.md), or use --strategy fedxgb-bagging."
)


@dataclass(frozen=True)
class TlsFiles:
    """The coordinator's side of the federated server's mutual TLS: its certificate and key, and the CA."""

    server_cert: Path
    server_key: Path
    ca_cert: Path


@dataclass
class Session:
    """One running communicator server for ``sites`` (in rank order), until :meth:`close`."""

    kind: str
    sites: list[str]
    port: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.perf_counter)

    def worker_args(self) -> dict[str, Any]:
        """What every worker needs to join (each adds its own rank or task id: :func:`worker_args`)."""
        return {"kind": self.kind, "port": self.port, "sites": self.sites}

    def seconds(self) -> float:
        """Seconds since the server started."""
        return time.perf_counter() - self.started

    def close(self) -> None:
        """Stop the server (it may still wait for workers that failed)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def open_session(kind: str, sites: list[str], tls: TlsFiles | None = None, port: int = 0) -> Session:
    """Start a communicator server for ``sites`` in its own process; returns once it listens.

    Parameters
    ----------
    kind : {"rabit", "federated"}
    sites : list of str
        The sites of this session; a site's rank is its place in this list.
    tls : TlsFiles, optional
        Mutual TLS for the federated server (required for it).
    port : int
        The federated server's port (0: any free one, for tests on one machine).
    """
    if kind == "federated" and tls is None:
        raise ConfigError("the federated communicator runs only with mutual TLS: give the coordinator's certificates")
    spec = {"kind": kind, "workers": len(sites), "port": port, "tls": _tls_json(tls)}
    # Its log (XGBoost's: a refused TLS handshake, say) goes where this process's goes: the coordinator's log.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flcore.federation.collective", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    line = proc.stdout.readline().decode().strip() if proc.stdout is not None else ""
    if not line:
        code = proc.wait(timeout=10)
        raise FlsuiteError(
            f"The XGBoost {kind} communicator did not start (exit code {code}; its error is in the log above). "
            + (f"Is port {port} free on the coordinator (--xgb-port)?" if kind == "federated" else "")
        )
    return Session(kind, list(sites), int(json.loads(line)["port"]), proc)


#: How a strategy starts each round's communicator, given the sites in rank order.
SessionOpener = Callable[[list[str]], Session]


def session_opener(deployed: bool, tls: TlsFiles | None, port: int) -> SessionOpener:
    """How ``fedxgb-hist`` starts each round's communicator: rabit on loopback in simulation, else federated TLS.

    Parameters
    ----------
    deployed : bool
        Whether the federation runs on Flower's deployment grid (SuperLink and SuperNodes).
    tls, port : TlsFiles or None, int
        The coordinator's certificates for the federated server, and its port.

    Raises
    ------
    ConfigError
        In a deployment without the coordinator's certificates (a plain-text trial).
    FlsuiteError
        In a deployment whose XGBoost lacks the federated communicator (:data:`FEDERATED_MISSING`).
    """
    if not deployed:
        return lambda sites: open_session("rabit", sites)
    if tls is None:
        raise ConfigError(
            "strategy=fedxgb-hist in a deployment runs XGBoost's communicator over mutual TLS with the run's "
            "certificates, and this coordinator has none (a plain-text trial?). Start the coordinator with --certs, "
            "or use --strategy fedxgb-bagging."
        )
    if not federated_available():
        raise FlsuiteError(FEDERATED_MISSING)
    return lambda sites: open_session("federated", sites, tls, port)


def _tls_json(tls: TlsFiles | None) -> dict[str, str] | None:
    if tls is None:
        return None
    return {"server_cert": str(tls.server_cert), "server_key": str(tls.server_key), "ca_cert": str(tls.ca_cert)}


#: Node config keys of a deployed bank for the federated communicator (set by ``flsuite site join``).
NODE_HOST = "coordinator-host"  # the host the bank reaches the coordinator at (its --superlink's)
NODE_CA = "ca-cert"  # the run's CA: verifies the coordinator's certificate
NODE_CLIENT_CERT = "xgb-client-cert"  # the bank's client certificate, signed by the CA
NODE_CLIENT_KEY = "xgb-client-key"  # its private key (PEM)


def worker_args(session: Mapping[str, Any], site: str, node_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``xgboost.collective.init`` keys for ``site`` in a session described by :meth:`Session.worker_args`.

    A deployed bank reads its certificates and the coordinator's host from its node config.
    """
    sites = [str(s) for s in session["sites"]]
    if site not in sites:
        raise FlsuiteError(f"site '{site}' is not among this session's sites ({', '.join(sites)})")
    port = int(session["port"])
    if session["kind"] == "rabit":
        # The tracker ranks workers by task id (sortby="task"): the sites' order in every round and engine.
        return {"dmlc_tracker_uri": "127.0.0.1", "dmlc_tracker_port": port, "dmlc_task_id": site}
    missing = [k for k in (NODE_HOST, NODE_CA, NODE_CLIENT_CERT, NODE_CLIENT_KEY) if not node_config.get(k)]
    if missing:
        raise ConfigError(
            f"site '{site}': the federated XGBoost communicator needs {', '.join(missing)} in this bank's node "
            "config, which `flsuite site join` sets from --superlink, --ca and the client certificate next to --key "
            "(sites/<name>.crt from `flsuite certs init`)."
        )
    return {
        "dmlc_communicator": "federated",
        "federated_server_address": f"{node_config[NODE_HOST]}:{port}",
        "federated_world_size": len(sites),
        "federated_rank": sites.index(site),
        "federated_server_cert_path": str(node_config[NODE_CA]),  # verifies the coordinator's certificate
        "federated_client_key_path": str(node_config[NODE_CLIENT_KEY]),
        "federated_client_cert_path": str(node_config[NODE_CLIENT_CERT]),
    }


def _serve(spec: dict[str, Any]) -> None:
    """The server process: start the communicator, print its port, and serve until killed or stdin closes."""
    if spec["kind"] == "rabit":
        from xgboost.tracker import RabitTracker

        tracker = RabitTracker(n_workers=int(spec["workers"]), host_ip="127.0.0.1", port=0, sortby="task")
        tracker.start()
        port = int(tracker.worker_args()["dmlc_tracker_port"])
    else:
        from xgboost.federated import run_federated_server

        tls = spec["tls"]
        # All three paths, or XGBoost starts a server without TLS (it logs a line and goes on).
        info = run_federated_server(
            int(spec["workers"]),
            int(spec["port"]),
            server_key_path=tls["server_key"],
            server_cert_path=tls["server_cert"],
            client_cert_path=tls["ca_cert"],  # the CA that signed every bank's client certificate
            blocking=False,
        )
        port = int((info or {}).get("dmlc_tracker_port", spec["port"]))
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the ServerApp closes the pipe or kills this process
    os._exit(0)  # XGBoost's server threads would otherwise keep the process alive


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
