"""Runs the federated arm on Flower's simulation engine (Ray backend), quietly, in-process."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flcore.data.site import SiteSplit
from flcore.federation.app import (
    FederationOutcome,
    FederationPlan,
    make_client_app,
    make_server_app,
    prepared_governance,
    prepared_site_loader,
    save_split,
)
from flcore.federation.monitor import RoundRecord
from flcore.governance.siteguard import SiteGovernance

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
    backend_config = {
        "client_resources": {"num_cpus": cfg.num_cpus_per_client, "num_gpus": 0.0},
        "init_args": {"logging_level": "ERROR", "log_to_driver": False, "num_cpus": cpus},
    }
    run_simulation(
        server_app=make_server_app(plan, outcome),
        client_app=make_client_app(
            load_site=prepared_site_loader(paths),
            torch_threads=max(1, int(cfg.num_cpus_per_client)),
            simulate_dropout=cfg.dropout_rate > 0,
            governance=prepared_governance(governance),
            simulate_attack=cfg.attack != "none",
        ),
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
    are :class:`~flcore.federation.app.FederationPlan` fields).
    """
    paths = save_splits(splits, workdir)
    if governance is None:
        from flcore import scenario as registry
        from flcore.governance.siteguard import split_facts

        policy = registry.get(scenario).policy
        governance = [SiteGovernance(s.name, policy, None, split_facts(s)) for s in splits]
    plan = FederationPlan(scenario, cfg, params, num_sites=len(splits), meta=dict(meta or {}), **plan_fields)
    if run_id:
        plan.run_id = run_id
    return paths, governance, plan
