"""Fast unit tests of the deployment pieces: no SuperLink or SuperNode process is started.

Covers the SuperNode output reader and its diagnosis (sitelog), the Fleet gateway driven
in-process against a small real HTTP upstream, the registered-sites reader and Flower's
``node`` table it depends on, MonitoredGrid's registry binding and absent/rejoined sites,
and the constructor checks of the coordinator service and of ``site join``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER, FLEET_HTTP_SIGNATURE_HEADER
from flwr.supercore.error.base import FlowerError
from flwr.supercore.exit.exit_code import EXIT_CODE_HELP, ExitCode
from flwr.supercore.utils import uint64_to_int64

from flcore import keys
from flcore.deploy import gateway
from flcore.deploy.certs import init_certs
from flcore.deploy.coordinator import Coordinator, CoordinatorInfo, CoordinatorOptions
from flcore.deploy.gateway import NOT_REGISTERED, REFUSAL, STILL_ACTIVE, explain_refusal, gateway_app
from flcore.deploy.join import JoinOptions, check_join
from flcore.deploy.sitelog import REFUSED_EXIT, UNTRUSTED_EXIT, VERSION_EXIT, SupernodeLog, diagnose
from flcore.exceptions import ConfigError, DeploymentError
from flcore.federation.grid import MonitoredGrid
from flcore.federation.monitor import FederationMonitor
from flcore.federation.registry import registered_sites

SUPERLINK = "coordinator.example:9092"

# --------------------------------------------------------------------------------------
# Flower's output, as flower-supernode prints it
# --------------------------------------------------------------------------------------


def exit_report(code: int, message: str) -> list[str]:
    """The lines ``flwr_exit(code, message)`` logs (``flwr/supercore/exit/exit.py``), console format."""
    text = f"Exit Code: {code}\n{message}"
    if help_text := EXIT_CODE_HELP.get(code, ""):
        text += f"\n{help_text}"
    text += f"\n\nFor more information, visit: <https://flower.ai/docs/framework/1.41/en/ref-exit-codes/{code}.html>"
    lines = text.split("\n")
    return [f"ERROR :      {lines[0]}", *lines[1:]]


STARTUP = [
    "INFO :      Starting Flower SuperNode",
    "INFO :      Connection successful after 0.02 seconds and 1 tries.",
]


def activation_refused(extra: str | None) -> list[str]:
    """A SuperNode whose activate-node call was refused with Flower's 2004 error (and the gateway's extra)."""
    message = "Failed to initialize the connection to the SuperLink.\n[code: 2004] Failed to activate SuperNode."
    if extra is not None:
        message += f"\n{extra}"
    return STARTUP + exit_report(ExitCode.SUPERNODE_CONNECTION_ERROR, message)


# --------------------------------------------------------------------------------------
# 1. sitelog: diagnose()
# --------------------------------------------------------------------------------------


def test_diagnose_unregistered_key_from_the_gateways_extra() -> None:
    extra = NOT_REGISTERED + ": send it the site's public key (sites/<name>.pub) to register."
    cause = diagnose(activation_refused(extra), SUPERLINK, Path("ca.crt"), 1)
    assert cause.key == "unregistered"
    assert cause.retry is False
    assert cause.exit_code == REFUSED_EXIT
    assert SUPERLINK in cause.what


def test_diagnose_still_active_session_from_the_gateways_extra() -> None:
    extra = f"{STILL_ACTIVE} for about 42 s more (it expires when heartbeats stop)."
    cause = diagnose(activation_refused(extra), SUPERLINK, Path("ca.crt"), 1)
    assert cause.key == "session-active"
    assert cause.retry is True


def test_diagnose_ambiguous_refusal_without_the_gateway() -> None:
    cause = diagnose(activation_refused(None), SUPERLINK, Path("ca.crt"), 1)
    assert cause.key == "refused"
    assert cause.retry is True


def test_diagnose_untrusted_certificate() -> None:
    message = (
        "Failed to initialize the connection to the SuperLink.\n"
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate "
        "(_ssl.c:1006)"
    )
    tail = ["INFO :      Starting Flower SuperNode", *exit_report(ExitCode.SUPERNODE_CONNECTION_ERROR, message)]
    cause = diagnose(tail, SUPERLINK, Path("/pki/ca.crt"), 1)
    assert cause.key == "untrusted"
    assert cause.retry is False
    assert cause.exit_code == UNTRUSTED_EXIT
    assert "/pki/ca.crt" in cause.what


def test_diagnose_incompatible_version() -> None:
    tail = STARTUP + exit_report(
        ExitCode.RUNTIME_VERSION_INCOMPATIBLE, "The SuperLink requires Flower 1.42 or later (this is 1.41.0)."
    )
    cause = diagnose(tail, SUPERLINK, None, 1)
    assert cause.key == "version"
    assert cause.retry is False
    assert cause.exit_code == VERSION_EXIT


def test_diagnose_bad_key_file() -> None:
    tail = exit_report(ExitCode.SUPERNODE_NODE_AUTH_KEY_INVALID, "Unable to load the private key file sites/a.key.")
    cause = diagnose(tail, SUPERLINK, None, 1)
    assert cause.key == "bad-key"
    assert cause.retry is False
    assert cause.exit_code == 2


def test_diagnose_plain_unreachable() -> None:
    tail = [
        "WARNING :   Connection attempt failed, retrying in 1.74 seconds",
        *exit_report(
            ExitCode.SUPERNODE_CONNECTION_ERROR,
            "Failed to initialize the connection to the SuperLink.\n[Errno 111] Connection refused",
        ),
    ]
    cause = diagnose(tail, SUPERLINK, None, 1)
    assert cause.key == "unreachable"
    assert cause.retry is True
    assert cause.exit_code == 1


def test_diagnose_a_session_that_ended_without_a_report_is_lost() -> None:
    tail = [*STARTUP, "INFO :      SuperNode ID: 1234", "INFO :      [RUN 77, ROUND 3]"]
    cause = diagnose(tail, SUPERLINK, None, -9)
    assert cause.key == "lost"
    assert cause.retry is True
    assert cause.exit_code == 1
    assert "-9" in cause.what


# --------------------------------------------------------------------------------------
# 1. sitelog: SupernodeLog
# --------------------------------------------------------------------------------------

TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/venv/lib/python3.11/site-packages/httpx/_transports/default.py", line 101, in map_httpcore_exceptions',
    "    yield",
    '  File "/venv/lib/python3.11/site-packages/httpx/_client.py", line 1014, in _send_single_request',
    "    response = transport.handle_request(request)",
    "httpx.ConnectError: [Errno 111] Connection refused",
]


def _log(tmp_path: Path) -> tuple[SupernodeLog, list[str]]:
    echoed: list[str] = []
    return SupernodeLog(tmp_path / "site" / "supernode.log", echoed.append, SUPERLINK), echoed


def test_a_traceback_is_replaced_by_one_line_naming_the_log_file(tmp_path: Path) -> None:
    log, echoed = _log(tmp_path)
    for line in ["INFO :      before", *TRACEBACK, "INFO :      after"]:
        log.line(line)
    assert echoed[0] == "INFO :      before"
    assert echoed[-1] == "INFO :      after"
    assert len(echoed) == 3
    assert str(log.path) in echoed[1] and "httpx.ConnectError" in echoed[1]
    assert not any(line.startswith(("Traceback", "  File")) for line in echoed)
    assert list(log.tail)[-1] == "INFO :      after" and len(log.tail) == len(TRACEBACK) + 2  # the tail keeps all


def test_a_chained_traceback_is_one_line_too(tmp_path: Path) -> None:
    log, echoed = _log(tmp_path)
    chained = [
        "Traceback (most recent call last):",
        '  File "/venv/lib/python3.11/site-packages/httpcore/_sync/connection.py", line 124, in _connect',
        "    stream = self._network_backend.connect_tcp(**kwargs)",
        "httpcore.ConnectError: [Errno 111] Connection refused",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        *TRACEBACK,
    ]
    for line in [*chained, "INFO :      after"]:
        log.line(line)
    assert len(echoed) == 2 and echoed[1] == "INFO :      after"
    assert "httpx.ConnectError" in echoed[0] and "httpcore" not in echoed[0]  # the last exception names it


def test_unreachable_is_said_once_then_connected(tmp_path: Path) -> None:
    log, echoed = _log(tmp_path)
    for delay in ("1.02", "2.31", "4.87"):
        log.line(f"WARNING :   Connection attempt failed, retrying in {delay} seconds")
    assert len(echoed) == 1 and "does not answer" in echoed[0] and SUPERLINK in echoed[0]
    assert not log.connected
    log.line("INFO :      Connection successful after 8.20 seconds and 4 tries.")
    assert log.connected
    assert echoed[1] == f"flsuite: connected to the coordinator at {SUPERLINK}"
    assert echoed[2] == "INFO :      Connection successful after 8.20 seconds and 4 tries."
    log.line("INFO :      SuperNode ID: 99")  # already connected: not announced again
    assert echoed[3:] == ["INFO :      SuperNode ID: 99"]
    # A later outage is announced again, and so is the connection after it.
    log.line("WARNING :   Connection attempt failed, retrying in 1.00 seconds")
    log.line("WARNING :   Connection attempt failed, retrying in 2.00 seconds")
    assert len(echoed) == 5 and "does not answer" in echoed[4]
    log.line("INFO :      Connection successful after 3.00 seconds and 3 tries.")
    assert echoed[5] == f"flsuite: connected to the coordinator at {SUPERLINK}"


def test_ordinary_lines_are_echoed_as_they_are(tmp_path: Path) -> None:
    log, echoed = _log(tmp_path)
    lines = ["INFO :      Starting Flower SuperNode", "INFO :      [RUN 5, ROUND 1]", "", "DEBUG :     x"]
    for line in lines:
        log.line(line)
    assert echoed == lines


def test_read_writes_every_line_to_the_file(tmp_path: Path) -> None:
    log, echoed = _log(tmp_path)
    lines = [
        "INFO :      Starting Flower SuperNode",
        "WARNING :   Connection attempt failed, retrying in 1.00 seconds",
        *TRACEBACK,
        *exit_report(ExitCode.SUPERNODE_CONNECTION_ERROR, "Failed to initialize the connection to the SuperLink."),
    ]
    log.read(io.StringIO("".join(line + "\n" for line in lines)))
    assert log.path.read_text().splitlines() == lines
    assert len(echoed) < len(lines)  # the console got less: no traceback, retries said once
    assert diagnose(list(log.tail), SUPERLINK, None, 1).key == "unreachable"


# --------------------------------------------------------------------------------------
# 2. gateway
# --------------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    """A tiny HTTP server on 127.0.0.1 that records every request and answers ``status``/``body``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.body = b"upstream-reply"
        self.content_type = "application/protobuf"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.received.append(Received(self.command, self.path, headers, body))
                self.send_response(outer.status)
                self.send_header("content-type", outer.content_type)
                self.send_header("content-length", str(len(outer.body)))
                self.send_header("x-upstream", "yes")
                self.end_headers()
                self.wfile.write(outer.body)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    try:
        yield server
    finally:
        server.close()


Request = tuple[str, str, bytes, dict[str, str]]


def calls(app: Any, *requests: Request) -> list[httpx.Response]:
    """Send ``requests`` to the ASGI ``app`` in turn, on one event loop (as uvicorn serves it)."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return [await client.request(m, p, content=b, headers=h) for m, p, b, h in requests]

    return asyncio.run(go())


def call(app: Any, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    return calls(app, (method, path, body, headers or {}))[0]


FLWR_HEADERS = {
    FLEET_HTTP_PUBLIC_KEY_HEADER: base64.b64encode(b"site-a-public-key").decode(),
    FLEET_HTTP_SIGNATURE_HEADER: base64.b64encode(b"\x01\x02signature").decode(),
    "flwr-timestamp": "2026-01-01T00:00:00+00:00",
    "content-type": "application/protobuf",
}


def test_the_gateway_reads_flowers_public_key_header() -> None:
    assert gateway.PUBLIC_KEY_HEADER == FLEET_HTTP_PUBLIC_KEY_HEADER


def test_fleet_post_is_forwarded_unchanged(upstream: Upstream) -> None:
    upstream.status, upstream.body = 201, b"\x08\x2a\x00reply"
    body = b"\x08\x01\x12\x05hello\x00\xff"
    reply = call(gateway_app(upstream.address, None), "POST", "/v1/fleet/pull-messages", body, FLWR_HEADERS)
    assert reply.status_code == 201
    assert reply.content == b"\x08\x2a\x00reply"
    assert reply.headers["x-upstream"] == "yes"
    assert len(upstream.received) == 1
    got = upstream.received[0]
    assert (got.method, got.path, got.body) == ("POST", "/v1/fleet/pull-messages", body)
    for name, value in FLWR_HEADERS.items():
        assert got.headers[name] == value


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/fleet/x"),
        ("POST", "/v1/control/list-runs"),
        ("POST", "/v1/runtime/pull-messages"),
        ("GET", "/"),
        ("POST", "/"),
        ("POST", "/v1/fleet/%2e%2e/control/list-runs"),  # reaches the app as /v1/fleet/../control/list-runs
        ("PUT", "/v1/fleet/push-messages"),
    ],
)
def test_everything_but_fleet_posts_is_refused(upstream: Upstream, method: str, path: str) -> None:
    reply = call(gateway_app(upstream.address, None), method, path, b"x", FLWR_HEADERS)
    assert reply.status_code == 403
    assert reply.text == REFUSAL
    assert upstream.received == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_upstream_down_is_503() -> None:
    reply = call(gateway_app(f"127.0.0.1:{_free_port()}", None), "POST", "/v1/fleet/activate-node", b"x")
    assert reply.status_code == 503


def make_node_table(path: Path, rows: list[tuple[int, str, float | None, bytes | None, str | None]]) -> Path:
    """A SQLite file with a ``node`` table like Flower's (node_id, status, online_until, public_key, name)."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE node (node_id INTEGER UNIQUE, status TEXT, online_until REAL, public_key BLOB UNIQUE, "
            "name TEXT)"
        )
        db.executemany("INSERT INTO node VALUES (?, ?, ?, ?, ?)", rows)
    db.close()
    return path


REFUSED = json.dumps({"code": 2004, "detail": "Failed to activate SuperNode."}).encode()
KEY_A, KEY_B, KEY_C = b"key-of-site-a", b"key-of-site-b", b"key-of-site-c"


@pytest.fixture
def node_db(tmp_path: Path) -> Path:
    return make_node_table(
        tmp_path / "state.db",
        [
            (uint64_to_int64(2**64 - 7), "online", time.time() + 40.0, KEY_A, "a"),
            (12, "offline", time.time() - 5.0, KEY_B, "b"),
            (13, "unregistered", None, KEY_C, "c"),
        ],
    )


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_explain_unknown_key(node_db: Path) -> None:
    out = json.loads(explain_refusal(REFUSED, b64(b"never-registered"), node_db))
    assert out["code"] == 2004 and out["detail"] == "Failed to activate SuperNode."
    assert out["extra"].startswith(NOT_REGISTERED)


def test_explain_unregistered_key_counts_as_unknown(node_db: Path) -> None:
    out = json.loads(explain_refusal(REFUSED, b64(KEY_C), node_db))
    assert out["extra"].startswith(NOT_REGISTERED)


def test_explain_still_active(node_db: Path) -> None:
    out = json.loads(explain_refusal(REFUSED, b64(KEY_A), node_db))
    assert out["extra"].startswith(STILL_ACTIVE)
    assert out["code"] == 2004


def test_explain_offline_leaves_the_body_alone(node_db: Path) -> None:
    assert explain_refusal(REFUSED, b64(KEY_B), node_db) == REFUSED


def test_explain_leaves_non_json_alone(node_db: Path) -> None:
    html = b"<html>bad gateway</html>"
    assert explain_refusal(html, b64(b"never-registered"), node_db) == html
    assert explain_refusal(b"[1, 2]", b64(b"never-registered"), node_db) == b"[1, 2]"


def test_explain_leaves_the_body_alone_without_a_database(tmp_path: Path) -> None:
    assert explain_refusal(REFUSED, b64(b"never-registered"), tmp_path / "missing.db") == REFUSED


def test_a_refused_activation_through_the_gateway_is_diagnosed(upstream: Upstream, node_db: Path) -> None:
    """The whole path: Flower's refusal, the gateway's extra, the SuperNode's parsing, the site's diagnosis."""
    upstream.status, upstream.body, upstream.content_type = 400, REFUSED, "application/json"
    app = gateway_app(upstream.address, None, database=node_db)
    headers = {**FLWR_HEADERS, FLEET_HTTP_PUBLIC_KEY_HEADER: b64(b"never-registered")}
    reply, other = calls(
        app, ("POST", gateway.ACTIVATE, b"\x08\x01", headers), ("POST", "/v1/fleet/pull-messages", b"", headers)
    )
    assert reply.status_code == 400
    error = FlowerError.from_json(reply.text)  # as flwr/supernode/fleet_http_connection.py reads it
    assert error is not None and error.code == 2004 and error.public_details is not None
    assert error.public_details.startswith(NOT_REGISTERED)
    cause = diagnose(activation_refused(error.public_details), SUPERLINK, None, 1)
    assert cause.key == "unregistered"
    # Another Fleet call's error is passed on as it came.
    assert other.status_code == 400 and other.content == REFUSED


# --------------------------------------------------------------------------------------
# 3. registry
# --------------------------------------------------------------------------------------


def test_registered_sites_reads_unsigned_ids_and_skips_unregistered_and_nameless(tmp_path: Path) -> None:
    big = 2**64 - 7  # stored by Flower as a negative sint64
    db = make_node_table(
        tmp_path / "state.db",
        [
            (uint64_to_int64(big), "online", None, KEY_A, "a"),
            (12, "registered", None, KEY_B, "b"),
            (13, "unregistered", None, KEY_C, "c"),
            (14, "offline", None, b"nameless", None),
            (15, "offline", None, b"empty", ""),
        ],
    )
    assert uint64_to_int64(big) < 0
    assert registered_sites(db) == {big: "a", 12: "b"}


def test_registered_sites_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "state.db"
    with pytest.raises(DeploymentError, match=str(missing)):
        registered_sites(missing)


def test_flowers_node_table_has_the_columns_the_suite_reads(tmp_path: Path) -> None:
    from flwr.supercore.state.schema.linkstate_models import Node
    from sqlalchemy import create_engine

    assert Node.__tablename__ == "node"
    columns = set(Node.__table__.columns.keys())
    assert {"node_id", "name", "status", "online_until", "public_key"} <= columns
    # And the suite's readers work on a table built by Flower's own model.
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    Node.metadata.create_all(engine, tables=[Node.__table__])
    engine.dispose()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(
            "INSERT INTO node (node_id, status, online_until, public_key, name) VALUES (?, ?, ?, ?, ?)",
            (uint64_to_int64(2**63 + 1), "online", time.time() + 30, KEY_A, "a"),
        )
    db.close()
    assert registered_sites(tmp_path / "state.db") == {2**63 + 1: "a"}
    out = json.loads(explain_refusal(REFUSED, b64(KEY_A), tmp_path / "state.db"))
    assert out["extra"].startswith(STILL_ACTIVE)


# --------------------------------------------------------------------------------------
# 4. MonitoredGrid
# --------------------------------------------------------------------------------------


class FakeGrid:
    """Nodes that answer with the site name they give themselves; ``connected`` are those online."""

    def __init__(self, claims: dict[int, str]) -> None:
        self.claims = claims
        self.connected: list[int] = list(claims)

    def get_node_ids(self) -> list[int]:
        return list(self.connected)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        raise NotImplementedError  # answers send_and_receive only, as the in-process engine's grid does

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        out = []
        for m in messages:
            node = m.metadata.dst_node_id
            if node not in self.connected:
                continue
            content = RecordDict(
                {
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10}),
                    keys.SITE: ConfigRecord({keys.SITE_NAME: self.claims[node]}),
                }
            )
            out.append(Message(content, reply_to=m))
        return out


def _send(grid: MonitoredGrid, kind: str, server_round: int) -> list[Message]:
    content = RecordDict({keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: server_round})})
    messages = [Message(content, dst_node_id=n, message_type=kind) for n in grid.get_node_ids()]
    return list(grid.send_and_receive(messages))


@pytest.mark.usefixtures("flower_task")
def test_bind_registry_renames_a_misnamed_reply() -> None:
    inner = FakeGrid({11: "alpha", 22: "impostor"})
    grid = MonitoredGrid(inner, FederationMonitor())  # type: ignore[arg-type]
    grid.bind_registry({11: "alpha", 22: "beta"})
    replies = _send(grid, "train", 1)
    names = {r.metadata.src_node_id: r.content[keys.SITE][keys.SITE_NAME] for r in replies}  # type: ignore[index]
    assert names == {11: "alpha", 22: "beta"}
    assert grid.misnamed == {"beta": "impostor"}
    assert grid.site_name(22) == "beta"


@pytest.mark.usefixtures("flower_task")
def test_absent_and_rejoined_sites_are_recorded() -> None:
    inner = FakeGrid({33: "gamma", 11: "alpha", 22: "beta"})
    monitor = FederationMonitor()
    grid = MonitoredGrid(inner, monitor)  # type: ignore[arg-type]
    grid.bind_registry({11: "alpha", 22: "beta", 33: "gamma"})
    assert list(grid.get_node_ids()) == [11, 22, 33]  # ordered by registered name, not by the inner grid

    inner.connected = [11, 22]  # gamma is not connected in round 1
    assert len(_send(grid, "train", 1)) == 2
    _send(grid, "evaluate", 1)
    first = monitor.rounds[0].to_json()
    assert first["round"] == 1
    assert first["sites_absent"] == ["gamma"]
    assert first["sites_rejoined"] == []
    assert first["sites_sampled"] == 2 and first["sites_replied"] == 2

    inner.connected = [11, 22, 33]  # back in round 2
    assert len(_send(grid, "train", 2)) == 3
    second = monitor.rounds[1].to_json()
    assert second["round"] == 2
    assert second["sites_absent"] == []
    assert second["sites_rejoined"] == ["gamma"]


# --------------------------------------------------------------------------------------
# 5. coordinator: constructor checks only
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki") / "certs"
    init_certs(out, ["a", "b"])
    return out


def test_coordinator_accepts_a_plain_bundle(tmp_path: Path, certs: Path) -> None:
    coordinator = Coordinator(CoordinatorOptions(state=tmp_path / "state", certs=certs), say=lambda s: None)
    assert sorted(coordinator.keys) == ["a", "b"]
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


def test_coordinator_insecure_on_loopback_is_accepted(tmp_path: Path) -> None:
    Coordinator(CoordinatorOptions(state=tmp_path / "state", insecure=True), say=lambda s: None)


def test_coordinator_refuses_insecure_on_a_public_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        Coordinator(CoordinatorOptions(state=tmp_path / "state", host="192.0.2.10", insecure=True))


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_coordinator_refuses_insecure_on_all_addresses(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        Coordinator(CoordinatorOptions(state=tmp_path / "state", host=host, insecure=True))


def test_coordinator_refuses_control_on_the_fleet_address(tmp_path: Path, certs: Path) -> None:
    opts = CoordinatorOptions(state=tmp_path / "state", certs=certs, host="127.0.0.1", port=9093)
    with pytest.raises(ConfigError, match="overlap"):
        Coordinator(opts)
    opts = CoordinatorOptions(state=tmp_path / "state", certs=certs, host="0.0.0.0", port=9093)
    with pytest.raises(ConfigError, match="overlap"):
        Coordinator(opts)


def test_coordinator_refuses_an_unknown_site(tmp_path: Path, certs: Path) -> None:
    with pytest.raises(ConfigError, match="zed") as err:
        Coordinator(CoordinatorOptions(state=tmp_path / "state", certs=certs, sites=["a", "zed"]))
    assert "Known sites: a, b" in str(err.value)
    chosen = Coordinator(CoordinatorOptions(state=tmp_path / "state", certs=certs, sites=["b"]))
    assert list(chosen.keys) == ["b"]


def test_coordinator_needs_certs_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--certs"):
        Coordinator(CoordinatorOptions(state=tmp_path / "state"))


def test_coordinator_info_without_its_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "coordinator.json")):
        CoordinatorInfo.read(tmp_path)


def test_coordinator_info_reads_back(tmp_path: Path) -> None:
    info = {
        "state": str(tmp_path),
        "fleet": "0.0.0.0:9092",
        "control": "127.0.0.1:9093",
        "ca": None,
        "database": str(tmp_path / "state.db"),
        "pid": 42,
    }
    (tmp_path / "coordinator.json").write_text(json.dumps(info))
    assert CoordinatorInfo.read(tmp_path) == CoordinatorInfo(**info)  # type: ignore[arg-type]
    del info["pid"]
    (tmp_path / "coordinator.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="pid"):
        CoordinatorInfo.read(tmp_path)


# --------------------------------------------------------------------------------------
# 6. join
# --------------------------------------------------------------------------------------


def test_join_refuses_insecure_with_a_key_before_reading_data(tmp_path: Path) -> None:
    opts = JoinOptions(
        superlink="127.0.0.1:9092",
        domain="finance",
        data=tmp_path / "no-such-data",  # never read: the check refuses first
        key=tmp_path / "no-such.key",
        ca=None,
        insecure=True,
        clientapp="warm",
    )
    said: list[str] = []
    with pytest.raises(ConfigError, match="--insecure with --key"):
        check_join(opts, said.append)
    assert said == []


def test_a_traceback_at_the_end_of_the_output_is_still_summarised(tmp_path: Path) -> None:
    log, echoed = _log(tmp_path)
    log.read(io.StringIO("\n".join(["INFO :      before", *TRACEBACK]) + "\n"))
    assert echoed[0] == "INFO :      before"
    assert len(echoed) == 2 and "httpx.ConnectError" in echoed[1] and str(log.path) in echoed[1]
