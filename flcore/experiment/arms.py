"""The evaluation harness: federated, centralised and local-only arms on the same sites, one results.json."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from flcore.config import RunConfig, to_dict
from flcore.data.site import FeatureStats, SiteData, SiteSplit
from flcore.experiment.export import export_models, label_meaning
from flcore.experiment.federate import federate
from flcore.experiment.gate import gate
from flcore.experiment.prepare import prepare_data
from flcore.experiment.progress import Progress, round_line, show_arm
from flcore.experiment.resources import PeakMemory
from flcore.experiment.results import (
    SCHEMA_VERSION,
    clean,
    environment,
    now_utc,
    preprocessing_record,
    suite_version,
    validate_results,
)
from flcore.experiment.scoring import Curve, compare, constant, federated_model, score_arm
from flcore.federation.engines import ENGINE_LABELS, engine_for
from flcore.federation.preflight import check_federation
from flcore.governance.policy import GovernancePolicy
from flcore.governance.siteguard import resolve_privacy
from flcore.learning.task import Task
from flcore.scenario import Scenario


def run_experiment(
    scenario: Scenario,
    cfg: RunConfig,
    params: Any,
    data_dir: Path | None = None,
    progress: Progress = print,
    workdir: Path | None = None,
    policy: GovernancePolicy | None = None,
    audit: Any = None,
    checkpoint: Path | None = None,
    resume: Any = None,
    engine: str = "simulation",
    models_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the three arms and return results.json content (validated against the schema).

    * **federated**: ``R`` rounds of ``E`` local epochs per site on the chosen engine.
    * **centralised**: every site's training split pooled, ``R * E`` epochs, the same
      learning-rate schedule: the reference a federation tries to match.
    * **local-only**: each site trains alone for ``R * E`` epochs on its own split,
      standardised with its own statistics (it has no one else's).

    Every arm is scored by the same function on each site's held-out test split and
    on their union. No metric is ever computed on training data.

    Parameters
    ----------
    policy : GovernancePolicy, optional
        The federation's policy (default: the domain's); each site's own
        ``policy.toml`` applies as well.
    audit : flcore.governance.audit.AuditTrail, optional
        Receives the gate's decisions, every round and the run's end.
    checkpoint : Path, optional
        Where the federated arm's checkpoint is written after every round.
    resume : flcore.federation.checkpoint.Checkpoint, optional
        Continue the federated arm of an interrupted run after its last completed
        round (same run id, so the sites' ledgers and the audit trail continue); the
        baselines run in full.
    engine : str
        The federated arm's engine: ``"simulation"`` (Flower's simulation engine, on
        Ray) or ``"inprocess"`` (the same apps in this process, no Ray).
    models_dir : Path, optional
        Where every arm's model is exported (:func:`flcore.experiment.export.export_models`),
        listed under ``models`` in the results.

    The governance gate runs after the data are read and before any training; a
    refusal raises :class:`GovernanceError` (exit code 2) after it is audited. The
    peak memory of the whole process tree (simulation workers included) is
    sampled throughout and recorded under ``resources``.

    Raises
    ------
    ConfigError
        For an unknown engine, or a federation that cannot run, before any training.
    """
    engine_for(engine)  # an unknown engine fails before the data are read
    with PeakMemory() as memory:
        results = _run_arms(
            scenario,
            cfg,
            params,
            data_dir,
            progress,
            workdir,
            policy or scenario.policy,
            audit,
            checkpoint,
            resume,
            engine,
            models_dir,
        )
    results["resources"] = memory.to_json()
    validate_results(results)
    return results


def _run_arms(
    scenario: Scenario,
    cfg: RunConfig,
    params: Any,
    data_dir: Path | None,
    progress: Progress,
    workdir: Path | None,
    policy: GovernancePolicy,
    audit: Any,
    checkpoint: Path | None,
    resume: Any,
    engine: str,
    models_dir: Path | None,
) -> dict[str, Any]:
    """Prepare and gate the sites, run the three arms in turn, and assemble results.json."""
    task = scenario.make_task(params)
    primary = task.primary_metric
    cfg = resolve_privacy(cfg, policy)
    prepared = prepare_data(scenario, cfg, data_dir, progress, params, policy)
    params = prepared.params  # a table schema found beside the data is part of the settings (and the plan)
    check_federation(cfg, len(prepared.splits))  # a federation that cannot run fails here, not in round 1
    run_id = resume.run_id if resume is not None else uuid.uuid4().hex[:16]
    gate_record = gate(scenario, cfg, params, prepared.governance, policy, audit, run_id)
    progress(f"governance gate: passed for {len(prepared.splits)} {scenario.site_noun}s, plan {gate_record['plan']}")
    if cfg.privacy != "none":
        progress(
            f"privacy: {cfg.privacy}, epsilon <= {cfg.dp_epsilon:g} at delta {cfg.dp_delta:g} per "
            + ("record" if cfg.privacy == "dp" else scenario.site_noun)
            + ("" if data_dir is not None else " (generated data: no privacy ledger is charged)")
        )
    splits = prepared.splits
    rounds = cfg.num_server_rounds
    listed = ", ".join(f"{s.name} ({len(s.train)} train / {len(s.test)} test)" for s in splits[:8])
    if len(splits) > 8:
        sizes = np.asarray([len(s.train) for s in splits])
        listed += (
            f", ... ({len(splits) - 8} more; training examples per {scenario.site_noun} "
            f"{sizes.min()}-{sizes.max()}, median {int(np.median(sizes))})"
        )
    progress(f"{len(splits)} {scenario.site_noun}s: {listed}")

    # -- federated ----------------------------------------------------------------
    progress(
        f"[1/3] federated: {cfg.strategy}, {rounds} rounds x {cfg.local_epochs} local epochs "
        f"({ENGINE_LABELS.get(engine, engine)})"
        + (f", resuming run {run_id} after round {resume.round}" if resume is not None else "")
    )
    if cfg.fraction_train < 1.0:
        progress(
            f"      note: fraction-train={cfg.fraction_train}: sites train only in rounds where they are "
            "sampled, so their epoch budget is below the baselines' R x E."
        )
    outcome, federated = federate(
        scenario,
        cfg,
        params,
        prepared,
        workdir,
        engine=engine,
        on_round=round_line(rounds, primary, progress),
        run_id=run_id,
        audit=audit,
        checkpoint=checkpoint,
        resume=resume,
        meta={"data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None},
        task=task,
    )
    if cfg.attack != "none":
        progress(
            f"      simulated attack: {cfg.attack} from {', '.join(outcome.attackers)}; "
            f"updates rejected by the server: {sum(federated['rejected_updates'].values())}"
        )
    show_arm("federated", federated, primary, progress)
    if cfg.privacy != "none" and outcome.privacy.get("epsilon") is not None:
        progress(
            f"      privacy spent: epsilon {outcome.privacy['epsilon']:.4f} at delta {cfg.dp_delta:g} "
            f"({outcome.privacy['accountant']}); baselines train without DP"
        )
    if cfg.fraction_train < 1.0 or cfg.dropout_rate > 0:
        part, eps = federated["participation"], federated["participation"]["epochs_per_site"]
        progress(
            f"      {part['replied']} of {part['sampled']} sampled {scenario.site_noun}s replied "
            f"({part['dropped']} offline); local epochs per {scenario.site_noun} {eps['min']}-{eps['max']} "
            f"(mean {eps['mean']}), against {rounds * cfg.local_epochs} for the baselines"
        )

    # -- baselines ----------------------------------------------------------------------
    baseline = task.baseline_rounds(cfg, len(splits))
    budget = f"{baseline * cfg.local_epochs} " + ("boosting rounds" if task.model_family == "xgboost" else "epochs")
    progress(f"[2/3] centralised: all training splits pooled, {budget}")
    centralised, central_model = _centralised(task, cfg, splits, baseline)
    show_arm("centralised", centralised, primary, progress)
    progress(f"[3/3] local-only: each {scenario.site_noun} alone, {budget}")
    local_only, local_models = _local_only(task, cfg, splits, baseline)
    show_arm("local-only", local_only, primary, progress)

    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite_version": suite_version(),
        "created_utc": now_utc(),
        "scenario": scenario.name,
        "domain": scenario.domain,
        "seed": cfg.seed,
        "seeds": [cfg.seed],
        "strategy": cfg.strategy,
        "rounds": rounds,
        "config": to_dict(cfg),
        "params": to_dict(params),
        "primary_metric": primary,
        "environment": environment(),
        "data": {
            "source": prepared.source,
            "sites": [_site_info(s) for s in splits],
            "left_out": prepared.left_out,
        },
        "arms": {"federated": federated, "centralised": centralised, "local_only": local_only},
        "comparison": compare(federated, centralised, local_only, primary),
        "governance": gate_record,
    }
    if prepared.schema is not None:
        results["data"]["schema"] = prepared.schema
    if prepared.preprocessing is not None:
        disclosed = [d.to_json() for d in prepared.disclosures]
        gate_record["preprocessing"] = preprocessing_record(disclosed, prepared.preprocessing.to_json())
    if models_dir is not None:
        arms = results["arms"]
        models = {"federated": federated_model(task, outcome, cfg.seed), "centralised": central_model}
        context = {
            "run_id": run_id,
            "plan": gate_record["plan"],
            "schema": prepared.schema,
            "preprocessing": prepared.preprocessing.to_json() if prepared.preprocessing is not None else None,
            "label": label_meaning(prepared.schema, task),
            "privacy": outcome.privacy,
        }
        results["models"] = export_models(
            models_dir, scenario, cfg, params, task, splits, arms, {**models, "local_only": local_models}, context
        )
        progress(f"models: {models_dir} (federated, centralised, local-only per {scenario.site_noun})")
        if audit is not None:
            digests = {a: results["models"][a]["digest"] for a in ("federated", "centralised")}
            digests.update({f"local_only/{n}": e["digest"] for n, e in results["models"]["local_only"].items()})
            audit.append("models", run=run_id, digests=digests)
    if audit is not None:
        audit.append(
            "run-end",
            run=run_id,
            model=outcome.monitor.rounds[-1].aggregate_hash if outcome.monitor and outcome.monitor.rounds else None,
            metric=primary,
            federated=federated["union"].get(primary),
            epsilon=outcome.privacy.get("epsilon"),
        )
        seq, head = audit.head()
        gate_record["audit"] = {"path": str(audit.path), "entries": seq, "head": head}
    return clean(results)


def _centralised(task: Task, cfg: RunConfig, splits: list[SiteSplit], baseline: int) -> tuple[dict[str, Any], Any]:
    """The centralised arm: one model on every site's training split pooled, ``baseline`` rounds, scored."""
    t0 = time.perf_counter()
    pooled = SiteData(
        "pooled",
        np.concatenate([s.train.x for s in splits]),
        np.concatenate([s.train.y for s in splits]),
    )
    model = task.init_model(FeatureStats.of(pooled.x, pooled.y), cfg.seed)
    curve = Curve(task, splits, cfg.num_server_rounds, baseline)
    task.fit(
        model,
        pooled,
        cfg,
        first_round=0,
        num_rounds=baseline,
        seed=cfg.seed,
        on_round=curve.after(constant(model)),
    )
    arm = score_arm(task, splits, constant(model), task.primary_metric, shared_model=True)
    arm["curve"] = curve.to_json()
    arm["wall_time_s"] = time.perf_counter() - t0
    return arm, model


def _local_only(
    task: Task, cfg: RunConfig, splits: list[SiteSplit], baseline: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The local-only arm: each site's own model on its own training split, ``baseline`` rounds, scored."""
    t0 = time.perf_counter()
    models = {}
    curve = Curve(task, splits, cfg.num_server_rounds, baseline)
    for split in splits:
        model = task.init_model(FeatureStats.of(split.train.x, split.train.y), cfg.seed)
        task.fit(
            model,
            split.train,
            cfg,
            first_round=0,
            num_rounds=baseline,
            seed=cfg.seed,
            on_round=curve.after(constant(model), only=split),
        )
        models[split.name] = model
    arm = score_arm(task, splits, models.__getitem__, task.primary_metric, shared_model=False)
    arm["curve"] = curve.to_json()
    union_x = np.concatenate([s.test.x for s in splits])
    union_y = np.concatenate([s.test.y for s in splits])
    arm["per_site_model_on_union"] = {name: task.score(union_y, task.predict(m, union_x)) for name, m in models.items()}
    arm["wall_time_s"] = time.perf_counter() - t0
    return arm, models


def _site_info(split: SiteSplit) -> dict[str, Any]:
    """A site's entry under ``data.sites`` in results.json: its split sizes, source and skipped records."""
    return {
        "name": split.name,
        "n_train": len(split.train),
        "n_test": len(split.test),
        "positives_train": int(split.train.y.sum()),
        "positives_test": int(split.test.y.sum()),
        "n_val": len(split.val) if split.val is not None else 0,
        "source": split.train.source,
        "skipped": dict(split.train.info.get("skipped", {})),  # type: ignore[call-overload]
    }
