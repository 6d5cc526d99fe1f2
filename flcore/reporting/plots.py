"""The report's figures, drawn with matplotlib as inline SVG (text stays text; no file, no network)."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flcore.experiment.stats import ARMS, curve_of, interval

if TYPE_CHECKING:
    from flcore.experiment.seeds import RunFolder

#: Arm colours (colour-blind safe: Okabe-Ito) and names, the same in every figure.
ARM_STYLE = {
    "federated": ("#0072B2", "federated"),
    "centralised": ("#555555", "centralised"),
    "local_only": ("#E69F00", "local-only"),
}
#: One colour per compared run.
RUN_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000", "#F0E442")

_counter = itertools.count()


def _figure(width: float = 7.5, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def _svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element for inline HTML, with ids unique within the page."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    # Drop the XML declaration and DOCTYPE; the page's CSS scales the figure (it keeps its viewBox).
    text = text[text.index("<svg") :]
    # matplotlib names elements figure_1, axes_1, ... in every figure: prefix each id and every
    # reference to it, so that ids stay unique across the page.
    prefix = f"f{next(_counter)}-"
    return re.sub(r'(\sid="|url\(#|href="#)([^")]+)', lambda m: m.group(1) + prefix + m.group(2), text)


def _band(values: Sequence[Sequence[float | None]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-round mean and 95% interval over seeds (NaN where a round has no value)."""
    width = max((len(v) for v in values), default=0)
    mean, low, high = np.full(width, np.nan), np.full(width, np.nan), np.full(width, np.nan)
    for i in range(width):
        iv = interval([v[i] if i < len(v) else None for v in values])
        if iv["mean"] is not None:
            mean[i] = iv["mean"]
            low[i] = iv["ci_low"] if iv["ci_low"] is not None else iv["mean"]
            high[i] = iv["ci_high"] if iv["ci_high"] is not None else iv["mean"]
    return mean, low, high


def convergence(run: RunFolder) -> str:
    """The primary metric after every round, per arm: mean over seeds with its 95% band."""
    fig, axes = _figure()
    ax = axes[0][0]
    drawn = False
    for arm in ARMS:
        curves = [curve_of(r, arm) for r in run.runs]
        if not any(curves):
            continue
        mean, low, high = _band(curves)
        x = np.arange(1, len(mean) + 1)
        colour, name = ARM_STYLE[arm]
        ax.plot(x, mean, color=colour, label=name, marker="o" if len(x) <= 12 else None, ms=3)
        if len(run.runs) > 1:
            ax.fill_between(x, low, high, color=colour, alpha=0.18, linewidth=0)
        drawn = True
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (baselines: the same epochs per round)")
    ax.set_ylabel(run.statistics["metric"])
    ax.set_title(
        f"{run.label}: convergence"
        + (f" (mean and 95% interval over {len(run.runs)} seeds)" if len(run.runs) > 1 else " (one seed)")
    )
    if drawn:
        ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig)


def per_site(run: RunFolder, sites: Sequence[str]) -> str:
    """Per-site bars of the primary metric for the three arms, with 95% intervals over seeds."""
    stats = run.statistics
    fig, axes = _figure(width=max(6.0, min(12.0, 1.1 * len(sites) + 2)))
    ax = axes[0][0]
    x = np.arange(len(sites))
    width = 0.27
    for k, arm in enumerate(ARMS):
        colour, name = ARM_STYLE[arm]
        ivs = [stats["sites"][s][arm] for s in sites]
        mean = np.array([iv["mean"] if iv["mean"] is not None else np.nan for iv in ivs])
        err = np.array([iv["half_width"] or 0.0 for iv in ivs])
        ax.bar(x + (k - 1) * width, mean, width, color=colour, label=name, yerr=err if err.any() else None, capsize=2)
    ax.set_xticks(x, list(sites), rotation=30 if len(sites) > 6 else 0, ha="right" if len(sites) > 6 else "center")
    ax.set_ylabel(stats["metric"])
    finite = [
        iv["ci_low"] if iv["ci_low"] is not None else iv["mean"]
        for s in sites
        for arm in ARMS
        if (iv := stats["sites"][s][arm])["mean"] is not None
    ]
    if finite and max(finite) <= 1:  # bounded metrics (AUCs): zoom on the range the sites span
        ax.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.05))
    ax.set_title(f"{run.label}: per site" + (" (bars: 95% interval over seeds)" if len(run.runs) > 1 else ""))
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _point(iv: dict[str, Any] | None) -> tuple[float, float]:
    """Mean and the half-width of its 95% interval (0 without one)."""
    if not iv or iv["mean"] is None:
        return np.nan, 0.0
    return iv["mean"], iv["half_width"] or 0.0


def _spanned(iv: dict[str, Any] | None, scale: float = 1.0) -> tuple[float, np.ndarray]:
    """Mean and the distances to the smallest and largest value over seeds (costs are shown as ranges)."""
    if not iv or iv["mean"] is None:
        return np.nan, np.zeros((2, 1))
    m = iv["mean"] / scale
    values = [v / scale for v in iv["values"]] or [m]
    return m, np.array([[m - min(values)], [max(values) - m]])


def utility_vs_cost(runs: Sequence[RunFolder]) -> str:
    """The federated metric against megabytes exchanged, and every arm's metric against its wall time."""
    fig, axes = _figure(width=9.0, ncols=2)
    left, right = axes[0]
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        stats = run.statistics
        y, ye = _point(stats["arms"]["federated"]["union"])
        mb, mbe = _spanned(stats["costs"]["federated"]["bytes_total"], 1e6)
        left.errorbar(mb, y, xerr=mbe, yerr=ye, fmt="o", color=colour, capsize=3, label=run.label)
        for arm, marker in zip(ARMS, ("o", "s", "^"), strict=True):
            ay, aye = _point(stats["arms"][arm]["union"])
            t, te = _spanned(stats["costs"][arm]["wall_time_s"])
            name = ARM_STYLE[arm][1] + (f" ({run.label})" if len(runs) > 1 else "")
            c = colour if len(runs) > 1 else ARM_STYLE[arm][0]
            right.errorbar(t, ay, xerr=te, yerr=aye, fmt=marker, color=c, capsize=3, label=name)
    ref = runs[0].statistics["arms"]
    for arm in ("centralised", "local_only"):
        m = ref[arm]["union"]["mean"]
        if m is not None:
            colour, name = ARM_STYLE[arm]
            left.axhline(m, color=colour, ls="--", lw=1, label=f"{name} (no exchange)")
    metric = runs[0].statistics["metric"]
    left.set_xlabel("MB exchanged by the federation (sent + received)")
    left.set_ylabel(f"{metric} (union of test splits)")
    left.set_title("utility against communication")
    right.set_xlabel("wall time of the arm (s)")
    right.set_title("utility against time")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    return _svg(fig)


def utility_vs_epsilon(runs: Sequence[RunFolder]) -> str | None:
    """The federated metric against the privacy budget spent, for runs with differential privacy; else None."""
    private = [(i, r) for i, r in enumerate(runs) if r.statistics["costs"]["federated"].get("epsilon")]
    if not private:
        return None
    fig, axes = _figure(width=6.5)
    ax = axes[0][0]
    for i, run in private:
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        eps, epse = _spanned(run.statistics["costs"]["federated"]["epsilon"])
        y, ye = _point(run.statistics["arms"]["federated"]["union"])
        ax.errorbar(eps, y, xerr=epse, yerr=ye, fmt="o", color=colour, capsize=3, label=run.label)
    public = [(i, r) for i, r in enumerate(runs) if not r.statistics["costs"]["federated"].get("epsilon")]
    for i, run in public:
        m = run.statistics["arms"]["federated"]["union"]["mean"]
        if m is not None:
            ax.axhline(m, color=RUN_COLOURS[i % len(RUN_COLOURS)], ls=":", lw=1, label=f"{run.label} (no DP)")
    m = private[0][1].statistics["arms"]["centralised"]["union"]["mean"]
    if m is not None:
        ax.axhline(m, color=ARM_STYLE["centralised"][0], ls="--", lw=1, label="centralised (no DP)")
    ax.set_xlabel("epsilon spent per run (at the run's delta)")
    ax.set_ylabel(runs[0].statistics["metric"])
    ax.set_title("utility against privacy")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    return _svg(fig)
