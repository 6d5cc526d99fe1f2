"""Comparison reports from run folders: report.md and one self-contained report.html.

A report is built once as a list of blocks (headings, paragraphs, tables, figures)
from the statistics in each folder's results.json, then written twice: as Markdown
(tables and text) and as HTML with the figures inline as SVG, styles inline, no
script and no link to anything outside the file. Both show the same numbers, which
are those of results.json.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flcore.exceptions import UnknownNameError
from flcore.experiment.results import clean, now_utc, suite_version, write_json, write_text
from flcore.experiment.seeds import RunFolder, RunFolderError, read_run_folder
from flcore.experiment.stats import ARMS, HIGHER, LOWER, ONE_SEED, WITHIN_NOISE, rank
from flcore.reporting import plots

#: Beyond this many sites the per-site table and bars show only the worst ones.
MAX_SITES = 12

COST_CAPTION = (
    "Vertical bars: 95% interval of the metric over seeds; horizontal bars: the range of the cost over seeds. "
    "Centralised and local-only exchange nothing (dashed lines)."
)
EPS_CAPTION = "Epsilon spent per run (range over seeds) against the federated metric (95% interval); lines: no DP."

#: Display names of the arms, as the figures show them.
ARM_NAMES = {arm: name for arm, (_, name) in plots.ARM_STYLE.items()}


# -- blocks -------------------------------------------------------------------------------


@dataclass
class Heading:
    """A section heading (level 2 or 3)."""

    level: int
    text: str


@dataclass
class Para:
    """A paragraph; ``**bold**`` and ```code``` marks."""

    text: str


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Table:
    """A table of formatted cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    """An inline SVG figure with its caption."""

    title: str
    svg: str
    caption: str = ""


@dataclass
class Report:
    """The blocks of a report, and what the comparison of several runs found (for comparison.json)."""

    title: str
    blocks: list[Any] = field(default_factory=list)
    comparison: dict[str, Any] | None = None


# -- number formatting: one place, so that report.md and report.html agree ---------------------


def num(v: float | None, digits: int = 3) -> str:
    """A metric value, or ``n/a``."""
    return "n/a" if v is None else f"{v:.{digits}f}"


def ci(iv: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean [low, high]``; the mean alone when there is no interval (one seed)."""
    if not iv or iv["mean"] is None:
        return "n/a"
    if iv["ci_low"] is None:
        return num(iv["mean"], digits)
    return f"{num(iv['mean'], digits)} [{num(iv['ci_low'], digits)}, {num(iv['ci_high'], digits)}]"


def signed(v: float | None, digits: int = 3) -> str:
    """A difference with its sign."""
    return "n/a" if v is None else f"{v:+.{digits}f}"


def diff(p: dict[str, Any], digits: int = 3) -> str:
    """A paired difference with its interval."""
    if p["mean_difference"] is None:
        return "n/a"
    if p["ci_low"] is None:
        return signed(p["mean_difference"], digits)
    return f"{signed(p['mean_difference'], digits)} [{signed(p['ci_low'], digits)}, {signed(p['ci_high'], digits)}]"


def pval(p: float | None) -> str:
    """A p-value, ``<0.001`` below that."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def spanned(iv: dict[str, Any] | None, digits: int = 1, scale: float = 1.0) -> str:
    """A cost over seeds: ``mean (min-max)``; the mean alone when every seed gives the same value."""
    if not iv or iv["mean"] is None:
        return "n/a"
    values = [v / scale for v in iv["values"]]
    mean = num(iv["mean"] / scale, digits)
    low, high = num(min(values), digits), num(max(values), digits)
    return mean if low == high else f"{mean} ({low}-{high})"


def megabytes(iv: dict[str, Any] | None) -> str:
    """Bytes over seeds, in MB, as :func:`spanned`."""
    return spanned(iv, 2, 1e6)


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
    from flcore import scenario as registry

    try:
        return str(registry.get(scenario).site_noun)
    except UnknownNameError:  # a results.json from a scenario not installed here
        return "site"


# -- one run folder ----------------------------------------------------------------------


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
    blocks += [Heading(h, "Per seed"), _seeds_table(run, noun), Heading(h, "Settings"), Para(_settings(run))]
    return blocks


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


# -- several run folders -------------------------------------------------------------------------


def _labels(runs: Sequence[RunFolder]) -> list[str]:
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.label} ({r.path.name})" for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.label} ({r.path})" for r in runs]
    return labels


def compare_runs(runs: Sequence[RunFolder], labels: Sequence[str]) -> dict[str, Any] | None:
    """Rank runs of one scenario over the seeds they share; ``None`` when they cannot be compared."""
    if len({r.summary["scenario"] for r in runs}) != 1 or len({r.statistics["metric"] for r in runs}) != 1:
        return None
    metric = runs[0].statistics["metric"]
    common = sorted(set.intersection(*(set(r.statistics["seeds"]) for r in runs)))
    if len(common) < 2:
        return {"metric": metric, "seeds": common, "ranking": None}
    by_seed = [{int(x["seed"]): x["arms"]["federated"]["union"].get(metric) for x in r.runs} for r in runs]
    groups = {label: [values[s] for s in common] for label, values in zip(labels, by_seed, strict=True)}
    return {"metric": metric, "seeds": common, "ranking": rank(groups)}


def _comparison_blocks(runs: Sequence[RunFolder], labels: Sequence[str], comparison: dict[str, Any] | None) -> list:
    metric = runs[0].statistics["metric"]
    noun = site_noun(runs[0].summary["scenario"])
    header = ["run", "folder", "seeds", f"federated {metric}", "federated / centralised", f"worst {noun} (federated)"]
    header += ["MB exchanged", "wall time s", "epsilon"]
    rows = []
    for label, run in zip(labels, runs, strict=True):
        s = run.statistics
        worst = s["worst_site"]
        eps = s["costs"]["federated"].get("epsilon")
        rows.append(
            [
                label,
                str(run.path),
                str(s["n_seeds"]),
                ci(s["arms"]["federated"]["union"]),
                ci(s["paired"]["federated_vs_centralised"]["ratio"]),
                f"{worst['site']} {ci(worst['federated'])}" if worst["site"] else "n/a",
                megabytes(s["costs"]["federated"]["bytes_total"]),
                spanned(s["costs"]["federated"]["wall_time_s"]),
                spanned(eps, 3) if eps else "none",
            ]
        )
    blocks: list[Any] = [Heading(2, "Runs compared"), Table(header, rows)]
    blocks.append(Heading(2, "Ranking"))
    if comparison is None:
        blocks.append(Para("The runs are of different scenarios or metrics: they are shown side by side, not ranked."))
    elif comparison["ranking"] is None:
        blocks.append(
            Para(
                f"The runs share {len(comparison['seeds'])} seed(s); a ranking needs at least 2 shared seeds "
                "(run each with the same `--seed` and `--seeds 5`). Side by side only."
            )
        )
    else:
        blocks += _ranking_blocks(comparison)
    blocks.append(Figure("utility against cost", plots.utility_vs_cost(runs), COST_CAPTION))
    eps_fig = plots.utility_vs_epsilon(runs)
    if eps_fig:
        blocks.append(Figure("utility against privacy", eps_fig, EPS_CAPTION))
    return blocks


def _ranking_blocks(comparison: dict[str, Any]) -> list[Any]:
    r = comparison["ranking"]
    m = comparison["metric"]
    rows = [[str(r["ranks"][k]), k, ci(r["means"][k])] for k in r["order"]]
    pairs = [
        [
            f"{p['a']} - {p['b']}",
            diff(p),
            pval(p["p_value"]),
            pval(p["p_holm"]),
            num(p["effect_size_dz"], 2),
            p["verdict"],
        ]
        for p in r["pairs"]
    ]
    tied = r["tied_with_best"]
    words = (
        f"Nothing separates {'; '.join(tied)} beyond noise: they share the top rank."
        if len(tied) > 1
        else f"{tied[0]} alone has the top rank: every other run is behind at least one run beyond noise."
    )
    return [
        Para(
            f"Federated {m} over the {len(comparison['seeds'])} seeds every run shares ({comparison['seeds']}), "
            f"compared seed by seed ({r['method']}). A run ranks below another only where the difference exceeds "
            f"noise; runs nothing separates share a rank. {words}"
        ),
        Table(["rank", "run", f"federated {m}"], rows),
        Table(["pair", "difference [95% CI]", "p", "p (Holm)", "d_z", "verdict"], pairs),
    ]


# -- building and writing ----------------------------------------------------------------------------


def build_report(folders: Sequence[Path]) -> Report:
    """Read the run folders and lay out the report's blocks."""
    if not folders:
        raise RunFolderError("name at least one run folder (written by `flsuite run`).")
    runs = [read_run_folder(Path(f)) for f in folders]
    labels = _labels(runs)
    first = runs[0]
    metric = first.statistics["metric"]
    scenarios = sorted({r.summary["scenario"] for r in runs})
    title = f"flsuite report: {', '.join(scenarios)}" + (f", {len(runs)} runs compared" if len(runs) > 1 else "")
    intro = Para(
        f"Written {now_utc()} by flsuite {suite_version()} from "
        + ", ".join(f"`{r.path / 'results.json'}`" for r in runs)
        + f". Primary metric: **{metric}**, on every {site_noun(first.summary['scenario'])}'s held-out test split "
        "(never training data). Intervals are two-sided 95% Student-t intervals over seeds; each seed changes "
        "the data split, the initial weights and the sampling."
    )
    report = Report(title, [intro])
    if len(runs) == 1:
        report.blocks += run_blocks(first)
    else:
        report.comparison = compare_runs(runs, labels)
        report.blocks += _comparison_blocks(runs, labels, report.comparison)
        for label, run in zip(labels, runs, strict=True):
            report.blocks.append(Heading(2, f"Run: {label}"))
            report.blocks += run_blocks(run, level=3, with_cost_figure=False)
    report.blocks += [
        Heading(2, "How to read this report"),
        Bullets(
            [
                "**federated**: the sites train together (Flower simulation engine); **centralised**: all training "
                "splits pooled, the reference a federation tries to match; **local-only**: each site alone. Same "
                "model, hyperparameters and epoch budget in every arm.",
                "**union**: the metric on all sites' test splits together; **mean over sites**: the plain mean of "
                "the per-site values; **worst site**: the lowest per-site value.",
                "**[low, high]**: the 95% confidence interval of the mean over seeds (t distribution, n - 1 degrees "
                "of freedom). With one seed there is none.",
                "**within noise**: the interval of a paired difference includes 0 (equivalently, paired t-test "
                "p >= 0.05). Such a difference is not evidence either way.",
                "**rounds to 95% of final**: the first round whose per-round metric reaches 95% of the last round's.",
            ]
        ),
    ]
    return report


def _md_table(t: Table) -> str:
    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in t.header) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    """The report as Markdown; figures are named and left to report.html."""
    out = [f"# {report.title}"]
    for b in report.blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            out.append(_md_table(b))
        elif isinstance(b, Figure):
            out.append(f"_Figure: {b.title} (in report.html)._" + (f" {b.caption}" if b.caption else ""))
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then the two Markdown marks the blocks use: **bold** and `code`."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a1a1a}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}code{background:#f3f3f3;padding:0 .2em}
nav{font-size:.9em;background:#f7f7f7;padding:.5em 1em}
"""


def to_html(report: Report) -> str:
    """The report as one HTML file: inline styles and SVG figures, no script, nothing fetched."""
    body, toc = [], []
    for i, b in enumerate(report.blocks):
        if isinstance(b, Heading):
            anchor = f"s{i}"
            if b.level == 2:
                toc.append(f'<a href="#{anchor}">{_inline(b.text)}</a>')
            body.append(f'<h{b.level} id="{anchor}">{_inline(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            caption = f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else ""
            body.append(f'<figure class="plot" data-title="{html.escape(b.title)}">{b.svg}{caption}</figure>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_inline(report.title)}</h1>\n<nav>{' · '.join(toc)}</nav>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_report(folders: Sequence[Path], out: Path) -> list[Path]:
    """Build the report of ``folders`` and write it to ``out`` (see :func:`save_report`); the paths written."""
    return save_report(build_report(folders), out)


def save_report(report: Report, out: Path) -> list[Path]:
    """Write report.md and report.html (and comparison.json for several runs) to ``out``; their paths."""
    out = Path(out)
    paths = [write_text(out / "report.md", to_markdown(report)), write_text(out / "report.html", to_html(report))]
    if report.comparison is not None:
        paths.append(write_json(out / "comparison.json", clean(report.comparison)))
    return paths
