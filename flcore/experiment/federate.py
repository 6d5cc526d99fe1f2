"""The federated arm: one federation of prepared sites on a chosen engine, its final model scored per site."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flcore.config import RunConfig
from flcore.data.site import SiteSplit
from flcore.exceptions import FlsuiteError
from flcore.experiment.histcost import collective_record
from flcore.experiment.prepare import PreparedData
from flcore.experiment.scoring import compression, curve_json, participation, score_federated
from flcore.federation.engines import engine_for
from flcore.federation.mods.attack import describe as describe_attack
from flcore.federation.monitor import RoundRecord
from flcore.federation.plan import FederationOutcome
from flcore.learning.task import Task
from flcore.scenario import Scenario


def federate(
    scenario: Scenario,
    cfg: RunConfig,
    params: Any,
    data: PreparedData | list[SiteSplit],
    workdir: Path | None = None,
    *,
    engine: str = "simulation",
    on_round: Callable[[RoundRecord], None] | None = None,
    run_id: str | None = None,
    audit: Any = None,
    checkpoint: Path | None = None,
    resume: Any = None,
    meta: dict[str, Any] | None = None,
    task: Task | None = None,
) -> tuple[FederationOutcome, dict[str, Any]]:
    """Run one federation of the prepared sites and score its final global model.

    Parameters
    ----------
    data : PreparedData or list of SiteSplit
        The sites; with :class:`PreparedData`, each site's governance comes with it
        (with bare splits, the scenario's policy and no ledger).
    workdir : Path, optional
        Where the splits are written for the clients (default: a temporary folder,
        removed afterwards).
    engine : str
        ``"simulation"`` (Flower's simulation engine, on Ray) or ``"inprocess"``
        (the same apps on an in-process grid): see
        :func:`flcore.federation.engines.engine_for`.
    on_round, run_id, audit, checkpoint, resume, meta
        Passed to the engine (:func:`flcore.federation.engines.run_federated_simulation`).
    task : Task, optional
        The scenario's task for ``params``, when the caller has it already.

    Returns
    -------
    outcome : FederationOutcome
        What the federation returned (final model, round records, privacy, attackers).
    arm : dict
        The federated arm of results.json: the model's scores on every site's test
        split and their union, its curve, wall time (of the federation, earlier
        sessions of a resumed run included), round history, bytes, participation,
        compression, privacy, rejected updates per site and the simulated attack.

    Raises
    ------
    ConfigError
        For an unknown engine, before any work.
    """
    run = engine_for(engine)
    splits, governance = (data.splits, data.governance) if isinstance(data, PreparedData) else (data, None)
    own_workdir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="flsuite-sim-"))
    t0 = time.perf_counter()
    try:
        outcome = run(
            scenario.name,
            cfg,
            params,
            splits,
            workdir,
            on_round=on_round,
            governance=governance,
            run_id=run_id,
            audit=audit,
            checkpoint=checkpoint,
            resume=resume,
            meta=meta,
        )
        wall_time = time.perf_counter() - t0 + (resume.wall_time_s if resume is not None else 0.0)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    monitor = outcome.monitor
    if monitor is None:
        raise FlsuiteError("The federation returned no round records (a bug in flsuite, please report it).")
    task = task or scenario.make_task(params)
    primary = task.primary_metric
    arm = score_federated(task, splits, outcome, cfg.seed)
    arm["curve"] = curve_json(primary, [r.evaluate.get(primary) for r in monitor.rounds])
    arm.update(
        wall_time_s=wall_time,
        history=[r.to_json() for r in monitor.rounds],
        bytes_sent=monitor.bytes_sent,
        bytes_received=monitor.bytes_received,
        participation=participation(monitor.rounds, [s.name for s in splits], cfg.local_epochs),
        compression=compression(monitor.rounds, cfg),
        privacy=outcome.privacy,
    )
    if cfg.strategy == "fedxgb-hist":
        arm["collective"] = collective_record(monitor.rounds, cfg, params, deployed=False)
    arm["rejected_updates"] = monitor.rejected_per_site()
    if cfg.attack != "none":
        arm["attack"] = describe_attack(cfg, outcome.attackers)
    return outcome, arm
