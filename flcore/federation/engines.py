"""The engines that run a federation of prepared splits: Flower's Ray simulation, or an in-process grid."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from flcore import keys
from flcore import scenario as registry
from flcore.data.site import SiteSplit
from flcore.data.splitfiles import save_split
from flcore.exceptions import ConfigError
from flcore.federation.clientapp import make_client_app
from flcore.federation.collective import COLLECTIVE
from flcore.federation.monitor import RoundRecord
from flcore.federation.plan import FederationOutcome, FederationPlan
from flcore.federation.serverapp import make_server_app, run_federation
from flcore.federation.sitedata import prepared_governance, prepared_site_loader
from flcore.governance.siteguard import SiteGovernance, split_facts

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def quiet_environment() -> None:
    """Telemetry and update checks off; Ray and Flower logs down to errors."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="flwr")


def run_federated_simulation(
    scenario: str,
    cfg: Any,
    params: Any,
    splits: list[SiteSplit],
    workdir: Path,
    on_round: Callable[[RoundRecord], None] | None = None,
    governance: list[SiteGovernance] | None = None,
    run_id: str | None = None,
    audit: Any = None,
    checkpoint: Path | None = None,
    resume: Any = None,
    meta: dict[str, Any] | None = None,
) -> FederationOutcome:
    """Train the federated arm with one virtual SuperNode per site.

    Each site's split is written to ``workdir`` as ``.npz``; virtual node
    ``partition-id = i`` reads split ``i``. Clients get ``cfg.num_cpus_per_client``
    CPUs from Ray (and as many torch threads), so on a 2-core machine two sites
    train at once. ``governance[i]`` is site ``i``'s policy and ledger, which its
    ClientApp enforces by itself (default: the scenario's policy, no ledger);
    ``audit`` (an :class:`flcore.governance.audit.AuditTrail`) receives the sites' gate
    decisions and every round. The model, strategy state and history are
    written to ``checkpoint`` after every round; ``resume`` (a
    :class:`flcore.federation.checkpoint.Checkpoint`) continues a run after its last
    completed round.
    """
    quiet_environment()
    from flwr.simulation import run_simulation

    paths, governance, plan = prepare_federation(
        scenario,
        cfg,
        params,
        splits,
        workdir,
        governance,
        on_round=on_round,
        run_id=run_id,
        audit=audit,
        checkpoint=checkpoint,
        resume=resume,
        meta=meta,
    )
    outcome = FederationOutcome()
    cpus = max(1, os.cpu_count() or 1)
    per_client = cfg.num_cpus_per_client
    if cfg.strategy == "fedxgb-hist":  # every site waits in the session for the others: all must run at once
        per_client = min(per_client, cpus / len(splits))
    backend_config = {
        "client_resources": {"num_cpus": per_client, "num_gpus": 0.0},
        "init_args": {"logging_level": "ERROR", "log_to_driver": False, "num_cpus": cpus},
    }
    run_simulation(
        server_app=make_server_app(plan, outcome),
        client_app=site_client_app(paths, governance, cfg, torch_threads=max(1, int(cfg.num_cpus_per_client))),
        num_supernodes=len(splits),
        backend_config=backend_config,  # type: ignore[arg-type]
    )
    if outcome.monitor is None:
        raise RuntimeError("the federated simulation ended without a result; see the log above")
    return outcome


def save_splits(splits: list[SiteSplit], workdir: Path) -> list[str]:
    """Write each prepared split as ``workdir/site-<i>.npz`` (virtual node ``i`` reads it); their paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, split in enumerate(splits):
        path = workdir / f"site-{i:04d}.npz"
        save_split(split, path)
        paths.append(str(path))
    return paths


def prepare_federation(
    scenario: str,
    cfg: Any,
    params: Any,
    splits: list[SiteSplit],
    workdir: Path,
    governance: list[SiteGovernance] | None = None,
    *,
    run_id: str | None = None,
    meta: dict[str, Any] | None = None,
    **plan_fields: Any,
) -> tuple[list[str], list[SiteGovernance], FederationPlan]:
    """What a federation of these splits needs, whatever grid runs it.

    The splits' files (:func:`save_splits`), each site's governance (default: the
    scenario's policy, no ledger) and the plan for the ServerApp (``plan_fields``
    are :class:`~flcore.federation.plan.FederationPlan` fields).
    """
    paths = save_splits(splits, workdir)
    if governance is None:
        policy = registry.get(scenario).policy
        governance = [SiteGovernance(s.name, policy, None, split_facts(s)) for s in splits]
    plan = FederationPlan(scenario, cfg, params, num_sites=len(splits), meta=dict(meta or {}), **plan_fields)
    if run_id:
        plan.run_id = run_id
    return paths, governance, plan


# --------------------------------------------------------------------------------------
# The in-process engine
# --------------------------------------------------------------------------------------


class LocalGrid(Grid):
    """An in-process Flower Grid that hands messages straight to a ClientApp (no Ray, no network).

    ``num_nodes`` virtual SuperNodes (node ids 101, 102, ...), node ``i`` with
    ``partition-id`` ``i``. Nodes can be taken down (``down``: no longer listed) or
    silenced (``silent``: listed, never answer) to play dropouts and timeouts, as a
    SuperLink sees them.
    """

    def __init__(self, client_app: Any, num_nodes: int) -> None:
        self.app = client_app
        self.contexts = {
            101 + i: Context(
                run_id=1, node_id=101 + i, node_config={"partition-id": i}, state=RecordDict(), run_config={}
            )
            for i in range(num_nodes)
        }
        self.down: set[int] = set()  # disconnected: not listed, never answer
        self.silent: set[int] = set()  # still listed as connected, but never answer (a timeout)
        self.sent: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.down]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.sent.extend(messages)
        live = [m for m in messages if m.metadata.dst_node_id not in self.down | self.silent]
        if not any(COLLECTIVE in m.content.config_records.get(keys.CONFIG, {}) for m in live):
            return [self._deliver(m) for m in live]
        # Sites that train together (fedxgb-hist) each wait in the session for the others: all at once.
        with ThreadPoolExecutor(max_workers=len(live) or 1, thread_name_prefix="flsuite-site") as pool:
            return list(pool.map(self._deliver, live))

    def _deliver(self, msg: Message) -> Message:
        dst = msg.metadata.dst_node_id
        # Each node gets its own copy, as after a trip through the SuperLink.
        incoming = Message(copy.deepcopy(msg.content), dst_node_id=dst, message_type=msg.metadata.message_type)
        incoming.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        incoming.metadata.__dict__["_src_node_id"] = 0
        reply = self.app(incoming, self.contexts[dst])
        reply.metadata.__dict__["_src_node_id"] = dst
        return reply

    # -- unused by the suite's ServerApp -------------------------------------------------
    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def set_run(self, run: Any) -> None:
        pass

    @property
    def run(self) -> Run:
        return Run.create_empty(run_id=1)  # Flower's compatibility layer (SecAgg+ rounds) reads run.run_id


def site_client_app(paths: list[str], governance: list[SiteGovernance], cfg: Any, torch_threads: int) -> Any:
    """The suite's ClientApp for prepared splits, the same under every engine: node ``i`` serves ``paths[i]``.

    Dropouts (``dropout-rate``) and simulated attacks are played by the ClientApp's
    mods, so both engines play them alike.
    """
    return make_client_app(
        load_site=prepared_site_loader(paths),
        torch_threads=torch_threads,
        simulate_dropout=cfg.dropout_rate > 0,
        governance=prepared_governance(governance),
        simulate_attack=cfg.attack != "none",
    )


def federation_grid(paths: list[str], governance: list[SiteGovernance], cfg: Any) -> LocalGrid:
    """A :class:`LocalGrid` of the suite's ClientApp (:func:`site_client_app`, one torch thread per site)."""
    return LocalGrid(site_client_app(paths, governance, cfg, torch_threads=1), len(paths))


@contextlib.contextmanager
def task_identity() -> Iterator[None]:
    """Flower's task identity, which building a Message needs, set as ``run_simulation`` sets it; restored after."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = {key: getattr(TaskIdentity, key) for key in ("_task_id", "_run_id", "_node_id")}
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # node 0: the SuperLink's
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(TaskIdentity, key, value)


def in_process_simulation(
    scenario: str,
    cfg: Any,
    params: Any,
    splits: list[SiteSplit],
    workdir: Path,
    on_round: Callable[[RoundRecord], None] | None = None,
    governance: list[SiteGovernance] | None = None,
    run_id: str | None = None,
    audit: Any = None,
    checkpoint: Path | None = None,
    resume: Any = None,
    meta: dict[str, Any] | None = None,
) -> FederationOutcome:
    """:func:`run_federated_simulation` without Ray: the same apps, on an in-process :class:`LocalGrid`.

    Takes the same arguments, so the round callback, audit trail and checkpoint
    behave as under the simulation engine. The sites train one after another, each
    with one torch thread.
    """
    paths, governance, plan = prepare_federation(
        scenario,
        cfg,
        params,
        splits,
        workdir,
        governance,
        run_id=run_id,
        meta=meta,
        connect_timeout_s=5,
        on_round=on_round,
        audit=audit,
        checkpoint=checkpoint,
        resume=resume,
    )
    with task_identity():
        grid = federation_grid(paths, governance, cfg)
        return run_federation(grid, plan)


#: A federation engine: ``engine(scenario, cfg, params, splits, workdir, **options) -> FederationOutcome``.
Engine = Callable[..., FederationOutcome]

#: The engines by name, the default first.
ENGINES: dict[str, Engine] = {"simulation": run_federated_simulation, "inprocess": in_process_simulation}

#: How the progress lines name each engine.
ENGINE_LABELS = {"simulation": "Flower simulation engine", "inprocess": "in-process grid, no Ray"}


def engine_for(name: str) -> Engine:
    """The engine called ``name``.

    Both engines run the suite's own ServerApp and ClientApp; they differ only in
    the grid between them. ``"simulation"`` (the default) is Flower's simulation
    engine, one Ray worker per client; ``"inprocess"`` hands each message straight
    to the ClientApp in this process (:class:`LocalGrid`): no Ray, seconds instead
    of minutes, for tests and quick checks.

    Raises
    ------
    ConfigError
        For a name that is not in :data:`ENGINES`, naming the choices.
    """
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(
            f"Unknown federation engine '{name}'. Choose one of: {', '.join(ENGINES)} "
            "(simulation: Flower's simulation engine on Ray; inprocess: the same apps in this process, no Ray)."
        ) from None
