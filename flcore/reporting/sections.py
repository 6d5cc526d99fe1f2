"""The sections of one run folder's report: summary, arms, paired comparisons, per site, costs, seeds, settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flcore.exceptions import UnknownNameError
from flcore.experiment.seeds import RunFolder
from flcore.experiment.stats import ARMS, HIGHER, LOWER, ONE_SEED, WITHIN_NOISE
from flcore.reporting import plots
from flcore.reporting.document import Bullets, Figure, Heading, Para, Table, ci, diff, megabytes, num, pval, spanned

#: Beyond this many sites the per-site table and bars show only the worst ones.
MAX_SITES = 12

COST_CAPTION = (
    "Vertical bars: 95% interval of the metric over seeds; horizontal bars: the range of the cost over seeds. "
    "Centralised and local-only exchange nothing (dashed lines)."
)
EPS_CAPTION = "Epsilon spent per run (range over seeds) against the federated metric (95% interval); lines: no DP."

#: Display names of the arms, as the figures show them.
ARM_NAMES = {arm: name for arm, (_, name) in plots.ARM_STYLE.items()}


def verdict_words(p: dict[str, Any], a: str, b: str) -> str:
    """A paired comparison in plain words."""
    v = p["verdict"]
    test = f"paired t-test p = {pval(p['p_value'])}, effect size d_z = {num(p['effect_size_dz'], 2)}, {p['n']} seeds"
    if v == WITHIN_NOISE:
        return f"**within noise**: the 95% interval of the difference includes 0 ({test})"
    if v == HIGHER:
        return f"**{a} is higher than {b} beyond noise** ({test})"
    if v == LOWER:
        return f"**{a} is lower than {b} beyond noise** ({test})"
    if v == ONE_SEED:
        return "one seed: no interval, no test (run with `--seeds 5`)"
    if v == "identical":
        return "identical at every seed"
    return "not defined"


def site_noun(scenario: str) -> str:
    """What the scenario calls a site (hospital, bank, device)."""
    from flcore import scenario as registry  # lazily: it loads torch and flwr, which a report never needs

    try:
        return str(registry.get(scenario).site_noun)
    except UnknownNameError:  # a results.json from a scenario not installed here
        return "site"


def _summary(run: RunFolder, noun: str) -> list[str]:
    s = run.statistics
    m = s["metric"]
    n = s["n_seeds"]
    arms = s["arms"]
    fc = s["paired"]["federated_vs_centralised"]
    fl = s["paired"]["federated_vs_local_only"]
    items = []
    if n == 1:
        items.append(
            "**One seed.** Every figure below is a single draw, without interval or test. "
            "Run with `--seeds 5` before drawing conclusions."
        )
    items.append(
        f"Federated {m} {ci(arms['federated']['union'])} against centralised {ci(arms['centralised']['union'])} "
        f"(ratio {ci(fc['ratio'])}); difference {diff(fc['union'])}: "
        + verdict_words(fc["union"], "federated", "centralised")
        + "."
    )
    items.append(
        f"Against each {noun} alone (mean over {noun}s): federated {ci(arms['federated']['mean_over_sites'])}, "
        f"local-only {ci(arms['local_only']['mean_over_sites'])}; difference {diff(fl['mean_over_sites'])}: "
        + verdict_words(fl["mean_over_sites"], "federated", "local-only")
        + "."
    )
    worst = s["worst_site"]
    if worst["site"]:
        local = s["sites"][worst["site"]]["local_only"]
        items.append(
            f"Worst {noun} under the federated model: **{worst['site']}**, {ci(worst['federated'])}; "
            f"alone it reaches {ci(local)}; gain {diff(worst['gain_over_local'])}: "
            + verdict_words(worst["gain_over_local"], "federated", "alone")
            + "."
        )
    scored = [k for k, v in s["sites"].items() if v["gain_over_local"]["n"]]
    worse, better = s["sites_worse_off"], s["sites_better_off"]
    if n > 1 and scored:
        items.append(
            (
                f"**{noun.capitalize()}s worse off federated than alone, beyond noise: {', '.join(worse)}.**"
                if worse
                else f"No {noun} is worse off federated than alone beyond noise."
            )
            + f" {len(better)} of {len(scored)} {noun}s gain beyond noise; "
            f"{len(scored) - len(better) - len(worse)} are within noise."
        )
    spread = s["spread"]
    items.append(
        f"Spread between the best and the worst {noun} ({m}): federated {ci(spread['federated'])}, "
        f"centralised {ci(spread['centralised'])}, local-only {ci(spread['local_only'])}."
    )
    c = s["costs"]
    rounds = run.summary.get("rounds")
    items.append(
        f"Cost of the federation per run: {megabytes(c['federated']['bytes_total'])} MB exchanged "
        f"({megabytes(c['federated']['bytes_sent'])} sent, {megabytes(c['federated']['bytes_received'])} received), "
        f"{spanned(c['federated']['wall_time_s'])} s (centralised {spanned(c['centralised']['wall_time_s'])} s, "
        f"local-only {spanned(c['local_only']['wall_time_s'])} s); 95% of its final {m} after "
        f"{spanned(c['federated']['rounds_to_95pct'])} of {rounds} rounds (mean, and range over seeds)."
    )
    eps = c["federated"].get("epsilon")
    if eps:
        cfg = run.summary.get("config", {})
        items.append(
            f"Privacy ({cfg.get('privacy')}): epsilon {spanned(eps, 3)} per run at delta {cfg.get('dp-delta')}; "
            f"the {n} seed(s) together spent epsilon {num(c['federated']['epsilon_all_seeds'], 3)} of each "
            f"{noun}'s budget where a ledger is kept (generated data charge no ledger)."
        )
    return items


def _arms_table(run: RunFolder, noun: str) -> Table:
    s = run.statistics
    secondary = sorted({k for arm in ARMS for k in s["arms"][arm]["secondary"]})
    header = ["arm", f"{s['metric']} (union)", f"mean over {noun}s", f"worst {noun} (each seed's)", *secondary]
    header.append("wall time s")
    rows = []
    for arm in ARMS:
        a = s["arms"][arm]
        rows.append(
            [
                ARM_NAMES[arm],
                ci(a["union"]),
                ci(a["mean_over_sites"]),
                ci(a["worst_site_value"]),
                *[ci(a["secondary"].get(k)) for k in secondary],
                spanned(s["costs"][arm]["wall_time_s"]),
            ]
        )
    return Table(header, rows)


def _paired_table(run: RunFolder, noun: str) -> Table:
    s = run.statistics
    header = ["comparison", "measure", "difference [95% CI]", "p (paired t)", "d_z", "seeds", "verdict"]
    rows = []
    for key, b in (("federated_vs_centralised", "centralised"), ("federated_vs_local_only", "local-only")):
        for measure, title in (("union", "union of test splits"), ("mean_over_sites", f"mean over {noun}s")):
            p = s["paired"][key][measure]
            rows.append(
                [
                    f"federated - {b}",
                    title,
                    diff(p),
                    pval(p["p_value"]),
                    num(p["effect_size_dz"], 2),
                    str(p["n"]),
                    str(p["verdict"]),
                ]
            )
    return Table(header, rows)


def shown_sites(run: RunFolder) -> list[str]:
    """The sites a report lists: all of them, or the worst ``MAX_SITES`` under the federated model."""
    sites = run.statistics["sites"]
    names = list(sites)
    if len(names) <= MAX_SITES:
        return names
    scored = [n for n in names if sites[n]["federated"]["mean"] is not None]
    return sorted(scored, key=lambda n: sites[n]["federated"]["mean"])[:MAX_SITES]


def _sites_table(run: RunFolder, sites: Sequence[str], noun: str) -> Table:
    s = run.statistics
    info = {x["name"]: x for x in run.runs[0]["data"]["sites"]}
    header = [noun, "train", "test", "positives (test)", "federated", "centralised", "local-only"]
    header += ["federated gain over alone", "verdict"]
    rows = []
    for name in sites:
        site = s["sites"][name]
        i = info.get(name, {})
        rows.append(
            [
                name,
                str(i.get("n_train", "")),
                str(i.get("n_test", "")),
                str(i.get("positives_test", "")),
                ci(site["federated"]),
                ci(site["centralised"]),
                ci(site["local_only"]),
                diff(site["gain_over_local"]),
                str(site["gain_over_local"]["verdict"]),
            ]
        )
    return Table(header, rows)


def _costs_table(run: RunFolder) -> Table:
    c = run.statistics["costs"]
    header = ["arm", "wall time s", "MB sent", "MB received", "epsilon per run", "rounds to 95% of final"]
    header = [header[0], *(f"{h}: mean (range over seeds)" for h in header[1:])]
    rows = []
    for arm in ARMS:
        a = c[arm]
        rows.append(
            [
                ARM_NAMES[arm],
                spanned(a["wall_time_s"]),
                megabytes(a.get("bytes_sent")) if arm == "federated" else "0 (no exchange)",
                megabytes(a.get("bytes_received")) if arm == "federated" else "0 (no exchange)",
                spanned(a.get("epsilon"), 3) if a.get("epsilon") else "none (no DP)",
                spanned(a["rounds_to_95pct"]),
            ]
        )
    return Table(header, rows)


def _seeds_table(run: RunFolder, noun: str) -> Table:
    m = run.statistics["metric"]
    header = ["seed", f"federated {m}", "centralised", "local-only", f"worst {noun} (federated)", "MB", "file"]
    files = {e["seed"]: e["results"] for e in run.summary.get("runs", [])}
    rows = []
    for r in run.runs:
        arms = r["arms"]
        worst = arms["federated"]["worst_site"]
        fed = arms["federated"]
        rows.append(
            [
                str(r["seed"]),
                num(arms["federated"]["union"].get(m)),
                num(arms["centralised"]["union"].get(m)),
                num(arms["local_only"]["union"].get(m)),
                f"{worst['site']} {num(worst['value'])}" if worst["site"] else "n/a",
                f"{(fed['bytes_sent'] + fed['bytes_received']) / 1e6:.2f}",
                files.get(r["seed"], "results.json"),
            ]
        )
    return Table(header, rows)


def run_blocks(run: RunFolder, level: int = 2, with_cost_figure: bool = True) -> list[Any]:
    """Every section of one run folder's report."""
    noun = site_noun(run.summary["scenario"])
    s = run.statistics
    h = level
    blocks: list[Any] = [
        Heading(h, "Summary"),
        Bullets(_summary(run, noun)),
        Heading(h, "Arms"),
        Para(
            f"{s['metric']} on held-out test data, mean over {s['n_seeds']} seed(s)"
            + (" with the 95% confidence interval in brackets." if s["n_seeds"] > 1 else ".")
        ),
        _arms_table(run, noun),
        Heading(h, "Paired comparisons"),
        Para(
            "Each seed gives the arms the same data split, so they are compared seed by seed: the mean of the "
            "per-seed differences, its 95% interval, the paired t-test and Cohen's d_z (mean difference over "
            "the standard deviation of the differences). **Within noise** means the interval includes 0."
        ),
        _paired_table(run, noun),
        Heading(h, "Convergence"),
        Figure("convergence", plots.convergence(run), _curve_caption(run)),
    ]
    sites = shown_sites(run)
    total = len(s["sites"])
    blocks += [
        Heading(h, f"Per {noun}"),
        Para(
            f"The federated gain over a {noun} alone is its federated {s['metric']} minus its local-only one, "
            f"paired over seeds."
            + (
                f" {total} {noun}s; the {len(sites)} worst under the federated model are listed "
                "(all of them are in results.json)."
                if len(sites) < total
                else ""
            )
        ),
        _sites_table(run, sites, noun),
        Figure(f"per {noun}", plots.per_site(run, sites)),
        Heading(h, "Costs"),
        _costs_table(run),
    ]
    if with_cost_figure:
        blocks.append(Figure("utility against cost", plots.utility_vs_cost([run]), COST_CAPTION))
        eps = plots.utility_vs_epsilon([run])
        if eps:
            blocks.append(Figure("utility against privacy", eps, EPS_CAPTION))
    blocks += _collective_blocks(run, h)
    blocks += [Heading(h, "Per seed"), _seeds_table(run, noun), Heading(h, "Settings"), Para(_settings(run))]
    return blocks


def _collective_blocks(run: RunFolder, h: int) -> list[Any]:
    """fedxgb-hist: the communicator's traffic per site and per tree, and who could see what."""
    records = [r["arms"]["federated"]["collective"] for r in run.runs if r["arms"]["federated"].get("collective")]
    if not records:
        return []
    first = records[0]
    noun = site_noun(run.summary["scenario"])
    rows = []
    for site in first["per_site"]:
        entries = [rec["per_site"][site] for rec in records if site in rec["per_site"]]
        mean = {
            k: sum(e[k] for e in entries) / len(entries) for k in ("bytes_sent", "bytes_received", "session_seconds")
        }
        per_tree = sum(e["bytes_per_tree"] for e in entries) / len(entries)
        rows.append(
            [
                site,
                f"{mean['bytes_sent'] / 1e6:.1f}" if first["bytes_measured"] else "not measured",
                f"{mean['bytes_received'] / 1e6:.1f}" if first["bytes_measured"] else "not measured",
                f"{per_tree / 1e3:.0f}" if first["bytes_measured"] else "not measured",
                f"{mean['session_seconds']:.1f}",
            ]
        )
    trust = first["trust"]
    return [
        Heading(h, "Histogram-based XGBoost: traffic and who sees what"),
        Para(
            f"{first['trees']} trees, {first['trees_per_round']} a round, {first['max_bin']} bins per feature, over "
            f"{first['communicator']}. Bytes are counted by the kernel on each {noun}'s communicator sockets "
            f"(mean over {len(records)} seed(s)); the model sent with each round's Flower messages is in the costs "
            "above. Seconds per tree, coordinator's view: "
            + ", ".join(f"{rec['seconds_per_tree']:.3f}" for rec in records if rec["seconds_per_tree"] is not None)
            + "."
        ),
        Table([noun, "MB sent", "MB received", "kB per tree (both ways)", "session seconds"], rows),
        Bullets(
            [
                f"**The coordinator** {trust['coordinator']}",
                f"**The other {noun}s** {trust['other_sites']}",
                f"**Not protected:** {trust['not_protected']}",
                f"**The exported model** holds {trust['exported_model']}",
                "**Hardening:** " + "; ".join(str(v) for v in first["hardening"].values() if v is not True) + ".",
            ]
        ),
    ]


def _curve_caption(run: RunFolder) -> str:
    for r in run.runs:
        d = r["arms"]["federated"].get("curve", {}).get("definition")
        if d:
            return f"Per round: {d}."
    return "Per round: the federated evaluate round (baselines were not recorded per round in this run)."


def _settings(run: RunFolder) -> str:
    cfg = run.summary.get("config", {})
    keys = ("strategy", "num-server-rounds", "local-epochs", "fraction-train", "learning-rate", "privacy")
    shown = ", ".join(f"`{k}={cfg[k]}`" for k in keys if k in cfg)
    seeds = run.statistics["seeds"]
    return (
        f"Scenario `{run.summary['scenario']}` ({run.summary.get('domain')}), seeds {seeds}; {shown}. "
        f"Data: {run.runs[0]['data']['source']}. Every setting is in `{run.path / 'results.json'}`."
    )
