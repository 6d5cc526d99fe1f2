"""Hand-made results.json documents (kind "run") and run folders, for the statistics and report tests.

Every number a test checks is given here by the test itself: per-site values,
union values, curves, bytes, wall times and epsilon. The documents follow the
results schema, so they can be summarised, written and read back as
``flsuite run`` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flcore.experiment.results import write_json
from flcore.experiment.seeds import seed_folder, summary_document, with_statistics

METRIC = "roc_auc"
SITES = ("hospital-a", "hospital-b", "hospital-c")
ARMS = ("federated", "centralised", "local_only")


def metrics(value: float | None, **extra: float | None) -> dict[str, Any]:
    """A metrics block: the primary metric (and any others) on 20 test examples, 5 positive."""
    return {"n": 20, "n_positive": 5, METRIC: value, **extra}


def arm(
    union: float | None,
    per_site: Mapping[str, float | None],
    wall_time_s: float,
    curve: Sequence[float | None] | None,
    secondary: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One arm: union, per-site values, their plain mean and minimum, wall time and per-round curve."""
    known = {k: v for k, v in per_site.items() if v is not None}
    worst = min(known, key=known.__getitem__) if known else None
    out: dict[str, Any] = {
        "union": metrics(union, **(secondary or {})),
        "per_site": {name: metrics(v) for name, v in per_site.items()},
        "mean_over_sites": {METRIC: sum(known.values()) / len(known) if known else None},
        "worst_site": {"site": worst, "value": known[worst] if worst else None},
        "wall_time_s": wall_time_s,
    }
    if curve is not None:
        out["curve"] = {"metric": METRIC, "definition": "hand-made", "values": list(curve)}
    return out


def make_run(
    seed: int,
    *,
    union: Mapping[str, float | None],
    per_site: Mapping[str, Sequence[float | None]],
    curves: Mapping[str, Sequence[float | None] | None] | None = None,
    wall_time_s: Mapping[str, float] | None = None,
    bytes_sent: int = 1000,
    bytes_received: int = 2000,
    epsilon: float | None = None,
    peak_rss_bytes: int | None = None,
    secondary: Mapping[str, Mapping[str, float]] | None = None,
    strategy: str = "fedavg",
    scenario: str = "medical-clinical",
    sites: Sequence[str] = SITES,
    rounds: int = 3,
) -> dict[str, Any]:
    """A results.json of one seed; ``per_site[arm]`` lists the values of ``sites`` in order.

    ``epsilon`` makes it a DP run (privacy ``dp``, delta 1e-5).
    """
    curves = curves if curves is not None else {a: [0.5, 0.8, union[a]][-rounds:] for a in ARMS}
    wall = wall_time_s or {"federated": 10.0, "centralised": 2.0, "local_only": 3.0}
    arms = {
        a: arm(
            union[a],
            dict(zip(sites, per_site[a], strict=True)),
            wall[a],
            curves.get(a),
            (secondary or {}).get(a),
        )
        for a in ARMS
    }
    arms["federated"].update(history=[], bytes_sent=bytes_sent, bytes_received=bytes_received)
    privacy = "none" if epsilon is None else "dp"
    if epsilon is not None:
        arms["federated"]["privacy"] = {"mode": "dp", "unit": "record", "epsilon": epsilon, "delta": 1e-5}
    config = {"strategy": strategy, "num-server-rounds": rounds, "local-epochs": 1, "seed": seed, "privacy": privacy}
    if epsilon is not None:
        config.update({"dp-epsilon": 4.0, "dp-delta": 1e-5})
    run: dict[str, Any] = {
        "schema_version": 1,
        "kind": "run",
        "suite_version": "0.0.test",
        "created_utc": "2025-01-01T00:00:00+00:00",
        "scenario": scenario,
        "domain": "medical",
        "seed": seed,
        "seeds": [seed],
        "strategy": strategy,
        "rounds": rounds,
        "config": config,
        "params": {"hidden": "16"},
        "primary_metric": METRIC,
        "environment": {},
        "data": {
            "source": "synthetic",
            "sites": [
                {"name": s, "n_train": 80, "n_test": 20, "positives_train": 20, "positives_test": 5} for s in sites
            ],
        },
        "arms": arms,
        "comparison": {
            "metric": METRIC,
            "federated": union["federated"],
            "centralised": union["centralised"],
            "local_only_mean_over_sites": arms["local_only"]["mean_over_sites"][METRIC],
            "federated_over_centralised": None,
        },
    }
    if peak_rss_bytes is not None:
        run["resources"] = {"peak_rss_bytes": peak_rss_bytes}
    return run


def simple_run(seed: int, level: float, *, strategy: str = "fedavg", **kwargs: Any) -> dict[str, Any]:
    """A plausible seed: federated near ``level`` (varying with the seed), centralised above, local-only below."""
    wobble = (0.0, 0.012, -0.007, 0.004, -0.01, 0.006, 0.0, 0.003)[seed % 8]
    fed = level + wobble
    union = {"federated": fed, "centralised": fed + 0.01 + wobble / 2, "local_only": fed - 0.08 - wobble}
    per_site = {
        "federated": [fed + 0.03, fed, fed - 0.06 + wobble],
        "centralised": [fed + 0.04, fed + 0.01, fed - 0.04],
        "local_only": [fed + 0.01 - wobble, fed - 0.05 + wobble / 2, fed - 0.02 + 2 * wobble],
    }
    return make_run(seed, union=union, per_site=per_site, strategy=strategy, **kwargs)


def write_seeds_folder(out: Path, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Write the runs as ``flsuite run --seeds N`` does: OUT/seed-S/results.json, then OUT/results.json."""
    files = [write_json(seed_folder(out, int(r["seed"])) / "results.json", r) for r in runs]
    summary = summary_document(runs, files, out)
    write_json(out / "results.json", summary)
    return summary


def write_single_folder(out: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Write one seed's run as ``flsuite run`` does without --seeds (results.json with its statistics)."""
    doc = with_statistics(run)
    write_json(out / "results.json", doc)
    return doc
