"""`flsuite run`: one seed's three arms or several seeds', their summary table, results.json and the report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flcore.commands.common import configured, governance_args, progress, resume_folder, run_values
from flcore.commands.preflight import finished_seed, preflight_run
from flcore.exceptions import ConfigError
from flcore.experiment.results import write_json
from flcore.experiment.seeds import run_seeds, seed_list, with_statistics
from flcore.reporting.console import seeds_table, summary_table
from flcore.reporting.report import write_report
from flcore.scenario import synthetic_data


def cmd_run(args: argparse.Namespace) -> int:
    """`flsuite run SCENARIO [--seeds N]`: the three arms, a summary table, results.json and the report."""
    sc, cfg, params, resume = configured(args)
    out = Path(args.out) if args.out else resume_folder(args) or Path(f"runs/{sc.name}")
    say = progress(args.quiet)
    if args.seeds is not None and args.seeds != 1 and resume is not None:
        raise ConfigError(
            "--resume continues one seed's run; it cannot be combined with --seeds. Resume the seed that "
            f"stopped (flsuite run {sc.name} --resume OUT/seed-S --out OUT/seed-S), then write the summary "
            "again with the same --seeds command and --out, which reuses finished seeds."
        )
    preflight_run(args, sc, cfg, resume, out)
    if args.seeds is not None and args.seeds != 1:
        return _run_seeds(args, sc, cfg.seed, out, say)
    results = _run_one(args, sc, cfg, params, resume, out, say)
    results = with_statistics(results)
    path = write_json(out / "results.json", results)
    print(summary_table(results))
    print(f"\nresults: {path}")
    _write_report_after_run(args, out)
    return 0


def _run_one(
    args: argparse.Namespace,
    sc: Any,
    cfg: Any,
    params: Any,
    resume: Any,
    out: Path,
    say: Any,
    audit_dir: Path | None = None,
) -> dict[str, Any]:
    """One seed's three arms, with its checkpoint in ``out`` and its audit trail in ``audit_dir`` (or ``out``).

    The caller has checked ``out`` first (:func:`preflight_run`).
    """
    from flcore.experiment.arms import run_experiment
    from flcore.experiment.export import MODELS
    from flcore.federation.checkpoint import CHECKPOINT_FILE

    data = Path(args.data) if args.data else None
    if resume is not None and data is None and resume.extra.get("data_dir"):
        data = Path(resume.extra["data_dir"])
    policy, audit = governance_args(sc, args, audit_dir or out)
    say(f"flsuite run {sc.name}: strategy {cfg.strategy}, {cfg.num_server_rounds} rounds, seed {cfg.seed}")
    values = run_values(args)
    ignored = [k for k in sc.generation_settings if k in values and data is not None]
    if ignored:
        say(
            f"note: {', '.join(ignored)} sizes generated data only; the {sc.site_noun}s in {data} are used as they are."
        )
    return run_experiment(
        sc,
        cfg,
        params,
        data_dir=data,
        progress=say,
        policy=policy,
        audit=audit,
        checkpoint=out / CHECKPOINT_FILE,
        resume=resume,
        engine=args.engine,
        models_dir=out / MODELS,
    )


def _run_seeds(args: argparse.Namespace, sc: Any, first: int, out: Path, say: Any) -> int:
    """`--seeds N`: every arm under seeds first..first+N-1, each seed in OUT/seed-S, the summary in OUT."""
    seeds = seed_list(first, args.seeds)

    def one(seed: int, folder: Path) -> dict[str, Any]:
        say(f"\n== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) ==")
        values = {**run_values(args), "seed": seed}
        cfg, params = sc.configure(values)
        # The schema a run settles (beside the data) is part of its saved settings: compare like with like.
        params = sc.with_table_schema(params, Path(args.data) if args.data else synthetic_data(sc, seed, params))
        done = finished_seed(args, folder, cfg, params)
        if done is not None:
            say(f"seed {seed}: finished earlier with the same settings; reusing {folder / 'results.json'}")
            return done
        # One audit trail for the whole multi-seed run (OUT/audit.jsonl), each seed a run of its own.
        return _run_one(args, sc, cfg, params, None, folder, say, audit_dir=out)

    summary, _ = run_seeds(seeds, one, out, write_json)
    print(seeds_table(summary["statistics"], sc.site_noun))
    print(f"\nresults: {out / 'results.json'} (each seed: {out}/seed-S/results.json)")
    _write_report_after_run(args, out)
    return 0


def _write_report_after_run(args: argparse.Namespace, out: Path) -> None:
    """`flsuite run` writes report.md and report.html beside results.json unless --no-report."""
    if args.no_report:
        return
    paths = write_report([out], out)
    print("report: " + ", ".join(str(p) for p in paths))
