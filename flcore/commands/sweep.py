"""`flsuite sweep` and `robustness`: compare strategies over the same seeds, or under simulated attacks."""

from __future__ import annotations

import argparse
from pathlib import Path

from flcore.commands.common import configured, progress, run_values
from flcore.commands.preflight import preflight_run
from flcore.commands.run import cmd_run
from flcore.exceptions import ConfigError
from flcore.outputs import check_output_dir
from flcore.reporting import report
from flcore.reporting.console import ranking_table


def cmd_sweep(args: argparse.Namespace) -> int:
    """`flsuite sweep SCENARIO --strategies a,b,c --seeds N`: each strategy over the same seeds, ranked."""
    from flcore import scenario
    from flcore.federation.strategies import get_spec

    sc = scenario.get(args.scenario)
    strategies = list(dict.fromkeys(s.strip() for s in args.strategies.split(",") if s.strip()))
    if len(strategies) < 2:
        raise ConfigError(f"--strategies needs at least two strategies to compare; got {args.strategies!r}.")
    for name in strategies:
        get_spec(name)  # an unknown name fails before any run
    out = check_output_dir(args.out or f"runs/{sc.name}-sweep", what="the sweep's report and one folder per strategy")
    runs = []
    for name in strategies:
        one = argparse.Namespace(
            **{
                **vars(args),
                "strategy": name,
                "out": str(out / name),
                "resume": None,
                "audit": None,
                "no_report": False,
                "force": args.force,
            }
        )
        _, cfg, _, _ = configured(one)
        preflight_run(one, sc, cfg, None, out / name)  # every strategy's folder, before the first run
        runs.append(one)
    folders = []
    for name, one in zip(strategies, runs, strict=True):
        print(f"\n=== strategy {name} ({strategies.index(name) + 1} of {len(strategies)}) ===", flush=True)
        cmd_run(one)
        folders.append(out / name)
    ranked = report.build_report(folders)
    paths = report.save_report(ranked, out)
    if ranked.comparison is not None:
        print(ranking_table(ranked.comparison))
    print("\nreport: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    """`flsuite robustness SCENARIO`: strategies against simulated attacks, one table."""
    from flcore import scenario
    from flcore.experiment.robustness import run_robustness, table_markdown, write_robustness
    from flcore.governance.policy import load_policy

    sc = scenario.get(args.scenario)
    values = run_values(args)  # --strategies, not --strategy: each cell sets its own
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    out = check_output_dir(
        args.out or f"runs/{sc.name}-robustness", what="the robustness table (robustness.json, .md and .csv)"
    )
    policy = load_policy(args.policy, sc.policy) if args.policy else None
    say = progress(args.quiet)
    data = Path(args.data) if args.data else None
    result = run_robustness(sc, values, strategies, attacks, data, say, policy, engine=args.engine)
    paths = write_robustness(result, out)
    print(table_markdown(result))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0
