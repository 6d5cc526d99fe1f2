"""The evaluation harness: federated vs centralised vs local-only, same model and epoch budget.

* **federated**: Flower simulation, ``R`` rounds of ``E`` local epochs per site.
* **centralised**: every site's training split pooled, ``R * E`` epochs, the same
  learning-rate schedule: the reference a federation tries to match.
* **local-only**: each site trains alone for ``R * E`` epochs on its own split,
  standardised with its own statistics (it has no one else's).

Every arm is scored by the same function on each site's held-out test split and on
their union. No metric is ever computed on training data.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from flcore.config import RunConfig, to_dict
from flcore.data.partition import repartition
from flcore.data.site import FeatureStats, SiteData, SiteSplit, list_site_dirs
from flcore.exceptions import ConfigError, DataValidationError, FlsuiteError
from flcore.experiment.resources import PeakMemory
from flcore.experiment.results import SCHEMA_VERSION, clean, environment, now_utc, suite_version, validate_results
from flcore.federation.mods.attack import describe as describe_attack
from flcore.federation.monitor import RoundRecord
from flcore.federation.preflight import check_federation
from flcore.governance.policy import (
    GovernanceError,
    GovernancePolicy,
    Refusal,
    check_min_cohort,
    check_site,
    refusal_error,
    site_facts,
)
from flcore.governance.siteguard import SiteGovernance, ledger_of, resolve_privacy, run_facts
from flcore.learning import metrics
from flcore.learning.task import Task
from flcore.scenario import Scenario

Progress = Callable[[str], None]


@dataclass
class PreparedData:
    """Sites after loading, validation, partitioning and splitting."""

    source: str
    splits: list[SiteSplit]
    left_out: list[dict[str, str]] = field(default_factory=list)
    governance: list[SiteGovernance] = field(default_factory=list)


def load_sites(
    scenario: Scenario,
    data_dir: Path,
    strict: bool = True,
    progress: Progress | None = None,
    left_out: list[dict[str, str]] | None = None,
) -> list[SiteData]:
    """Read and validate every site folder of ``data_dir`` through the scenario's adapter.

    Every site is read before any training starts, so a bad file stops the run
    before anything is written; the governance gate (:func:`gate`) then checks the
    sites. In lenient mode, scenarios that allow it (``leave_out_unusable``, fleets)
    leave out a site whose data cannot be used at all, or that is under the minimum
    cohort.
    """
    sites = []
    dropped: list[dict[str, str]] = []
    for d in list_site_dirs(data_dir, scenario.adapter):
        try:
            site = scenario.adapter.read(d, strict=strict)
            site.info["site_dir"] = str(d)  # adapters may name a file as the source; policies live in the folder
            if scenario.leave_out_unusable and not strict:
                check_min_cohort([site], scenario.policy, scenario.site_noun)
            sites.append(site)
        except (DataValidationError, GovernanceError) as err:
            if strict or not scenario.leave_out_unusable:
                raise
            dropped.append({"name": d.name, "reason": str(err)})
    for item in dropped[:5]:
        (progress or print)(f"  left out {scenario.site_noun} {item['name']}: {item['reason']}")
    if len(dropped) > 5:
        (progress or print)(f"  ... and {len(dropped) - 5} more {scenario.site_noun}(s) left out")
    if left_out is not None:
        left_out.extend(dropped)
    if len(sites) < 2:
        raise DataValidationError(
            data_dir,
            f"found {len(sites)} usable site folder; a federation needs at least 2.",
            "Add one sub-folder per site.",
        )
    _check_same_features(sites)
    return sites


def _check_same_features(sites: list[SiteData]) -> None:
    """Every site must name the same features in the same order, or models would mix them up."""
    ref = sites[0]
    for site in sites[1:]:
        a = cast(list[str] | None, ref.info.get("feature_names"))
        b = cast(list[str] | None, site.info.get("feature_names"))
        if a is not None and b is not None and a != b:
            first = next((i for i, (p, q) in enumerate(zip(a, b, strict=False)) if p != q), min(len(a), len(b)))
            raise DataValidationError(
                site.source,
                f"its feature columns differ from those of site '{ref.name}' ({ref.source}) "
                f"from column {first + 1} on ({b[first] if first < len(b) else 'missing'!r} instead of "
                f"{a[first] if first < len(a) else 'missing'!r}).",
                "Every site must export the same feature columns in the same order.",
            )


#: How the reasons adapters count skipped records read in progress messages.
_SKIP_REASONS = {
    "no_consent": "no consent",
    "invalid": "invalid values (lenient mode)",
    "not_dicom": "not DICOM (lenient mode)",
    "no_pixel_data": "no pixel data (lenient mode)",
    "missing_file": "file missing (lenient mode)",
    "undecodable": "pixel data undecodable (lenient mode)",
    "duplicate": "listed twice (lenient mode)",
    "unreadable": "file unreadable (lenient mode)",
    "no_signal": "no signal column or array (lenient mode)",
    "bad_rate": "sampling rate missing, non-positive or too low (lenient mode)",
    "too_short": "shorter than one window (lenient mode)",
    "non_finite": "NaN or infinite samples (lenient mode)",
    "flatline": "sensor flat-lined (lenient mode)",
    "clipped": "sensor clipped (lenient mode)",
    "machine_mismatch": "another machine's recording (lenient mode)",
    "not_image": "not an image of the patient: mask, dose grid, report (lenient mode)",
    "constant": "constant image (lenient mode)",
    "too_large": "header claims more memory than the limit (lenient mode)",
    "truncated": "file shorter than its header says (lenient mode)",
}


def prepare_data(
    scenario: Scenario,
    cfg: RunConfig,
    data_dir: Path | None,
    progress: Progress,
    params: Any = None,
    policy: GovernancePolicy | None = None,
) -> PreparedData:
    """Load (or generate) the sites, form them per ``cfg.partition`` and split train/test.

    Each site's governance comes with it: its own ``policy.toml`` (in its folder)
    over ``policy`` (the federation's, by default the domain's), and its privacy
    ledger. Generated data have no ledger: nobody's privacy is spent on them.
    """
    policy = policy or scenario.policy
    left_out: list[dict[str, str]] = []
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix=f"flsuite-{scenario.name}-"))
        try:
            progress(f"generating synthetic {scenario.site_noun}s (seed {cfg.seed}) ...")
            scenario.make_data(tmp, cfg.seed, **scenario.generation_kwargs(params or scenario.params))
            sites = load_sites(scenario, tmp, strict=cfg.data_mode == "strict", progress=progress, left_out=left_out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        source = "synthetic"
    else:
        progress(f"reading {data_dir} ...")
        sites = load_sites(scenario, data_dir, strict=cfg.data_mode == "strict", progress=progress, left_out=left_out)
        source = str(data_dir)
    governance = [
        SiteGovernance.of(
            site.name, Path(str(site.info["site_dir"])) if data_dir is not None else None, policy, site_facts(site)
        )
        for site in sites
    ]
    for site in sites:
        skipped = {k: v for k, v in dict(site.info.get("skipped", {})).items() if v}  # type: ignore[call-overload]
        if skipped:
            progress(
                f"  {scenario.site_noun} '{site.name}' left out "
                + ", ".join(f"{v} record(s): {_SKIP_REASONS.get(k, k)}" for k, v in skipped.items())
            )
        for example in list(site.info.get("skipped_examples", []))[:5]:  # type: ignore[call-overload]
            progress(f"    skipped {example}")
    if cfg.partition != "natural":
        if not scenario.repartition:
            raise ConfigError(
                f"partition={cfg.partition} does not apply to {scenario.name}: its {scenario.site_noun}s are "
                "natural units whose data cannot be pooled and re-dealt. Use partition=natural."
            )
        own = [g for g in governance if g.policy != policy or (g.ledger and Path(g.ledger).exists())]
        if data_dir is not None and (own or cfg.privacy != "none"):
            raise ConfigError(
                f"partition={cfg.partition} pools the {scenario.site_noun}s' data and deals it out again, but "
                + (
                    f"{own[0].site} has its own policy or privacy ledger, which cannot follow its records."
                    if own
                    else "re-dealt sites have no privacy ledger to charge."
                )
                + " Use partition=natural with real sites."
            )
        consent = [g.facts.get("consent_recorded") for g in governance]
        sites = repartition(sites, cfg.partition, cfg.num_sites, cfg.partition_alpha, cfg.seed)
        for site in sites:  # every record was consented if every source site recorded consent
            site.info["consent_recorded"] = all(c is True for c in consent) if None not in consent else None
        governance = [SiteGovernance(site.name, policy, None, site_facts(site)) for site in sites]
    splits = [scenario.split(s, cfg) for s in sites]
    return PreparedData(source, splits, left_out, governance)


def gate(
    scenario: Scenario,
    cfg: RunConfig,
    params: Any,
    governance: list[SiteGovernance],
    federation: GovernancePolicy,
    audit: Any = None,
    run_id: str = "",
) -> dict[str, Any]:
    """The coordinator's gate: every site against the federation's policy and its own, before training.

    Each decision is written to ``audit`` (an :class:`flcore.governance.audit.AuditTrail`).
    Returns the gate's record for results.json.

    Raises
    ------
    GovernanceError
        For the first refusal (all of them are in the audit trail).
    """
    run = run_facts(scenario, cfg, params)
    refusals: list[Refusal] = []
    sites: dict[str, Any] = {}
    for gov in governance:
        ledger = ledger_of(gov)
        spent = ledger.spent() if ledger is not None and run.epsilon is not None else None
        found: list[Refusal] = []
        for policy in (federation, gov.policy) if gov.policy != federation else (federation,):
            for r in check_site(run, policy, gov.site, spent_epsilon=spent, site_noun=scenario.site_noun, **gov.facts):
                if (r.rule, r.site) not in {(f.rule, f.site) for f in found}:
                    found.append(r)
        refusals += found
        sites[gov.site] = {
            "policy": gov.policy.source,
            "ledger": gov.ledger,
            "epsilon_spent_before": spent,
            "epsilon_budget": gov.policy.max_epsilon_total,
            "records": gov.facts.get("records"),
            "decision": "refuse" if found else "pass",
        }
    record = {
        "run": run_id,
        "plan": run.plan_hash,
        "federation_policy": federation.source,
        "privacy": run.privacy,
        "epsilon": run.epsilon,
        "delta": run.delta,
        "secure_aggregation": run.secure_aggregation,
        "decision": "refuse" if refusals else "pass",
        "sites": sites,
    }
    if audit is not None:
        audit.append("gate", by="coordinator", **record)
        for r in refusals:
            audit.append("refusal", run=run_id, by="coordinator", **r.to_json())
    if refusals:
        raise refusal_error(refusals, scenario.site_noun)
    return record


def score_arm(
    task: Task, splits: list[SiteSplit], model_for: Callable[[str], Any], primary: str, *, shared_model: bool
) -> dict[str, Any]:
    """Score one arm on every site's test split and on their union.

    Parameters
    ----------
    model_for : callable
        Site name -> the model that arm uses at that site.
    shared_model : bool
        True when every site uses the same model (federated, centralised): its
        operating point is chosen once on the union of the sites' validation splits,
        unless the task's ``threshold_scope`` is ``"site"``. False for local-only
        models: each site chooses on its own validation split.
    """
    test_scores = {s.name: task.predict(model_for(s.name), s.test.x) for s in splits}
    pooled = shared_model and task.threshold_scope != "site"
    thresholds = _thresholds(task, splits, model_for, pooled)
    per_site: dict[str, dict[str, Any]] = {
        s.name: task.score(s.test.y, test_scores[s.name], thresholds[s.name]) for s in splits
    }
    if task.threshold_scope == "site":
        union = _calibrated_union(task, splits, test_scores, thresholds)
    else:
        # Pooled decisions: one shared threshold, or each site's own applied to its examples.
        union_threshold: float | np.ndarray | None = None
        if splits and all(t is not None for t in thresholds.values()):
            union_threshold = (
                thresholds[splits[0].name]
                if pooled
                else np.concatenate([np.full(len(s.test), thresholds[s.name], dtype=float) for s in splits])
            )
        union_y = np.concatenate([s.test.y for s in splits])
        union = task.score(union_y, np.concatenate([test_scores[s.name] for s in splits]), union_threshold)
    names = [k for k, v in union.items() if k not in ("n", "n_positive")]
    mean = {k: metrics.nanmean([per_site[s].get(k) for s in per_site]) for k in names}
    defined = {s: m[primary] for s, m in per_site.items() if m.get(primary) is not None}
    worst = min(defined, key=defined.__getitem__) if defined else None
    return {
        "union": union,
        "per_site": per_site,
        "mean_over_sites": mean,
        "worst_site": {"site": worst, "value": defined.get(worst) if worst else None},
    }


def score_federated(task: Task, splits: list[SiteSplit], outcome: Any, seed: int) -> dict[str, Any]:
    """Score the final global model of a federation (:class:`~flcore.federation.app.FederationOutcome`) on each site."""
    if outcome.feature_stats is None or outcome.arrays is None:
        raise FlsuiteError(
            "score_federated: the federation returned no final model or no feature statistics; a completed "
            "federation always has both (this is a bug in flsuite, please report it)."
        )
    model = task.init_model(outcome.feature_stats, seed)
    task.load_model_arrays(model, outcome.arrays)
    return score_arm(task, splits, lambda _: model, task.primary_metric, shared_model=True)


def _calibrated_union(
    task: Task, splits: list[SiteSplit], scores: dict[str, np.ndarray], thresholds: dict[str, float | None]
) -> dict[str, Any]:
    """Fleet-wide metrics when every site calibrates its own threshold (anomaly detection).

    Raw scores of different sites are not comparable (each machine has its own normal
    level), so each site's scores are divided by its threshold: 1.0 is every site's
    alarm level, and a fleet ranks windows by how far past their own alarm level they
    are. Sites without a threshold (no validation data) are left out of the union and
    counted in ``sites_without_threshold``.
    """
    calibrated = [s for s in splits if thresholds[s.name] is not None]
    if not calibrated:
        out = task.score(np.concatenate([s.test.y for s in splits]), np.concatenate([scores[s.name] for s in splits]))
        out["sites_without_threshold"] = len(splits)
        return out
    ts = {s.name: float(thresholds[s.name]) for s in calibrated}  # type: ignore[arg-type]
    ratio = all(t > 0 for t in ts.values())  # positive scores (errors): ratio; otherwise margin
    y = np.concatenate([s.test.y for s in calibrated])
    z = np.concatenate([scores[s.name] / ts[s.name] if ratio else scores[s.name] - ts[s.name] for s in calibrated])
    out = task.score(y, z, 1.0 if ratio else 0.0)
    out["sites_without_threshold"] = len(splits) - len(calibrated)
    out["threshold"] = None  # each site has its own; their values are in per_site
    return out


def _thresholds(
    task: Task, splits: list[SiteSplit], model_for: Callable[[str], Any], shared_model: bool
) -> dict[str, float | None]:
    """Each site's operating point, chosen on validation data only (never on test)."""
    with_val = [s for s in splits if s.val is not None and len(s.val)]
    if not with_val:
        return {s.name: None for s in splits}
    val_scores = {s.name: task.predict(model_for(s.name), s.val.x) for s in with_val}  # type: ignore[union-attr]
    if shared_model:
        t = task.choose_threshold(
            np.concatenate([s.val.y for s in with_val]),  # type: ignore[union-attr]
            np.concatenate([val_scores[s.name] for s in with_val]),
        )
        return {s.name: t for s in splits}
    return {
        s.name: task.choose_threshold(s.val.y, val_scores[s.name]) if s.name in val_scores else None  # type: ignore[union-attr]
        for s in splits
    }


def _site_info(split: SiteSplit) -> dict[str, Any]:
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


def _round_line(total: int, primary: str, progress: Progress) -> Callable[[RoundRecord], None]:
    def show(rec: RoundRecord) -> None:
        value = rec.evaluate.get(primary)
        shown = f"{value:.4f}" if value is not None else "  n/a "
        progress(
            f"  round {rec.round:>3}/{total}  train-loss {rec.train.get('train-loss', float('nan')):.4f}  "
            f"site-mean {primary} {shown}  sites {rec.replies}/{rec.sampled}  "
            f"{(rec.bytes_sent + rec.bytes_received) / 1e6:6.2f} MB  {rec.wall_time_s:5.2f} s"
        )

    return show


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
) -> dict[str, Any]:
    """Run the three arms and return results.json content (validated against the schema).

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

    The governance gate runs after the data are read and before any training; a
    refusal raises :class:`GovernanceError` (exit code 2) after it is audited. The
    peak memory of the whole process tree (simulation workers included) is
    sampled throughout and recorded under ``resources``.
    """
    with PeakMemory() as memory:
        results = _run_arms(
            scenario, cfg, params, data_dir, progress, workdir, policy or scenario.policy, audit, checkpoint, resume
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
    checkpoint: Path | None = None,
    resume: Any = None,
) -> dict[str, Any]:
    from flcore.federation.engines import run_federated_simulation

    task = scenario.make_task(params)
    primary = task.primary_metric
    cfg = resolve_privacy(cfg, policy)
    prepared = prepare_data(scenario, cfg, data_dir, progress, params, policy)
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
        f"[1/3] federated: {cfg.strategy}, {rounds} rounds x {cfg.local_epochs} local epochs (Flower simulation engine)"
        + (f", resuming run {run_id} after round {resume.round}" if resume is not None else "")
    )
    if cfg.fraction_train < 1.0:
        progress(
            f"      note: fraction-train={cfg.fraction_train}: sites train only in rounds where they are "
            "sampled, so their epoch budget is below the baselines' R x E."
        )
    own_workdir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="flsuite-sim-"))
    t0 = time.perf_counter()
    try:
        outcome = run_federated_simulation(
            scenario.name,
            cfg,
            params,
            splits,
            workdir,
            on_round=_round_line(rounds, primary, progress),
            governance=prepared.governance,
            run_id=run_id,
            audit=audit,
            checkpoint=checkpoint,
            resume=resume,
            meta={"data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None},
        )
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    fed_time = time.perf_counter() - t0 + (resume.wall_time_s if resume is not None else 0.0)
    federated = score_federated(task, splits, outcome, cfg.seed)
    monitor = outcome.monitor
    if monitor is None:
        raise FlsuiteError("The federation returned no round records (a bug in flsuite, please report it).")
    federated["curve"] = curve_json(primary, [r.evaluate.get(primary) for r in monitor.rounds])
    federated.update(
        wall_time_s=fed_time,
        history=[r.to_json() for r in monitor.rounds],
        bytes_sent=monitor.bytes_sent,
        bytes_received=monitor.bytes_received,
        participation=participation(monitor.rounds, [s.name for s in splits], cfg.local_epochs),
        compression=_compression(monitor.rounds, cfg),
        privacy=outcome.privacy,
    )
    rejected = federated["rejected_updates"] = monitor.rejected_per_site()
    if cfg.attack != "none":
        federated["attack"] = describe_attack(cfg, outcome.attackers)
        progress(
            f"      simulated attack: {cfg.attack} from {', '.join(outcome.attackers)}; "
            f"updates rejected by the server: {sum(rejected.values())}"
        )
    _show_arm("federated", federated, primary, progress)
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

    # -- centralised ------------------------------------------------------------------
    baseline = task.baseline_rounds(cfg, len(splits))
    budget = f"{baseline * cfg.local_epochs} " + ("boosting rounds" if task.model_family == "xgboost" else "epochs")
    progress(f"[2/3] centralised: all training splits pooled, {budget}")
    t0 = time.perf_counter()
    pooled = SiteData(
        "pooled",
        np.concatenate([s.train.x for s in splits]),
        np.concatenate([s.train.y for s in splits]),
    )
    central_model = task.init_model(FeatureStats.of(pooled.x, pooled.y), cfg.seed)
    central_curve = Curve(task, splits, rounds, baseline)
    task.fit(
        central_model,
        pooled,
        cfg,
        first_round=0,
        num_rounds=baseline,
        seed=cfg.seed,
        on_round=central_curve.after(lambda _: central_model),
    )
    centralised = score_arm(task, splits, lambda _: central_model, primary, shared_model=True)
    centralised["curve"] = central_curve.to_json()
    centralised["wall_time_s"] = time.perf_counter() - t0
    _show_arm("centralised", centralised, primary, progress)

    # -- local-only ---------------------------------------------------------------------
    progress(f"[3/3] local-only: each {scenario.site_noun} alone, {budget}")
    t0 = time.perf_counter()
    local_models = {}
    local_curve = Curve(task, splits, rounds, baseline)
    for split in splits:
        model = task.init_model(FeatureStats.of(split.train.x, split.train.y), cfg.seed)
        task.fit(
            model,
            split.train,
            cfg,
            first_round=0,
            num_rounds=baseline,
            seed=cfg.seed,
            on_round=local_curve.after(_constant(model), only=split),
        )
        local_models[split.name] = model
    local_only = score_arm(task, splits, local_models.__getitem__, primary, shared_model=False)
    local_only["curve"] = local_curve.to_json()
    union_x = np.concatenate([s.test.x for s in splits])
    union_y = np.concatenate([s.test.y for s in splits])
    local_only["per_site_model_on_union"] = {
        name: task.score(union_y, task.predict(m, union_x)) for name, m in local_models.items()
    }
    local_only["wall_time_s"] = time.perf_counter() - t0
    _show_arm("local-only", local_only, primary, progress)

    results = {
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
    if audit is not None:
        audit.append(
            "run-end",
            run=run_id,
            model=monitor.rounds[-1].aggregate_hash if monitor.rounds else None,
            metric=primary,
            federated=federated["union"].get(primary),
            epsilon=outcome.privacy.get("epsilon"),
        )
        seq, head = audit.head()
        gate_record["audit"] = {"path": str(audit.path), "entries": seq, "head": head}
    return clean(results)


#: What an arm's ``curve`` holds, the same for the three arms.
CURVE_DEFINITION = (
    "after each round, the primary metric on every site's test split, averaged over the sites weighted by their "
    "test examples (sites where it is undefined left out), as Flower aggregates the federated evaluate round"
)


def curve_json(metric: str, values: list[float | None]) -> dict[str, Any]:
    """An arm's ``curve`` in results.json: ``values[r - 1]`` is the metric after round ``r``."""
    return {"metric": metric, "definition": CURVE_DEFINITION, "values": values}


class Curve:
    """The primary metric after every round of a baseline, as the federated arm records it per round.

    A baseline trains ``baseline`` rounds where the federation trains ``rounds``
    (for bagged trees, one per site and round); it is scored every
    ``baseline // rounds`` of its rounds, so both curves share one round axis.
    """

    def __init__(self, task: Task, splits: list[SiteSplit], rounds: int, baseline: int) -> None:
        self.task, self.splits = task, splits
        self.step = max(1, baseline // max(1, rounds))
        self.rounds = rounds
        #: round -> site -> (value, test examples)
        self.points: dict[int, dict[str, tuple[float, int]]] = {}

    def after(self, model_for: Callable[[str], Any], only: SiteSplit | None = None) -> Callable[[int], None]:
        """The ``on_round`` callback of :meth:`Task.fit` that scores ``model_for(site)`` (on ``only``, or all sites)."""

        def score(done: int) -> None:
            if done % self.step:
                return
            r = done // self.step
            for split in [only] if only is not None else self.splits:
                if len(split.test) == 0:
                    continue
                value = self.task.score(split.test.y, self.task.predict(model_for(split.name), split.test.x)).get(
                    self.task.primary_metric
                )
                if value is not None:
                    self.points.setdefault(r, {})[split.name] = (float(value), len(split.test))

        return score

    def to_json(self) -> dict[str, Any]:
        values: list[float | None] = []
        for r in range(1, self.rounds + 1):
            pts = list(self.points.get(r, {}).values())
            weight = sum(n for _, n in pts)
            values.append(sum(v * n for v, n in pts) / weight if weight else None)
        return curve_json(self.task.primary_metric, values)


def _constant(model: Any) -> Callable[[str], Any]:
    """``model`` for every site."""
    return lambda _: model


def participation(rounds: list[RoundRecord], sites: list[str], local_epochs: int) -> dict[str, Any]:
    """Sampled, answered and offline sites over all rounds, and the epochs each site really trained."""
    sampled = sum(r.sampled for r in rounds)
    replied = sum(r.replies for r in rounds)
    trained = {name: 0 for name in sites}
    for r in rounds:
        for name in r.per_site_train:
            trained[name] = trained.get(name, 0) + 1
    epochs = np.asarray([v * local_epochs for v in trained.values()], dtype=float)
    return {
        "sampled": sampled,
        "replied": replied,
        "failed": sum(r.failures for r in rounds),
        "dropped": sum(r.dropouts for r in rounds),
        "reply_rate": replied / sampled if sampled else None,
        "epochs_per_site": {
            "min": int(epochs.min()) if epochs.size else 0,
            "mean": round(float(epochs.mean()), 2) if epochs.size else 0.0,
            "max": int(epochs.max()) if epochs.size else 0,
            "never_trained": int((epochs == 0).sum()),
        },
    }


def _compression(rounds: list[RoundRecord], cfg: RunConfig) -> dict[str, Any]:
    n = max(1, len(rounds))
    return {
        "codec": cfg.update_compression,
        "broadcast": cfg.update_compression != "none" and cfg.compress_broadcast,
        "train_bytes_sent_per_round": sum(r.bytes_sent_train for r in rounds) / n,
        "train_bytes_received_per_round": sum(r.bytes_received_train for r in rounds) / n,
        "bytes_per_round": sum(r.bytes_sent + r.bytes_received for r in rounds) / n,
    }


def compare(fed: dict[str, Any], cen: dict[str, Any], loc: dict[str, Any], primary: str) -> dict[str, Any]:
    """Headline figures: federated against the pooled reference and against sites alone."""
    f, c = fed["union"].get(primary), cen["union"].get(primary)
    fm, lm = fed["mean_over_sites"].get(primary), loc["mean_over_sites"].get(primary)
    both = [
        site
        for site, m in fed["per_site"].items()
        if m.get(primary) is not None and loc["per_site"][site].get(primary) is not None
    ]
    wins = sum(1 for site in both if fed["per_site"][site][primary] > loc["per_site"][site][primary])
    return {
        "metric": primary,
        "federated": f,
        "centralised": c,
        "local_only": loc["union"].get(primary),
        "federated_mean_over_sites": fm,
        "local_only_mean_over_sites": lm,
        "federated_over_centralised": (f / c) if f is not None and c else None,
        "federated_minus_local_only_mean": (fm - lm) if fm is not None and lm is not None else None,
        "sites_where_federated_beats_local": wins,
        "sites_compared": len(both),
    }


def _show_arm(name: str, arm: dict[str, Any], primary: str, progress: Progress) -> None:
    u = arm["union"].get(primary)
    m = arm["mean_over_sites"].get(primary)
    progress(
        f"      {name}: {primary} union {u if u is None else round(u, 4)}, "
        f"site mean {m if m is None else round(m, 4)}, {arm['wall_time_s']:.1f} s"
    )
