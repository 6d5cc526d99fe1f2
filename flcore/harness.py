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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from flcore import metrics
from flcore.config import RunConfig, to_dict
from flcore.data import FeatureStats, SiteData, SiteSplit, list_site_dirs, split_site
from flcore.exceptions import DataValidationError
from flcore.governance import check_deidentified, check_min_cohort
from flcore.monitor import RoundRecord
from flcore.partition import repartition
from flcore.results import SCHEMA_VERSION, clean, environment, now_utc, suite_version, validate_results
from flcore.scenario import Scenario
from flcore.task import Task

Progress = Callable[[str], None]


@dataclass
class PreparedData:
    """Sites after loading, validation, partitioning and splitting."""

    source: str
    splits: list[SiteSplit]


def load_sites(scenario: Scenario, data_dir: Path, strict: bool = True) -> list[SiteData]:
    """Read and validate every site folder of ``data_dir`` through the scenario's adapter.

    Every site is read, and the scenario's governance policy checked on it, before
    any training starts, so a bad file or a refused site stops the run before
    anything is written.
    """
    sites = [scenario.adapter.read(d, strict=strict) for d in list_site_dirs(data_dir, scenario.adapter)]
    for site in sites:
        check_deidentified(site, scenario.policy, scenario.site_noun)
    if len(sites) < 2:
        raise DataValidationError(
            data_dir,
            f"found {len(sites)} site folder; a federation needs at least 2.",
            "Add one sub-folder per site.",
        )
    _check_same_features(sites)
    check_min_cohort(sites, scenario.policy, scenario.site_noun)
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
}


def prepare_data(scenario: Scenario, cfg: RunConfig, data_dir: Path | None, progress: Progress) -> PreparedData:
    """Load (or generate) the sites, form them per ``cfg.partition`` and split train/test."""
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix=f"flsuite-{scenario.name}-"))
        try:
            progress(f"generating synthetic {scenario.site_noun}s (seed {cfg.seed}) ...")
            scenario.make_data(tmp, cfg.seed)
            sites = load_sites(scenario, tmp, strict=cfg.data_mode == "strict")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        source = "synthetic"
    else:
        progress(f"reading {data_dir} ...")
        sites = load_sites(scenario, data_dir, strict=cfg.data_mode == "strict")
        source = str(data_dir)
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
        sites = repartition(sites, cfg.partition, cfg.num_sites, cfg.partition_alpha, cfg.seed)
        check_min_cohort(sites, scenario.policy, scenario.site_noun)
    splits = [split_site(s, cfg.test_fraction, cfg.seed, cfg.val_fraction) for s in sites]
    return PreparedData(source, splits)


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
        operating point is chosen once on the union of the sites' validation splits.
        False for local-only models: each site chooses on its own validation split.
    """
    test_scores = {s.name: task.predict(model_for(s.name), s.test.x) for s in splits}
    thresholds = _thresholds(task, splits, model_for, shared_model)
    per_site: dict[str, dict[str, Any]] = {
        s.name: task.score(s.test.y, test_scores[s.name], thresholds[s.name]) for s in splits
    }
    # Pooled decisions: one shared threshold, or each site's own applied to its examples.
    union_threshold: float | np.ndarray | None = None
    if splits and all(t is not None for t in thresholds.values()):
        union_threshold = (
            thresholds[splits[0].name]
            if shared_model
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
) -> dict[str, Any]:
    """Run the three arms and return results.json content (validated against the schema)."""
    from flcore.simulation import run_federated_simulation

    task = scenario.make_task(params)
    primary = task.primary_metric
    prepared = prepare_data(scenario, cfg, data_dir, progress)
    splits = prepared.splits
    rounds = cfg.num_server_rounds
    progress(
        f"{len(splits)} {scenario.site_noun}s: "
        + ", ".join(f"{s.name} ({len(s.train)} train / {len(s.test)} test)" for s in splits)
    )

    # -- federated ----------------------------------------------------------------
    progress(
        f"[1/3] federated: {cfg.strategy}, {rounds} rounds x {cfg.local_epochs} local epochs (Flower simulation engine)"
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
            scenario.name, cfg, params, splits, workdir, on_round=_round_line(rounds, primary, progress)
        )
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    fed_time = time.perf_counter() - t0
    stats = outcome.feature_stats
    assert stats is not None
    fed_model = task.init_model(stats, cfg.seed)
    fed_model.load_state_dict(outcome.state_dict)
    federated = score_arm(task, splits, lambda _: fed_model, primary, shared_model=True)
    monitor = outcome.monitor
    assert monitor is not None
    federated.update(
        wall_time_s=fed_time,
        history=[r.to_json() for r in monitor.rounds],
        bytes_sent=monitor.bytes_sent,
        bytes_received=monitor.bytes_received,
    )
    _show_arm("federated", federated, primary, progress)

    # -- centralised ------------------------------------------------------------------
    progress(f"[2/3] centralised: all training splits pooled, {rounds * cfg.local_epochs} epochs")
    t0 = time.perf_counter()
    pooled = SiteData(
        "pooled",
        np.concatenate([s.train.x for s in splits]),
        np.concatenate([s.train.y for s in splits]),
    )
    central_model = task.init_model(FeatureStats.of(pooled.x, pooled.y), cfg.seed)
    task.fit(central_model, pooled, cfg, first_round=0, num_rounds=rounds, seed=cfg.seed)
    centralised = score_arm(task, splits, lambda _: central_model, primary, shared_model=True)
    centralised["wall_time_s"] = time.perf_counter() - t0
    _show_arm("centralised", centralised, primary, progress)

    # -- local-only ---------------------------------------------------------------------
    progress(f"[3/3] local-only: each {scenario.site_noun} alone, {rounds * cfg.local_epochs} epochs")
    t0 = time.perf_counter()
    local_models = {}
    for split in splits:
        model = task.init_model(FeatureStats.of(split.train.x, split.train.y), cfg.seed)
        task.fit(model, split.train, cfg, first_round=0, num_rounds=rounds, seed=cfg.seed)
        local_models[split.name] = model
    local_only = score_arm(task, splits, local_models.__getitem__, primary, shared_model=False)
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
        "data": {"source": prepared.source, "sites": [_site_info(s) for s in splits]},
        "arms": {"federated": federated, "centralised": centralised, "local_only": local_only},
        "comparison": compare(federated, centralised, local_only, primary),
    }
    results = clean(results)
    validate_results(results)
    return results


def compare(fed: dict[str, Any], cen: dict[str, Any], loc: dict[str, Any], primary: str) -> dict[str, Any]:
    """Headline figures: federated against the pooled reference and against sites alone."""
    f, c = fed["union"].get(primary), cen["union"].get(primary)
    fm, lm = fed["mean_over_sites"].get(primary), loc["mean_over_sites"].get(primary)
    wins = sum(
        1
        for site, m in fed["per_site"].items()
        if m.get(primary) is not None
        and loc["per_site"][site].get(primary) is not None
        and m[primary] > loc["per_site"][site][primary]
    )
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
    }


def _show_arm(name: str, arm: dict[str, Any], primary: str, progress: Progress) -> None:
    u = arm["union"].get(primary)
    m = arm["mean_over_sites"].get(primary)
    progress(
        f"      {name}: {primary} union {u if u is None else round(u, 4)}, "
        f"site mean {m if m is None else round(m, 4)}, {arm['wall_time_s']:.1f} s"
    )
