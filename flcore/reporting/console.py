"""What the command line prints after a run: the arms, the per-site table, seeds' intervals, a sweep's ranking."""

from __future__ import annotations

from typing import Any

from flcore.experiment.stats import ARMS
from flcore.reporting.document import ci


def _fmt(v: Any) -> str:
    return "   n/a" if v is None else f"{v:6.4f}"


#: Secondary metrics shown in the summary when a scenario reports them, with their column titles.
_SECONDARY = {
    "pr_auc": "pr_auc",
    "roc_auc": "roc_auc",
    "recall_at_1pct_fpr": "recall@1%fpr",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "f1": "f1",
}

#: Beyond this many sites the per-site table shows only the worst ones.
_MAX_SITE_ROWS = 15


def summary_table(results: dict[str, Any]) -> str:
    """Short human summary: the three arms, then the primary metric per site."""
    m = results["primary_metric"]
    arms = results["arms"]
    union = arms["federated"]["union"]
    extra = [k for k in _SECONDARY if k != m and k in union]
    lines = [
        "",
        f"{'arm':<12} {m + ' (union)':>16} {'site mean':>10} {'worst site':>20} "
        + " ".join(f"{_SECONDARY[k]:>{max(8, len(_SECONDARY[k]))}}" for k in extra)
        + f" {'time s':>7}",
    ]
    for name in ("federated", "centralised", "local_only"):
        a = arms[name]
        worst = a["worst_site"]
        w = f"{_fmt(worst['value'])} {worst['site'] or ''}"
        lines.append(
            f"{name:<12} {_fmt(a['union'].get(m)):>16} {_fmt(a['mean_over_sites'].get(m)):>10} {w:>20} "
            + " ".join(f"{_fmt(a['union'].get(k)):>{max(8, len(_SECONDARY[k]))}}" for k in extra)
            + f" {a['wall_time_s']:7.1f}"
        )
    sites = results["data"]["sites"]
    shown = sites
    if len(sites) > _MAX_SITE_ROWS:
        scored = [x for x in sites if arms["federated"]["per_site"][x["name"]].get(m) is not None]
        shown = sorted(scored, key=lambda x: arms["federated"]["per_site"][x["name"]][m])[:5]
        lines += [
            "",
            f"{len(sites)} sites, {len(scored)} with {m} defined (both classes in their test data); the 5 worst "
            "under the federated model:",
        ]
    lines += [
        "",
        f"{'site':<16} {'train':>7} {'test':>6} {'test pos':>8} {'federated':>10} {'centralised':>12} "
        f"{'local-only':>11}",
    ]
    for site in shown:
        s = site["name"]
        lines.append(
            f"{s:<16} {site['n_train']:>7} {site['n_test']:>6} {site['positives_test']:>8} "
            f"{_fmt(arms['federated']['per_site'][s].get(m)):>10} "
            f"{_fmt(arms['centralised']['per_site'][s].get(m)):>12} "
            f"{_fmt(arms['local_only']['per_site'][s].get(m)):>11}"
        )
    c = results["comparison"]
    fed = arms["federated"]
    lines += [
        "",
        f"federated / centralised {m}: {_fmt(c['federated_over_centralised'])}; federated beats local-only at "
        f"{c['sites_where_federated_beats_local']} of {c.get('sites_compared', len(sites))} sites; "
        f"{(fed['bytes_sent'] + fed['bytes_received']) / 1e6:.1f} MB exchanged.",
    ]
    part = fed.get("participation")
    if part and part.get("sampled"):
        eps = part.get("epochs_per_site", {})
        lines.append(
            f"participation: {part['replied']} of {part['sampled']} sampled replies ({part['dropped']} offline); "
            f"local epochs per site {eps.get('min')}-{eps.get('max')} (mean {eps.get('mean')})."
        )
    res = results.get("resources")
    if res:
        pss = res.get("peak_pss_bytes")
        lines.append(
            f"peak memory of the process tree ({res['peak_processes']} processes): "
            + (f"{pss / 2**30:.2f} GiB proportional, " if pss else "")
            + f"{res['peak_rss_bytes'] / 2**30:.2f} GiB resident (shared pages counted per process)."
        )
    comp = fed.get("compression")
    if comp and comp.get("codec") != "none":
        lines.append(
            f"updates sent as {comp['codec']}; {comp.get('train_bytes_received_per_round', 0) / 1e6:.2f} MB "
            "of updates per round."
        )
    return "\n".join(lines)


def seeds_table(stats: dict[str, Any], site_noun: str = "site") -> str:
    """Short human summary of a multi-seed run: each arm's mean and 95% interval, the paired verdicts."""
    m = stats["metric"]
    lines = ["", f"{stats['n_seeds']} seeds {stats['seeds']}; {m}: mean [95% confidence interval]", ""]
    lines.append(f"{'arm':<12} {'union':>26} {'mean over ' + site_noun + 's':>26} {'worst ' + site_noun:>26}")
    for arm in ARMS:
        a = stats["arms"][arm]
        lines.append(
            f"{arm:<12} {ci(a['union'], 4):>26} {ci(a['mean_over_sites'], 4):>26} {ci(a['worst_site_value'], 4):>26}"
        )
    lines.append("")
    for name, title in (("federated_vs_centralised", "centralised"), ("federated_vs_local_only", "local-only")):
        p = stats["paired"][name]["union"]
        if p["mean_difference"] is None:
            continue
        bounds = f" [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]" if p["ci_low"] is not None else ""
        pv = f", p = {p['p_value']:.3g}" if p["p_value"] is not None else ""
        lines.append(f"federated - {title}: {p['mean_difference']:+.4f}{bounds}{pv}: {p['verdict']}")
    worst = stats["worst_site"]
    if worst["site"]:
        lines.append(f"worst {site_noun} under the federated model: {worst['site']} {ci(worst['federated'], 4)}")
    worse = stats["sites_worse_off"]
    lines.append(f"{site_noun}s worse off federated than alone (beyond noise): {', '.join(worse) if worse else 'none'}")
    return "\n".join(lines)


def ranking_table(comparison: dict[str, Any]) -> str:
    """The ranking of a sweep, with the pairs that differ beyond noise."""
    r = comparison.get("ranking")
    if r is None:
        return "\nnot ranked: the runs share fewer than 2 seeds."
    lines = ["", f"federated {comparison['metric']} over seeds {comparison['seeds']} (rank 1 = best; ties share)"]
    for k in r["order"]:
        lines.append(f"  {r['ranks'][k]}. {k:<24} {ci(r['means'][k], 4)}")
    apart = [p for p in r["pairs"] if p["verdict"] in ("higher", "lower")]
    lines.append(
        "differences beyond noise (Holm-adjusted paired t-test): "
        + (
            "; ".join(
                f"{p['a'] if p['verdict'] == 'higher' else p['b']} > {p['b'] if p['verdict'] == 'higher' else p['a']}"
                f" (p = {p['p_holm']:.3g})"
                for p in apart
            )
            if apart
            else "none: every difference is within noise"
        )
    )
    return "\n".join(lines)
