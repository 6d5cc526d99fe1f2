"""Statistics over seeds: intervals, paired comparisons, per-site gains, costs and rankings.

A run under one seed is one draw: the data split, the initial weights and the
sites sampled each round all change with the seed. These functions turn the
per-seed results of the same scenario and settings into the figures a report
stands on:

* the mean and its two-sided 95% confidence interval, ``mean +- t(0.975, n-1) * sd / sqrt(n)``
  (Student's t, sample standard deviation with ``n - 1``);
* paired comparisons of two arms over the *same* seeds: the mean of the per-seed
  differences with its interval, the paired t-test (:func:`scipy.stats.ttest_rel`)
  and the effect size Cohen's d_z (mean difference / standard deviation of the
  differences). A difference whose interval includes 0 is reported as *within noise*;
* per site, the federated gain over the site training alone, the worst site and
  the spread between the best and the worst site;
* costs: bytes, wall time, privacy spent, rounds to reach 95% of the final metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95

#: The three arms of a run, in the order reports show them.
ARMS = ("federated", "centralised", "local_only")

#: Secondary metrics summarised when a run reports them.
SECONDARY = ("pr_auc", "roc_auc", "recall_at_1pct_fpr", "sensitivity", "specificity", "f1")

#: Share of the final metric that "rounds to converge" counts up to.
CONVERGED = 0.95

#: Verdicts of a paired comparison.
HIGHER, LOWER, WITHIN_NOISE, IDENTICAL, ONE_SEED = "higher", "lower", "within noise", "identical", "one seed"


def _defined(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for ``n`` values (``n - 1`` degrees of freedom)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def interval(values: Iterable[float | None], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean, sample standard deviation and the t confidence interval of the mean.

    Missing values (``None``, NaN) are left out and ``n`` counts the rest. With one
    value the interval is undefined (``None``); with none, every figure is.

    Returns
    -------
    dict
        ``n``, ``mean``, ``sd``, ``ci_low``, ``ci_high``, ``half_width`` and the
        ``values`` used.
    """
    x = _defined(values)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean": None, "sd": None, "ci_low": None, "ci_high": None, "half_width": None}
    out["values"] = x
    if n == 0:
        return out
    mean = float(np.mean(x))
    out["mean"] = mean
    if n == 1:
        return out
    sd = float(np.std(x, ddof=1))
    half = t_quantile(n, confidence) * sd / math.sqrt(n)
    out.update(sd=sd, ci_low=mean - half, ci_high=mean + half, half_width=half)
    return out


def paired(a: Sequence[float | None], b: Sequence[float | None], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Compare ``a`` with ``b`` over the same seeds (``a[i]`` and ``b[i]`` come from seed ``i``).

    Seeds where either value is missing are left out. The verdict is ``"higher"``
    or ``"lower"`` (for ``a`` against ``b``) only when the confidence interval of
    the mean difference excludes 0, which for the paired t-test is ``p < 1 -
    confidence``; otherwise ``"within noise"``.

    Returns
    -------
    dict
        ``n``, ``mean_difference`` (a - b), ``sd``, ``ci_low``, ``ci_high``,
        ``t``, ``p_value`` (two-sided), ``effect_size_dz``, ``verdict`` and the
        per-seed ``differences``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need one pair per seed; got {len(a)} and {len(b)} values")
    pairs = [(x[0], y[0]) for x, y in ((_defined([u]), _defined([v])) for u, v in zip(a, b, strict=True)) if x and y]
    d = [x - y for x, y in pairs]
    ci = interval(d, confidence)
    out: dict[str, Any] = {
        "n": ci["n"],
        "mean_difference": ci["mean"],
        "sd": ci["sd"],
        "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"],
        "t": None,
        "p_value": None,
        "effect_size_dz": None,
        "differences": d,
        "verdict": ONE_SEED,
    }
    if ci["n"] < 2:
        out["verdict"] = ONE_SEED if ci["n"] == 1 else None
        return out
    mean, sd = ci["mean"], ci["sd"]
    if sd <= 1e-12 * max(1.0, abs(mean)):  # the same difference at every seed (up to rounding): no noise to test
        out["verdict"] = IDENTICAL if mean == 0 else (HIGHER if mean > 0 else LOWER)
        return out
    from scipy import stats

    test = stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
    out.update(t=float(test.statistic), p_value=float(test.pvalue), effect_size_dz=mean / sd)
    if ci["ci_low"] > 0:
        out["verdict"] = HIGHER
    elif ci["ci_high"] < 0:
        out["verdict"] = LOWER
    else:
        out["verdict"] = WITHIN_NOISE
    return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (family-wise error over several comparisons); ``None`` stays ``None``."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(known)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def rounds_to(curve: Sequence[float | None], fraction: float = CONVERGED) -> int | None:
    """The first 1-based round whose value reaches ``fraction`` of the last round's value.

    ``None`` when the curve is empty, its last value is missing, or not positive.
    """
    if not curve or curve[-1] is None or not math.isfinite(curve[-1]) or curve[-1] <= 0:
        return None
    target = fraction * curve[-1]
    for i, v in enumerate(curve):
        if v is not None and v >= target:
            return i + 1
    return None


# -- results.json -> statistics ---------------------------------------------------------


def _primary(results: dict[str, Any]) -> str:
    return str(results["primary_metric"])


def _arm_value(run: dict[str, Any], arm: str, measure: str, metric: str) -> float | None:
    a = run["arms"][arm]
    if measure == "worst_site":
        value = a["worst_site"]["value"]
        return None if value is None else float(value)
    value = a[measure].get(metric)
    return None if value is None else float(value)


def curve_of(run: dict[str, Any], arm: str) -> list[float | None]:
    """An arm's per-round primary metric (the example-weighted mean over sites' test splits)."""
    a = run["arms"][arm]
    if "curve" in a:
        return list(a["curve"]["values"])
    if arm == "federated":  # results written before curves were recorded
        metric = _primary(run)
        return [r.get("evaluate", {}).get(metric) for r in a.get("history", [])]
    return []


def common_sites(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Site names present in every run, in the first run's order."""
    names = [s["name"] for s in runs[0]["data"]["sites"]]
    others = [{s["name"] for s in r["data"]["sites"]} for r in runs[1:]]
    return [n for n in names if all(n in o for o in others)]


def _spread(run: dict[str, Any], arm: str, metric: str) -> float | None:
    values = _defined(m.get(metric) for m in run["arms"][arm]["per_site"].values())
    return max(values) - min(values) if values else None


def _ratio(f: float | None, c: float | None) -> float | None:
    return f / c if f is not None and c else None


def summarise(runs: Sequence[dict[str, Any]], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The statistics block of results.json from the per-seed results of one configuration.

    Parameters
    ----------
    runs : sequence of dict
        results.json documents of the same scenario and settings, one per seed.

    Returns
    -------
    dict
        ``arms`` (intervals of the union metric, the mean over sites, the worst
        site's value and secondary metrics), ``paired`` (federated against
        centralised and against local-only, on the union and on the mean over
        sites), ``sites`` (per-site intervals and the federated gain over the site
        alone), ``worst_site``, ``spread``, ``sites_worse_off`` and ``costs``.
    """
    if not runs:
        raise ValueError("no runs to summarise")
    metric = _primary(runs[0])
    seeds = [int(r["seed"]) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"each run must have its own seed; got seeds {seeds}")

    def series(arm: str, measure: str, name: str = metric) -> list[float | None]:
        return [_arm_value(r, arm, measure, name) for r in runs]

    arms: dict[str, Any] = {}
    for arm in ARMS:
        secondary = {
            name: interval(series(arm, "union", name), confidence)
            for name in SECONDARY
            if name != metric and any(name in r["arms"][arm]["union"] for r in runs)
        }
        arms[arm] = {
            "union": interval(series(arm, "union"), confidence),
            "mean_over_sites": interval(series(arm, "mean_over_sites"), confidence),
            "worst_site_value": interval(series(arm, "worst_site"), confidence),
            "secondary": secondary,
        }
    ratio = [_ratio(f, c) for f, c in zip(series("federated", "union"), series("centralised", "union"), strict=True)]
    paired_block = {
        "federated_vs_centralised": {
            "union": paired(series("federated", "union"), series("centralised", "union"), confidence),
            "mean_over_sites": paired(
                series("federated", "mean_over_sites"), series("centralised", "mean_over_sites"), confidence
            ),
            "ratio": interval(ratio, confidence),
        },
        "federated_vs_local_only": {
            "union": paired(series("federated", "union"), series("local_only", "union"), confidence),
            "mean_over_sites": paired(
                series("federated", "mean_over_sites"), series("local_only", "mean_over_sites"), confidence
            ),
        },
    }

    sites: dict[str, Any] = {}
    for name in common_sites(runs):
        per_arm = {arm: [r["arms"][arm]["per_site"].get(name, {}).get(metric) for r in runs] for arm in ARMS}
        sites[name] = {
            **{arm: interval(per_arm[arm], confidence) for arm in ARMS},
            "gain_over_local": paired(per_arm["federated"], per_arm["local_only"], confidence),
            "gap_to_centralised": paired(per_arm["federated"], per_arm["centralised"], confidence),
        }
    scored = {name: s for name, s in sites.items() if s["federated"]["mean"] is not None}
    worst = min(scored, key=lambda name: scored[name]["federated"]["mean"]) if scored else None
    best = max(scored, key=lambda name: scored[name]["federated"]["mean"]) if scored else None
    gains = {name: s["gain_over_local"]["mean_difference"] for name, s in sites.items()}
    gains = {name: g for name, g in gains.items() if g is not None}
    least = min(gains, key=gains.__getitem__) if gains else None

    costs: dict[str, Any] = {}
    for arm in ARMS:
        entry: dict[str, Any] = {
            "wall_time_s": interval([r["arms"][arm].get("wall_time_s") for r in runs], confidence),
            "rounds_to_95pct": interval([rounds_to(curve_of(r, arm)) for r in runs], confidence),
        }
        if arm == "federated":
            fed = [r["arms"]["federated"] for r in runs]
            entry["bytes_sent"] = interval([f["bytes_sent"] for f in fed], confidence)
            entry["bytes_received"] = interval([f["bytes_received"] for f in fed], confidence)
            entry["bytes_total"] = interval([f["bytes_sent"] + f["bytes_received"] for f in fed], confidence)
            eps = [(f.get("privacy") or {}).get("epsilon") for f in fed]
            entry["epsilon"] = interval(eps, confidence) if any(e is not None for e in eps) else None
            entry["epsilon_all_seeds"] = sum(_defined(eps)) if entry["epsilon"] else None
        costs[arm] = entry
    peak = [(r.get("resources") or {}).get("peak_rss_bytes") for r in runs]

    return {
        "metric": metric,
        "seeds": seeds,
        "n_seeds": len(runs),
        "confidence": confidence,
        "method": (
            "mean over seeds with a two-sided Student-t interval; paired t-test and Cohen's d_z over the same "
            "seeds; a difference whose interval includes 0 is within noise"
        ),
        "arms": arms,
        "paired": paired_block,
        "sites": sites,
        "worst_site": {
            "site": worst,
            "federated": sites[worst]["federated"] if worst else None,
            "gain_over_local": sites[worst]["gain_over_local"] if worst else None,
        },
        "best_site": {"site": best, "federated": sites[best]["federated"] if best else None},
        "least_gain_site": {"site": least, "gain_over_local": sites[least]["gain_over_local"] if least else None},
        "sites_worse_off": sorted(n for n, s in sites.items() if s["gain_over_local"]["verdict"] == LOWER),
        "sites_better_off": sorted(n for n, s in sites.items() if s["gain_over_local"]["verdict"] == HIGHER),
        "spread": {arm: interval([_spread(r, arm, metric) for r in runs], confidence) for arm in ARMS},
        "costs": costs,
        "peak_memory_bytes": interval(peak, confidence) if any(p is not None for p in peak) else None,
    }


def rank(groups: Mapping[str, Sequence[float | None]], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Rank configurations (e.g. strategies) run over the same seeds, only where differences exceed noise.

    Parameters
    ----------
    groups : dict
        Label -> the primary metric per seed, the seeds in the same order for every label.

    Every pair is compared with the paired t-test; the p-values are adjusted with
    Holm's method over all pairs, and a pair counts as different only when its
    adjusted p-value is below ``1 - confidence``. A configuration's rank is 1 +
    the number of configurations that beat it; configurations that nothing
    separates share a rank.

    Returns
    -------
    dict
        ``order`` (labels by mean, best first), ``ranks`` (label -> rank),
        ``pairs`` (every comparison with its adjusted p-value and verdict) and
        ``tied_with_best`` (the labels of rank 1: nothing beats them beyond noise).
    """
    means = {k: interval(groups[k])["mean"] for k in groups}
    labels = sorted(groups, key=lambda k: -means[k] if means[k] is not None else math.inf)
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            pairs.append({"a": a, "b": b, **paired(groups[a], groups[b], confidence)})
    adjusted = holm([p["p_value"] for p in pairs])
    alpha = 1 - confidence
    for p, adj in zip(pairs, adjusted, strict=True):
        p["p_holm"] = adj
        if p["verdict"] in (HIGHER, LOWER) and adj is not None and adj >= alpha:
            p["verdict"] = WITHIN_NOISE  # not separated once every comparison is accounted for
    beaten_by: dict[str, set[str]] = {k: set() for k in labels}
    for p in pairs:
        if p["verdict"] == HIGHER:
            beaten_by[p["b"]].add(p["a"])
        elif p["verdict"] == LOWER:
            beaten_by[p["a"]].add(p["b"])
    ranks = {k: 1 + len(beaten_by[k]) for k in labels}
    return {
        "order": labels,
        "means": {k: interval(groups[k], confidence) for k in labels},
        "ranks": ranks,
        "pairs": pairs,
        "tied_with_best": [k for k in labels if ranks[k] == 1],
        "method": "paired t-test over the same seeds, Holm-adjusted over all pairs",
    }
