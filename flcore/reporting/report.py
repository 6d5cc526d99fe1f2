"""Comparison reports from run folders: report.md, one self-contained report.html and comparison.json.

The report is built once as a list of blocks (:mod:`flcore.reporting.document`)
from the statistics in each folder's results.json, one run's sections coming from
:mod:`flcore.reporting.sections`, then written as Markdown and as HTML. Both show
the same numbers, which are those of results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flcore.experiment.results import clean, now_utc, suite_version, write_json, write_text
from flcore.experiment.seeds import RunFolder, RunFolderError, read_run_folder
from flcore.experiment.stats import rank
from flcore.reporting import plots
from flcore.reporting.deployed import deployed_blocks
from flcore.reporting.document import (
    Bullets,
    Figure,
    Heading,
    Para,
    Report,
    Table,
    ci,
    diff,
    megabytes,
    num,
    pval,
    spanned,
    to_html,
    to_markdown,
)
from flcore.reporting.sections import COST_CAPTION, EPS_CAPTION, run_blocks, site_noun

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
    deployed = [r for r in runs if r.summary.get("kind") == "federated-only"]
    if deployed:
        if len(runs) > 1:
            raise RunFolderError(
                f"{deployed[0].path} holds a deployed run (the federated arm only), which is reported alone: "
                "`flsuite report` it on its own, and compare runs of `flsuite run`."
            )
        run = deployed[0]
        title = f"flsuite report: {run.summary['scenario']}, deployed run"
        intro = Para(f"Written {now_utc()} by flsuite {suite_version()} from `{run.path / 'results.json'}`.")
        return Report(title, [intro, *deployed_blocks(run)])
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
