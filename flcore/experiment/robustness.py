"""Robust aggregation under attack: every strategy against every simulated attack, in one table.

``flsuite robustness SCENARIO`` reads (or generates) the sites once, passes the
governance gate once, then runs the federated arm for each strategy, clean and
under each attack (:mod:`flcore.federation.mods.attack`), on the same data, seed and settings.
Each global model is scored on the sites' held-out test splits. The table gives
the primary metric and its ratio to the same strategy's clean run; a strategy
*holds* an attack when it keeps at least ``hold`` (0.9) of its clean value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flcore.config import ROBUSTNESS_ATTACKS, ROBUSTNESS_STRATEGIES, to_dict
from flcore.experiment.federate import federate
from flcore.experiment.gate import gate
from flcore.experiment.prepare import prepare_data
from flcore.experiment.results import environment, now_utc, suite_version, write_json, write_text
from flcore.federation.engines import engine_for
from flcore.federation.mods.attack import choose_attackers
from flcore.federation.preflight import check_federation
from flcore.federation.rounds import QuorumError
from flcore.governance.policy import GovernancePolicy
from flcore.governance.siteguard import resolve_privacy
from flcore.scenario import Scenario

DEFAULT_STRATEGIES = ROBUSTNESS_STRATEGIES
DEFAULT_ATTACKS = ROBUSTNESS_ATTACKS
HOLD = 0.9


def run_robustness(
    scenario: Scenario,
    values: dict[str, Any],
    strategies: list[str],
    attacks: list[str],
    data_dir: Path | None = None,
    progress: Callable[[str], None] = print,
    policy: GovernancePolicy | None = None,
    engine: str = "simulation",
) -> dict[str, Any]:
    """Run every strategy clean and under every attack; return the table's content.

    Parameters
    ----------
    values : dict
        Settings for every run (``--set``); ``strategy`` and ``attack`` are set per cell.
    strategies, attacks : list of str
        What to compare; the clean run (``attack=none``) is always included.
    engine : str
        ``"simulation"`` (Flower's simulation engine, on Ray) or ``"inprocess"``
        (the same apps in this process, no Ray).

    Raises
    ------
    ConfigError
        For an unknown attack, strategy or engine, or a combination the federation
        cannot run, before any training.
    """
    engine_for(engine)  # an unknown engine fails before any work
    attacks = ["none", *[a for a in attacks if a != "none"]]
    policy = policy or scenario.policy
    # Configuring every cell first refuses an unknown attack (a setting with choices) before any work.
    configured = {
        (s, a): scenario.configure({**values, "strategy": s, "attack": a}) for s in strategies for a in attacks
    }
    params = configured[(strategies[0], "none")][1]
    cells = {key: resolve_privacy(cfg, policy) for key, (cfg, _) in configured.items()}
    cfg0 = cells[(strategies[0], "none")]
    prepared = prepare_data(scenario, cfg0, data_dir, progress, params, policy)
    splits = prepared.splits
    for cfg in cells.values():  # every cell must be runnable before the first one trains
        check_federation(cfg, len(splits))
    gate(scenario, cfg0, params, prepared.governance, policy)
    task = scenario.make_task(params)
    primary = task.primary_metric
    rows: dict[str, dict[str, Any]] = {}
    total = len(cells)
    for i, ((strategy, attack), cfg) in enumerate(cells.items(), start=1):
        progress(f"[{i}/{total}] {strategy} under " + ("no attack" if attack == "none" else f"attack={attack}"))
        t0 = time.perf_counter()
        try:
            outcome, arm = federate(scenario, cfg, params, prepared, engine=engine, task=task)
        except QuorumError as err:
            # A rule that cannot keep its quorum of usable updates under an attack (Krum needs 2f+3) is a
            # finding of the comparison, not a failure of it: the cell records where and why the run stopped.
            rows.setdefault(strategy, {})[attack] = _stopped_cell(err, cfg, [s.name for s in splits], t0)
            progress(f"      stopped in round {err.server_round}: {err}")
            continue
        rejected = sum(arm["rejected_updates"].values())
        cell = {
            "union": arm["union"].get(primary),
            "mean_over_sites": arm["mean_over_sites"].get(primary),
            "worst_site": arm["worst_site"],
            "attackers": outcome.attackers,
            "rejected_updates": rejected,
            "wall_time_s": round(time.perf_counter() - t0, 2),
            "final_model": arm["history"][-1]["aggregate_hash"] if arm["history"] else None,
            "stopped": None,
        }
        rows.setdefault(strategy, {})[attack] = cell
        shown = "n/a" if cell["union"] is None else f"{cell['union']:.4f}"
        progress(f"      {primary} {shown}, {rejected} update(s) rejected, {cell['wall_time_s']:.0f} s")
    for row in rows.values():
        clean = row["none"]["union"]
        for attack, cell in row.items():
            value = cell["union"]
            cell["ratio_to_clean"] = value / clean if value is not None and clean else None
            cell["holds"] = (
                None if attack == "none" or cell["ratio_to_clean"] is None else cell["ratio_to_clean"] >= HOLD
            )
    return {
        "suite_version": suite_version(),
        "created_utc": now_utc(),
        "scenario": scenario.name,
        "primary_metric": primary,
        "hold_threshold": HOLD,
        "config": to_dict(cfg0),
        "params": to_dict(params),
        "attack_settings": {
            "sites": cfg0.attack_sites,
            "factor": cfg0.attack_factor,
            "noise_std": cfg0.attack_noise,
        },
        "data": {"source": prepared.source, "sites": [s.name for s in splits]},
        "environment": environment(),
        "strategies": strategies,
        "attacks": attacks,
        "table": rows,
    }


def _stopped_cell(err: QuorumError, cfg: Any, sites: list[str], t0: float) -> dict[str, Any]:
    """The cell of a run that lost its quorum: no model to score, the reason instead."""
    attackers = choose_attackers(sorted(sites), cfg.attack_sites, cfg.seed) if cfg.attack != "none" else []
    return {
        "union": None,
        "mean_over_sites": None,
        "worst_site": {"site": None, "value": None},
        "attackers": attackers,
        "rejected_updates": None,  # the run's earlier rounds are not known here; the stopped round's are below
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "final_model": None,
        "stopped": {"round": err.server_round, "rejected": err.rejected, "reason": str(err)},
    }


def table_markdown(result: dict[str, Any]) -> str:
    """The comparison as a markdown table: metric, ratio to clean, and whether the strategy holds."""
    primary, attacks = result["primary_metric"], result["attacks"]
    settings = result["attack_settings"]
    lines = [
        f"# Robust aggregation under attack: {result['scenario']}",
        "",
        f"{primary} of the global model on the sites' held-out test data (union of sites); in brackets, the ratio "
        f"to the same strategy without attack. {settings['sites']} attacking site(s) every round; scale and "
        f"sign-flip by x{settings['factor']:g}, noise of standard deviation {settings['noise_std']:g}. "
        f"A strategy holds an attack (yes) when it keeps at least {result['hold_threshold']:g} of its clean value. "
        "Non-finite updates (nan, inf) are rejected by the server whatever the strategy; a run whose round keeps "
        "fewer usable updates than the strategy's quorum stops there (quorum lost).",
        "",
        "| strategy | " + " | ".join("clean" if a == "none" else a for a in attacks) + " |",
        "|---|" + "---|" * len(attacks),
    ]
    for strategy, row in result["table"].items():
        cells = []
        for attack in attacks:
            c = row[attack]
            if c.get("stopped"):
                cells.append(f"stopped in round {c['stopped']['round']} (quorum lost)")
            elif c["union"] is None:
                cells.append("n/a")
            elif attack == "none":
                cells.append(f"{c['union']:.3f}")
            else:
                verdict = "yes" if c["holds"] else "no"
                rejected = f", {c['rejected_updates']} rejected" if c["rejected_updates"] else ""
                cells.append(f"{c['union']:.3f} ({c['ratio_to_clean']:.2f}, {verdict}{rejected})")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    attackers = sorted({s for row in result["table"].values() for c in row.values() for s in c["attackers"]})
    lines += [
        "",
        f"Attacking site(s): {', '.join(attackers) or 'none'}. Rounds: {result['config']['num-server-rounds']}, "
        f"seed {result['config']['seed']}, data: {result['data']['source']}.",
    ]
    return "\n".join(lines) + "\n"


def table_csv(result: dict[str, Any]) -> str:
    """One line per strategy and attack."""
    rows = ["strategy,attack,metric,value,ratio_to_clean,holds,rejected_updates"]
    for strategy, row in result["table"].items():
        for attack, c in row.items():
            value = "" if c["union"] is None else f"{c['union']:.6f}"
            ratio = "" if c["ratio_to_clean"] is None else f"{c['ratio_to_clean']:.6f}"
            holds = "" if c["holds"] is None else str(c["holds"]).lower()
            rejected = "" if c["rejected_updates"] is None else c["rejected_updates"]
            rows.append(f"{strategy},{attack},{result['primary_metric']},{value},{ratio},{holds},{rejected}")
    return "\n".join(rows) + "\n"


def write_robustness(result: dict[str, Any], out: Path) -> list[Path]:
    """``robustness.json``, ``robustness.md`` and ``robustness.csv`` in ``out``, each written atomically."""
    return [
        write_json(out / "robustness.json", result),
        write_text(out / "robustness.md", table_markdown(result)),
        write_text(out / "robustness.csv", table_csv(result)),
    ]
