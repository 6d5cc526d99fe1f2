"""The suite's Flower ServerApp: the statistics round, the strategy's rounds (or SecAgg+'s), and the run's end."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from flcore import keys
from flcore import scenario as scenario_registry
from flcore.config import to_dict
from flcore.data.site import FeatureStats
from flcore.exceptions import DataValidationError, FlsuiteError, GovernanceError
from flcore.federation.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_strategy,
    restore_strategy,
    write_checkpoint,
)
from flcore.federation.collective import session_opener
from flcore.federation.grid import MonitoredGrid
from flcore.federation.mods.attack import ATTACKERS, choose_attackers
from flcore.federation.mods.secagg import run_secagg_rounds
from flcore.federation.monitor import FederationMonitor, RoundRecord, arrays_digest
from flcore.federation.plan import FederationOutcome, FederationPlan, common_config, refusals_in
from flcore.federation.preflight import check_federation
from flcore.federation.preprocessing import collect_preprocessing, needs_preprocessing
from flcore.federation.registry import registered_sites
from flcore.federation.rounds import QuorumError, run_rounds, wait_for_sites
from flcore.federation.strategies import build_strategy, min_evaluate_per_round, min_sites_per_round
from flcore.governance.rules import refusal_error
from flcore.learning.privacy import CLIENT_ACCOUNTANT, SAMPLE_ACCOUNTANT


def _wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
    # Flower samples from the nodes connected at that moment: wait for all of them.
    ids = wait_for_sites(grid, n, timeout_s)
    if len(ids) < n:
        raise FlsuiteError(
            f"Only {len(ids)} of {n} sites connected within {timeout_s:.0f} s. "
            "Check that every site's SuperNode is running and can reach the SuperLink."
        )
    return ids


def collect_feature_stats(
    grid: Grid, node_ids: list[int], config: ConfigRecord, timeout: float
) -> tuple[FeatureStats, dict[int, str], dict[str, int], dict[str, Any] | None]:
    """Ask every site for its feature sums and combine them (no row leaves a site).

    Returns the pooled statistics, each node's site name, each site's number of
    training examples, and the model's input as the first site describes it (shape and
    feature names; None from sites that do not say).
    """
    content = RecordDict({keys.CONFIG: config})
    messages = [
        Message(content=content, message_type=f"{keys.QUERY_KIND}.{keys.QUERY_FEATURE_STATS}", dst_node_id=n)
        for n in node_ids
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    refusals = [r for reply in replies for r in refusals_in(reply)]
    if refusals:
        raise refusal_error(refusals)
    parts, names = [], {}
    inputs: list[dict[str, Any] | None] = []
    for reply in replies:
        if reply.has_error():
            raise FlsuiteError(f"A site failed while computing feature statistics: {reply.error.reason}")
        arrays = reply.content[keys.ARRAYS]
        metrics = reply.content[keys.METRICS]
        parts.append(
            FeatureStats(
                count=int(metrics[keys.NUM_EXAMPLES]),  # type: ignore[index,arg-type]
                total=arrays[keys.STAT_SUM].numpy(),  # type: ignore[index,union-attr]
                total_sq=arrays[keys.STAT_SUMSQ].numpy(),  # type: ignore[index,union-attr]
                positives=int(metrics[keys.NUM_POSITIVE]),  # type: ignore[index,arg-type]
            )
        )
        site = reply.content.config_records[keys.SITE]
        names[reply.metadata.src_node_id] = str(site[keys.SITE_NAME])
        inputs.append(json.loads(str(site[keys.INPUT_JSON])) if keys.INPUT_JSON in site else None)
    if len(parts) < len(node_ids):
        raise FlsuiteError(f"Only {len(parts)} of {len(node_ids)} sites returned feature statistics.")
    counts = {names[n]: p.count for n, p in zip(names, parts, strict=True)}
    described = [(name, i) for name, i in zip(names.values(), inputs, strict=True) if i is not None]
    for name, other in described[1:]:
        first_name, first = described[0]
        if (other["shape"], other["feature_names"]) != (first["shape"], first["feature_names"]):
            raise DataValidationError(
                name,
                f"its model input ({other['shape']}, {len(other['feature_names'])} named features) differs from "
                f"site '{first_name}''s ({first['shape']}, {len(first['feature_names'])} named features).",
                "Every site must export the same features (columns, image size, recording layout), in the same order.",
            )
    return FeatureStats.combine(parts), names, counts, described[0][1] if described else None


def run_federation(grid: Grid, plan: FederationPlan, context: Context | None = None) -> FederationOutcome:
    """The ServerApp's work: statistics round (each site's gate runs first), the strategy's rounds, run end.

    A site that refuses the run answers with its refusals; they are written to the
    audit trail and stop the run before round 1 (:class:`GovernanceError`).
    """
    t0 = time.perf_counter()
    cfg = plan.cfg
    random.seed(cfg.seed)  # Flower's node sampling uses the `random` module
    scenario = scenario_registry.get(plan.scenario)
    monitor = FederationMonitor(on_round=_audited(plan.on_round, plan.audit))
    mgrid = MonitoredGrid(grid, monitor)
    mgrid.pack_models = mgrid.deployed and cfg.secure_aggregation == "none" and cfg.update_compression == "none"
    if plan.registry is not None:  # a deployment with site keys: names come from the registrations
        mgrid.bind_registry(registered_sites(plan.registry))
    node_ids = sorted(_wait_for_nodes(grid, plan.num_sites, plan.connect_timeout_s))
    common = common_config(plan)
    # Settings the federation cannot run fail before any site reserves budget for the run.
    check_federation(cfg, plan.num_sites)
    try:
        if needs_preprocessing(scenario, plan.params):  # tables through a schema: their encoding comes first
            prep, summaries = collect_preprocessing(mgrid, node_ids, common, timeout=plan.connect_timeout_s)
            if prep is not None:
                plan.preprocessing = json.dumps(prep.to_json(), sort_keys=True)
                plan.disclosures = [s.to_json() for s in summaries]
                common = common_config(plan)
        stats, names, site_counts, model_input = collect_feature_stats(
            mgrid, node_ids, common, timeout=plan.connect_timeout_s
        )
    except GovernanceError as err:
        if plan.audit is not None:
            for r in err.refusals:
                plan.audit.append("refusal", run=plan.run_id, by="site", **r.to_json())
        _end_run(mgrid, node_ids, plan, monitor)  # sites that admitted the run settle it at what it spent: 0
        raise refusal_error(err.refusals, scenario.site_noun) from None
    mgrid.name_nodes(names)
    sites = sorted(names.values())
    if cfg.attack != "none":
        plan.attackers = choose_attackers(sites, cfg.attack_sites, cfg.seed)
        if plan.audit is not None:
            plan.audit.append("attack-simulation", run=plan.run_id, attack=cfg.attack, sites=plan.attackers)
    if plan.audit is not None:
        plan.audit.append("gate", run=plan.run_id, by="sites", decision="pass", sites=sites)
        if mgrid.misnamed:
            plan.audit.append(
                "site-identity", run=plan.run_id, registered_as_claimed=dict(sorted(mgrid.misnamed.items()))
            )

    task = scenario.make_task(plan.params)
    model = task.init_model(stats, cfg.seed)
    initial = task.model_arrays(model)
    if cfg.secure_aggregation == "secagg+":
        if plan.resume is not None:
            raise CheckpointError(
                "A secure-aggregation=secagg+ run cannot be resumed: Flower's SecAgg+ workflow always starts at "
                "round 1 and is not checkpointed. Start a new run."
            )
        shared = dict(common_config(plan).items())
        final = run_secagg_rounds(mgrid, context, cfg, initial, shared, monitor, max(site_counts.values()))
    else:
        final = _run_strategy(mgrid, plan, monitor, initial, sites, t0)
    privacy = _end_run(mgrid, node_ids, plan, monitor)
    return FederationOutcome(
        arrays=final,
        monitor=monitor,
        feature_stats=stats,
        sites=sites,
        wall_time_s=time.perf_counter() - t0 + (plan.resume.wall_time_s if plan.resume is not None else 0.0),
        privacy=privacy,
        attackers=list(plan.attackers),
        model_input=model_input,
        misnamed=dict(sorted(mgrid.misnamed.items())),
    )


def _run_strategy(
    grid: MonitoredGrid,
    plan: FederationPlan,
    monitor: FederationMonitor,
    initial: ArrayRecord,
    sites: list[str],
    t0: float,
) -> ArrayRecord:
    """The strategy's rounds (from the checkpoint's next round when resuming), checkpointed after each."""
    cfg = plan.cfg
    together = (
        {
            "open_session": session_opener(grid.deployed, plan.collective_tls, plan.collective_port),
            "on_disagree": monitor.record_rejection,
        }
        if cfg.strategy == "fedxgb-hist"
        else {}
    )
    strategy = build_strategy(
        cfg,
        plan.num_sites,
        on_reject=monitor.record_rejection,
        train_metrics_aggr_fn=monitor.aggregate_train,
        evaluate_metrics_aggr_fn=monitor.aggregate_evaluate,
        **together,
    )
    inner: Any = strategy
    while inner is not None and not hasattr(inner, "spent_epsilon"):  # the DP wrapper, under any other
        inner = getattr(inner, "strategy", None)
    monitor.client_privacy = inner
    first, arrays = 1, initial
    resume = plan.resume
    if resume is not None:
        resume.check_fits(plan.scenario, plan.cfg, plan.params)
        restore_strategy(strategy, resume.strategy_state)
        monitor.restore(resume.monitor)
        first, arrays = resume.round + 1, resume.array_record
        if plan.audit is not None:
            plan.audit.append(
                "resume", run=plan.run_id, after_round=resume.round, model=arrays_digest(arrays), sites=sites
            )
    earlier = resume.wall_time_s if resume is not None else 0.0

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        monitor.end_round(server_round, arrays)
        if plan.checkpoint is None:
            return
        digest = write_checkpoint(
            plan.checkpoint,
            Checkpoint(
                run_id=plan.run_id,
                scenario=plan.scenario,
                config=to_dict(cfg),
                params=to_dict(plan.params),
                round=server_round,
                arrays={k: a.numpy() for k, a in arrays.items()},  # type: ignore[union-attr]
                strategy_state=capture_strategy(strategy),
                monitor=monitor.state(),
                sites=sites,
                wall_time_s=earlier + time.perf_counter() - t0,
                extra=plan.meta,
            ),
        )
        if plan.audit is not None:
            plan.audit.append("checkpoint", run=plan.run_id, round=server_round, file=digest)

    def names(ids: Any) -> list[str]:
        return [grid.site_name(n) for n in ids]

    quorum = min_sites_per_round(cfg, plan.num_sites)
    if cfg.privacy == "client-dp":
        # Flower's client-level DP wrapper is calibrated for a fixed number of sites per round.
        quorum = max(quorum, int(plan.num_sites * cfg.fraction_train))

    try:
        return run_rounds(
            strategy,
            grid,
            arrays,
            first_round=first,
            num_rounds=cfg.num_server_rounds,
            timeout=cfg.reply_timeout,
            min_sites=quorum,
            min_evaluate=min(quorum, min_evaluate_per_round(cfg, plan.num_sites)),
            seed=cfg.seed,
            train_config=common_config(plan, **({ATTACKERS: ",".join(plan.attackers)} if plan.attackers else {})),
            evaluate_config=common_config(plan),
            after_round=after_round,
            site_names=names,
            on_retry=_retry_recorder(plan),
        )
    except QuorumError as err:
        if plan.audit is not None:
            plan.audit.append(
                "quorum-lost",
                run=plan.run_id,
                round=err.server_round,
                answered=err.answered,
                needed=err.needed,
                missing=err.missing,
                rejected=err.rejected,
            )
        done = err.server_round - 1
        hint = (
            f" Rounds 1-{done} are checkpointed in {plan.checkpoint}; once the sites are back, resume with --resume."
            if plan.checkpoint is not None and done >= 1
            else ""
        )
        raise QuorumError(
            err.server_round, err.answered, err.needed, err.missing, str(err) + hint, rejected=err.rejected
        ) from None


def _retry_recorder(plan: FederationPlan) -> Callable[[int, int, list[str]], None]:
    """Writes a retried training step to the audit trail (and the coordinator's log)."""

    def record(server_round: int, attempt: int, silent: list[str]) -> None:
        log = logging.getLogger("flcore")
        log.warning("round %d: training step failed at %s; trying again (%d)", server_round, silent, attempt + 1)
        if plan.audit is not None:
            plan.audit.append("round-retry", run=plan.run_id, round=server_round, attempt=attempt, failed=silent)

    return record


def _end_run(grid: Grid, node_ids: list[int], plan: FederationPlan, monitor: FederationMonitor) -> dict[str, Any]:
    """Tell every site the run is over, so each settles its privacy ledger; collect what each spent.

    Without privacy there is nothing to settle and no message is sent (in a fleet of
    thousands of devices, that query round costs seconds).
    """
    cfg = plan.cfg
    if cfg.privacy == "none":
        return {"mode": "none"}
    extra: dict[str, Any] = {}
    client = monitor.client_privacy
    if cfg.privacy == "client-dp" and client is not None:
        extra[keys.DP_EPSILON] = client.spent_epsilon()
    content = RecordDict({keys.CONFIG: common_config(plan, **extra)})
    connected = set(grid.get_node_ids())  # a site that dropped out is not waited for
    messages = [
        Message(content=content, message_type=f"{keys.QUERY_KIND}.{keys.QUERY_RUN_END}", dst_node_id=n)
        for n in node_ids
        if n in connected
    ]
    per_site: dict[str, float | None] = {}
    noise: dict[str, float] = {}
    for reply in grid.send_and_receive(messages, timeout=min(cfg.reply_timeout, plan.connect_timeout_s)):
        if reply.has_error() or keys.METRICS not in reply.content.metric_records:
            continue
        site = str(reply.content[keys.SITE][keys.SITE_NAME])  # type: ignore[index]
        per_site[site] = float(reply.content[keys.METRICS][keys.DP_EPSILON])  # type: ignore[index,arg-type]
        noise[site] = float(reply.content[keys.METRICS].get(keys.DP_NOISE, 0.0))  # type: ignore[union-attr,arg-type]
    out: dict[str, Any] = {
        "mode": cfg.privacy,
        "unit": "record" if cfg.privacy == "dp" else "site",
        "target_epsilon": cfg.dp_epsilon,
        "delta": cfg.dp_delta,
        "per_site_epsilon": dict(sorted(per_site.items())),
        "epsilon": max((v for v in per_site.values() if v is not None), default=None),
        "accountant": SAMPLE_ACCOUNTANT if cfg.privacy == "dp" else CLIENT_ACCOUNTANT,
        "per_round_epsilon": [r.epsilon for r in monitor.rounds],
    }
    if cfg.privacy == "dp":
        out["max_grad_norm"] = cfg.dp_max_grad_norm
        out["per_site_noise_multiplier"] = dict(sorted(noise.items()))
    elif client is not None:
        out.update(client.to_json())
        out["epsilon"] = client.spent_epsilon()
    if plan.audit is not None:
        plan.audit.append("privacy", run=plan.run_id, **out)
    return out


def _audited(on_round: Callable[[RoundRecord], None] | None, audit: Any) -> Callable[[RoundRecord], None] | None:
    """Progress callback that also writes each finished round to the audit trail."""
    if audit is None:
        return on_round

    def record(rec: RoundRecord) -> None:
        audit.append(
            "round",
            round=rec.round,
            sites=sorted(rec.per_site_train),
            samples={s: int(m.get(keys.NUM_EXAMPLES, 0)) for s, m in sorted(rec.per_site_train.items())},
            update_norms={s: m.get(keys.UPDATE_NORM) for s, m in sorted(rec.per_site_train.items())},
            epsilon=rec.epsilon,
            aggregate=rec.aggregate_hash,
            sampled=rec.sampled,
            failed=rec.failures,
            dropped=rec.dropouts,
            missing=rec.missing,
            rejected=rec.rejected,
            absent=rec.absent,
            rejoined=rec.rejoined,
        )
        if on_round is not None:
            on_round(rec)

    return record


def make_server_app(plan: FederationPlan, outcome: FederationOutcome) -> ServerApp:
    """ServerApp for in-process simulation; fills ``outcome`` when done."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        done = run_federation(grid, plan, context)
        outcome.__dict__.update(done.__dict__)

    return app
