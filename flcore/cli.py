"""The ``flsuite`` command line: list scenarios, make synthetic data, run the three arms."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

from flcore.config import refuse_attack_outside_simulation
from flcore.exceptions import ConfigError, FlsuiteUserError
from flcore.reporting.console import ranking_table, seeds_table, summary_table


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}. Example: --set local-epochs=3")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _run_values(args: argparse.Namespace) -> dict[str, Any]:
    """Settings from ``--set`` and the shortcut options (``--rounds``, ``--seed``, ``--strategy``)."""
    values: dict[str, Any] = _parse_sets(args.set or [])
    for option, key in (("rounds", "num-server-rounds"), ("seed", "seed"), ("strategy", "strategy")):
        if getattr(args, option, None) is not None:
            values[key] = getattr(args, option)
    return values


def cmd_scenarios(args: argparse.Namespace) -> int:
    """`flsuite scenarios`: one line per registered scenario."""
    from flcore import scenario

    for name, sc in scenario.available().items():
        print(f"{name:<24} {sc.domain:<8} {sc.description}")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    """`flsuite strategies`: one line per registered strategy, with its paper."""
    from flcore.federation.strategies import REGISTRY

    for name, spec in REGISTRY.items():
        print(f"{name:<22} {spec.summary} [{spec.paper}]")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    """`flsuite settings SCENARIO`: every setting with its recommended value."""
    from flcore import scenario
    from flcore.config import settings_of, to_dict

    sc = scenario.get(args.scenario)
    cfg, params = sc.configure({})
    for obj in (cfg, params):
        values = to_dict(obj)
        for key, f in settings_of(obj).items():
            print(f"{key:<22} {values[key]!s:<22} {f.metadata.get('help', '')}")
    return 0


def cmd_data_make(args: argparse.Namespace) -> int:
    """`flsuite data make SCENARIO --out DIR`: synthetic sites in the real format."""
    from flcore import scenario
    from flcore.outputs import check_output_dir

    sc = scenario.get(args.scenario)
    if not (math.isfinite(args.scale) and args.scale > 0):
        raise ConfigError(
            f"--scale must be a finite number greater than 0 (1 keeps the scenario's own sizes); got {args.scale}. "
            "Example: --scale 0.1 for a tenth of the data."
        )
    if args.seed < 0:
        raise ConfigError(f"--seed must be an integer of at least 0; got {args.seed}. Example: --seed 0")
    options: dict[str, Any] = {"scale": args.scale, "file_format": args.format}
    if args.with_identifiers:
        if "with_identifiers" not in inspect.signature(sc.make_data).parameters:
            raise ConfigError(f"--with-identifiers is not available for {sc.name}: its data hold no identifiers.")
        options["with_identifiers"] = True
    if args.devices is not None:
        if "devices" not in inspect.signature(sc.make_data).parameters:
            raise ConfigError(f"--devices is not available for {sc.name}: its number of {sc.site_noun}s is fixed.")
        if args.devices < 2:
            raise ConfigError(
                f"--devices must be an integer of at least 2: a fleet federation needs 2 {sc.site_noun}s or more; "
                f"got {args.devices}. Example: --devices 20 (default 200)."
            )
        options["devices"] = args.devices
    out = check_output_dir(args.out, what=f"the synthetic {sc.site_noun} folders")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise FlsuiteUserError(
            f"--out {out} exists and is not empty. Expected a new or empty folder for the synthetic "
            f"{sc.site_noun} folders. Choose another --out, or pass --force to write into it."
        )
    files = sc.make_data(out, args.seed, **options)
    for f in files:
        print(f)
    print(f"wrote {len(files)} {sc.site_noun} folder(s) under {out}")
    return 0


def cmd_site_check(args: argparse.Namespace) -> int:
    """`flsuite site check --domain D --data DIR`: what a site's data office runs before joining."""
    from flcore.experiment.sitecheck import check_sites

    report = check_sites(args.domain, Path(args.data), strict=not args.lenient)
    print(report.text())
    return 0 if report.ok else 2


def cmd_run(args: argparse.Namespace) -> int:
    """`flsuite run SCENARIO [--seeds N]`: the three arms, a summary table, results.json and the report."""
    sc, cfg, params, resume = _configured(args)
    out = Path(args.out) if args.out else _resume_folder(args) or Path(f"runs/{sc.name}")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    if args.seeds is not None and args.seeds != 1 and resume is not None:
        raise ConfigError(
            "--resume continues one seed's run; it cannot be combined with --seeds. Resume the seed that "
            f"stopped (flsuite run {sc.name} --resume OUT/seed-S --out OUT/seed-S), then write the summary "
            "again with the same --seeds command and --out, which reuses finished seeds."
        )
    _preflight_run(args, sc, cfg, resume, out)
    if args.seeds is not None and args.seeds != 1:
        return _run_seeds(args, sc, cfg.seed, out, say)
    results = _run_one(args, sc, cfg, params, resume, out, say)
    from flcore.experiment.results import write_json
    from flcore.experiment.seeds import with_statistics

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

    The caller has checked ``out`` first (:func:`_preflight_run`).
    """
    from flcore.experiment.arms import run_experiment
    from flcore.federation.checkpoint import CHECKPOINT_FILE

    data = Path(args.data) if args.data else None
    if resume is not None and data is None and resume.extra.get("data_dir"):
        data = Path(resume.extra["data_dir"])
    policy, audit = _governance_args(sc, args, audit_dir or out)
    say(f"flsuite run {sc.name}: strategy {cfg.strategy}, {cfg.num_server_rounds} rounds, seed {cfg.seed}")
    values = _run_values(args)
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
    )


def _run_seeds(args: argparse.Namespace, sc: Any, first: int, out: Path, say: Any) -> int:
    """`--seeds N`: every arm under seeds first..first+N-1, each seed in OUT/seed-S, the summary in OUT."""
    from flcore.experiment.results import write_json
    from flcore.experiment.seeds import run_seeds, seed_list

    seeds = seed_list(first, args.seeds)

    def one(seed: int, folder: Path) -> dict[str, Any]:
        say(f"\n== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) ==")
        values = {**_run_values(args), "seed": seed}
        cfg, params = sc.configure(values)
        done = _finished_seed(args, folder, cfg, params)
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


def _finished_seed(args: argparse.Namespace, folder: Path, cfg: Any, params: Any) -> dict[str, Any] | None:
    """A seed's results.json from an earlier run with the same settings and data (not with --fresh)."""
    if args.fresh:
        return None
    prev, differs = _seed_results(args, folder, cfg, params)
    return prev if differs is None else None


def _seed_results(
    args: argparse.Namespace, folder: Path, cfg: Any, params: Any
) -> tuple[dict[str, Any] | None, str | None]:
    """A seed folder's results.json (None if absent or unreadable) and why this run cannot reuse it (None if it can)."""
    from flcore.config import to_dict
    from flcore.experiment.results import clean

    file = folder / "results.json"
    if not file.is_file():
        return None, "it holds no results.json"
    try:
        prev = json.loads(file.read_text())
    except (OSError, ValueError):
        return None, f"{file} cannot be read"
    if not isinstance(prev, dict):
        return None, f"{file} is not a results document"

    def as_saved(obj: Any) -> Any:
        return json.loads(json.dumps(clean(to_dict(obj))))

    differ = []
    for saved, current in ((prev.get("config"), as_saved(cfg)), (prev.get("params"), as_saved(params))):
        saved = saved if isinstance(saved, dict) else {}
        differ += [
            f"{k} {saved.get(k)!r} there, {current.get(k)!r} now"
            for k in sorted(saved.keys() | current.keys(), key=lambda k: (k not in saved or k not in current, k))
            if saved.get(k) != current.get(k)
        ]
    data = prev.get("data")
    source = str(Path(args.data)) if args.data else "synthetic"
    before = data.get("source") if isinstance(data, dict) else None
    if before != source:
        differ.append(f"data {before!r} there, {source!r} now")
    if not differ:
        return prev, None
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    return prev, "its settings differ from this run's: " + "; ".join(differ[:3]) + more


#: What a run writes to its output folder, for the messages of the output checks.
_RUN_OUTPUTS = "the run's outputs (results.json, report, checkpoint, audit trail)"


def _preflight_run(args: argparse.Namespace, sc: Any, cfg: Any, resume: Any, out: Path) -> None:
    """Refuse, before any data is read or generated, a run whose outputs could not be written or would be lost.

    ``out`` must be a folder this user may write to (or create); it must not hold an unfinished run's
    checkpoint (without ``--resume`` or ``--fresh``) nor a finished run's results (without ``--force``),
    except that ``--resume`` may continue in its own folder and ``--seeds N`` reuses finished seeds
    whose settings are those of this run.
    """
    from flcore.outputs import check_output_dir, check_output_file, refuse_finished_run

    check_output_dir(out, what=_RUN_OUTPUTS)
    if args.audit:
        check_output_file(args.audit, what="the audit trail", option="--audit", name="audit.jsonl")
    seeds = getattr(args, "seeds", None)
    if seeds is not None and seeds < 1:
        raise ConfigError(
            f"--seeds must be at least 1; got {seeds}. Pass --seeds N with N of 1 or more (e.g. --seeds 5), "
            "or leave it out for one seed."
        )
    if seeds is not None and seeds != 1:
        _preflight_seeds(args, sc, cfg.seed, out)
        return
    _refuse_to_overwrite(out, args)
    resumed = _resume_folder(args) if resume is not None else None
    if resumed is None or resumed.resolve() != out.resolve():  # --resume continues in its own folder
        refuse_finished_run(out, force=args.force)


def _preflight_seeds(args: argparse.Namespace, sc: Any, first: int, out: Path) -> None:
    """`--seeds N`: each seed folder as in :func:`_preflight_run`; finished seeds are reused or refused.

    Without ``--force``, a seed folder's finished results may only be reused (same settings and data,
    no ``--fresh``), and the summary ``OUT/results.json`` only rewritten when every seed it lists is reused.
    """
    from flcore.experiment.seeds import seed_folder, seed_list
    from flcore.outputs import RESULTS, OutputFolderError, check_output_dir, finished_run

    seeds = seed_list(first, args.seeds)
    reused = set()
    for seed in seeds:
        folder = seed_folder(out, seed)
        check_output_dir(folder, what=f"seed {seed}'s outputs")
        cfg, params = sc.configure({**_run_values(args), "seed": seed})
        prev, differs = _seed_results(args, folder, cfg, params)
        if prev is not None and differs is None and not args.fresh:
            reused.add(seed)
            continue
        _refuse_to_overwrite(folder, args)
        if args.force or not (folder / RESULTS).is_file():
            continue
        why = differs or "--fresh runs every seed again"
        raise OutputFolderError(
            f"{folder} holds the results of a finished run of seed {seed} ({finished_run(folder)}) that this run "
            f"cannot reuse ({why}): it would run seed {seed} again and overwrite them. Choose another --out, or "
            "pass --force to overwrite it" + (" (or drop --fresh to reuse it)." if differs is None else ".")
        )
    found = finished_run(out)
    if found is None or args.force:
        return
    try:
        doc = json.loads((out / RESULTS).read_text())
    except (OSError, ValueError):
        doc = None
    runs = doc.get("runs") if isinstance(doc, dict) and doc.get("kind") == "seeds" else None
    listed = [r.get("seed") for r in runs if isinstance(r, dict)] if isinstance(runs, list) else None
    if listed and all(seed in reused for seed in listed):
        return  # the same run again: its summary is written anew from the same seeds (and any new ones)
    over = f" over seeds {listed}" if listed else ""
    raise OutputFolderError(
        f"{out} holds the results of a finished run{over} ({found}); this run over seeds {seeds} would replace "
        "them. Choose another --out, or pass --force to overwrite it."
    )


def _write_report_after_run(args: argparse.Namespace, out: Path) -> None:
    """`flsuite run` writes report.md and report.html beside results.json unless --no-report."""
    if args.no_report:
        return
    from flcore.reporting.report import write_report

    paths = write_report([out], out)
    print("report: " + ", ".join(str(p) for p in paths))


def cmd_report(args: argparse.Namespace) -> int:
    """`flsuite report RUN_DIR [RUN_DIR ...]`: report.md and a self-contained report.html."""
    from flcore.outputs import check_output_dir
    from flcore.reporting.report import write_report

    folders = [Path(f) for f in args.run_dirs]
    # One run: its own folder (the folder of a results.json named directly).
    single = folders[0].parent if folders[0].suffix == ".json" else folders[0]
    out = Path(args.out) if args.out else single if len(folders) == 1 else Path("runs/comparison")
    check_output_dir(out, what="the report (report.md, report.html)")
    paths = write_report(folders, out)
    print("report: " + ", ".join(str(p) for p in paths))
    return 0


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
    from flcore.outputs import check_output_dir

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
        _, cfg, _, _ = _configured(one)
        _preflight_run(one, sc, cfg, None, out / name)  # every strategy's folder, before the first run
        runs.append(one)
    folders = []
    for name, one in zip(strategies, runs, strict=True):
        print(f"\n=== strategy {name} ({strategies.index(name) + 1} of {len(strategies)}) ===", flush=True)
        cmd_run(one)
        folders.append(out / name)
    from flcore.reporting.report import build_report, save_report

    report = build_report(folders)
    paths = save_report(report, out)
    if report.comparison is not None:
        print(ranking_table(report.comparison))
    print("\nreport: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    """`flsuite robustness SCENARIO`: strategies against simulated attacks, one table."""
    from flcore import scenario
    from flcore.experiment.robustness import run_robustness, table_markdown, write_robustness
    from flcore.governance.policy import load_policy
    from flcore.outputs import check_output_dir

    sc = scenario.get(args.scenario)
    values = _run_values(args)  # --strategies, not --strategy: each cell sets its own
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    out = check_output_dir(
        args.out or f"runs/{sc.name}-robustness", what="the robustness table (robustness.json, .md and .csv)"
    )
    policy = load_policy(args.policy, sc.policy) if args.policy else None
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    result = run_robustness(sc, values, strategies, attacks, Path(args.data) if args.data else None, say, policy)
    paths = write_robustness(result, out)
    print(table_markdown(result))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def _configured(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Scenario, settings and parameters of `run`/`serve`; with ``--resume``, the checkpoint's and the checkpoint."""
    from flcore import scenario
    from flcore.federation.strategies import get_spec

    sc = scenario.get(args.scenario)
    values = _run_values(args)
    resume = None
    if args.resume:
        resume, values = _resumed_values(sc, args, values)
    cfg, params = sc.configure(values)
    get_spec(cfg.strategy)  # unknown names fail before any work
    return sc, cfg, params, resume


def _resumed_values(sc: Any, args: argparse.Namespace, values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The checkpoint to resume and its settings; settings given on the command line must agree with them."""
    from flcore.federation.checkpoint import RESUME_EXEMPT, CheckpointError, read_checkpoint

    ckpt = read_checkpoint(args.resume)
    if ckpt.scenario != sc.name:
        raise CheckpointError(
            f"{args.resume} holds a checkpoint of {ckpt.scenario}, not {sc.name}. "
            f"Resume it with: flsuite run {ckpt.scenario} --resume {args.resume}"
        )
    saved = {**ckpt.config, **ckpt.params}
    operational = {k: v for k, v in values.items() if k in RESUME_EXEMPT}
    given = {k: v for k, v in values.items() if k not in RESUME_EXEMPT}
    # Compare parsed values (600 and 600.0 are the same setting).
    base = to_dict_pair(sc, saved)
    merged = to_dict_pair(sc, {**saved, **given})
    differ = [k for k in given if base.get(k) != merged.get(k)]
    if differ:
        shown = ", ".join(f"{k} (checkpoint {saved[k]!r}, given {values[k]!r})" for k in differ)
        raise CheckpointError(
            f"--resume continues run {ckpt.run_id} with the settings it started with; {shown} differ. "
            "Drop those options, or start a new run without --resume."
        )
    given_data = str(Path(args.data).resolve()) if getattr(args, "data", None) else None
    if given_data and ckpt.extra.get("data_dir") not in (None, given_data):
        raise CheckpointError(
            f"--data {args.data} differs from the data run {ckpt.run_id} trained on ({ckpt.extra['data_dir']}). "
            "Resume with the same data."
        )
    return ckpt, {**saved, **operational}


def _refuse_to_overwrite(out: Path, args: argparse.Namespace) -> None:
    """A new run must not overwrite the checkpoint of an unfinished one (it would lose it, and its run id)."""
    from flcore.federation.checkpoint import CHECKPOINT_FILE, CheckpointError, read_checkpoint

    if args.resume or args.fresh or not (out / CHECKPOINT_FILE).is_file():
        return
    try:
        ckpt = read_checkpoint(out / CHECKPOINT_FILE)
    except CheckpointError:
        return
    planned = int(ckpt.config.get("num-server-rounds", 0))
    if ckpt.round < planned:
        raise CheckpointError(
            f"{out} holds the checkpoint of run {ckpt.run_id}, stopped after round {ckpt.round} of {planned}. "
            f"Continue it with --resume {out}, or start over there with --fresh (or choose another --out)."
        )


def _resume_folder(args: argparse.Namespace) -> Path | None:
    """The output folder of the run being resumed (``--resume`` names it or its checkpoint file)."""
    from flcore.federation.checkpoint import find_checkpoint

    return find_checkpoint(args.resume).parent if args.resume else None


def to_dict_pair(sc: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A scenario's settings and parameters, parsed, as one kebab-case dict."""
    from flcore.config import to_dict

    cfg, params = sc.configure(values)
    return {**to_dict(cfg), **to_dict(params)}


def _governance_args(sc: Any, args: argparse.Namespace, out: Path) -> tuple[Any, Any]:
    """The federation's policy (``--policy`` over the domain's defaults) and the audit trail."""
    from flcore.governance.audit import AuditTrail
    from flcore.governance.policy import load_policy

    policy = load_policy(args.policy, sc.policy) if args.policy else sc.policy
    if args.policy and policy.ledger != sc.policy.ledger:
        raise ConfigError(
            f"{args.policy} sets 'ledger': a privacy ledger belongs to one site. Set it in that site's own "
            "policy.toml, not in the federation's policy."
        )
    path = Path(args.audit) if args.audit else out / "audit.jsonl"
    return policy, (AuditTrail(path) if policy.audit_trail or args.audit else None)


def cmd_certs_init(args: argparse.Namespace) -> int:
    """`flsuite certs init --out DIR --sites a,b,c`: a pilot CA, the SuperLink's certificate, one key per site."""
    from flcore.deploy.certs import init_certs
    from flcore.outputs import check_output_dir

    out = check_output_dir(args.out, what="the certificates and keys")
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    hosts = ["localhost", "127.0.0.1", *(args.host or [])]
    bundle = init_certs(out, sites, hosts, days=args.days)
    print(f"pilot CA:             {bundle.ca_cert} (its key {bundle.ca_key}: move it offline)")
    print(f"SuperLink TLS:        {bundle.server_cert}, {bundle.server_key} (for {', '.join(dict.fromkeys(hosts))})")
    for site in sites:
        print(
            f"site {site + ':':<15} {bundle.site_keys[site]} (to {site}, with ca.crt); "
            f"{bundle.site_public_keys[site]} (register)"
        )
    print(f"which file goes where: {bundle.root / 'README.txt'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`flsuite serve SCENARIO --certs DIR`: SuperLink with TLS and site authentication, then the ServerApp."""
    from flcore.config import to_dict
    from flcore.deploy.launcher import ServeOptions, serve
    from flcore.federation.checkpoint import find_checkpoint
    from flcore.governance.policy import load_policy
    from flcore.governance.siteguard import resolve_privacy

    sc, cfg, params, resume = _configured(args)
    refuse_attack_outside_simulation(cfg)
    resume_from = find_checkpoint(args.resume) if resume is not None else None
    policy = load_policy(args.policy, sc.policy) if args.policy else sc.policy
    cfg = resolve_privacy(cfg, policy)
    run_config: dict[str, Any] = {**to_dict(cfg), **to_dict(params)}
    out = Path(args.out) if args.out else _resume_folder(args) or Path(f"runs/{sc.name}-deployed")
    _preflight_run(args, sc, cfg, resume, out)
    if args.num_sites:
        run_config["num-sites-expected"] = args.num_sites
    options = ServeOptions(
        scenario=sc.name,
        run_config=run_config,
        out=out,
        host=args.host,
        port=args.port,
        certs=Path(args.certs) if args.certs else None,
        sites=[s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None,
        insecure=args.insecure,
        wait_for_sites_s=args.wait,
        policy_file=Path(args.policy) if args.policy else None,
        audit_file=Path(args.audit) if args.audit else None,
        resume_from=resume_from,
    )
    return serve(options, say=lambda line: print(line, flush=True))


def cmd_site_join(args: argparse.Namespace) -> int:
    """`flsuite site join`: the site check, then a SuperNode serving this site's data under its policy."""
    from flcore.deploy.launcher import JoinOptions, join

    options = JoinOptions(
        superlink=args.superlink,
        domain=args.domain,
        data=Path(args.data),
        key=Path(args.key) if args.key else None,
        ca=Path(args.ca) if args.ca else None,
        policy=Path(args.policy) if args.policy else None,
        port=args.port,
        insecure=args.insecure,
        lenient=args.lenient,
        **({"clientapp": args.clientapp} if args.clientapp else {}),
    )
    return join(options, say=lambda line: print(line, flush=True))


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """`flsuite audit verify FILE`: check the hash chain; name the first altered, removed or inserted entry."""
    from flcore.governance.audit import format_report, verify

    path = Path(args.file)
    where = "the audit trail is written to OUT/audit.jsonl by flsuite run, or to the file given with --audit"
    if path.is_dir():
        inside = path / "audit.jsonl"
        hint = f"e.g. flsuite audit verify {inside}" if inside.is_file() else where
        raise FlsuiteUserError(
            f"{path} is a folder, not an audit trail file; nothing was verified. Name the trail file itself ({hint})."
        )
    if not path.is_file():
        raise FlsuiteUserError(
            f"No such file: {path} ({where}); nothing was verified. Expected the path of an existing audit trail: "
            "check the path."
        )
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise FlsuiteUserError(
            f"Cannot read {path} ({err.strerror}); nothing was verified. Expected a readable audit trail file: "
            "run the check as a user who may read it, or copy the file somewhere readable."
        ) from None
    report = verify(path, expected_head=args.head)
    print(format_report(report, args.file))
    return 0 if report.ok else 1


def cmd_policy_show(args: argparse.Namespace) -> int:
    """`flsuite policy show --domain D [--policy FILE]`: the effective policy as TOML (a template for sites)."""
    from flcore import scenario
    from flcore.governance.policy import load_policy, policy_toml

    found = [sc for sc in scenario.available().values() if sc.domain == args.domain]
    if not found:
        raise ConfigError(f"Unknown domain '{args.domain}'. Domains: finance, medical, iot.")
    base = found[0].policy
    policy = load_policy(args.policy, base) if args.policy else base
    print(policy_toml(policy, f"{args.domain} policy ({policy.source})"), end="")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """`flsuite plan SCENARIO [--set ...] [--approve POLICY]`: show a training plan, or approve it for a site."""
    from flcore import scenario
    from flcore.config import to_dict
    from flcore.governance.policy import approve_plan, load_policy, plan_hash, training_plan
    from flcore.governance.siteguard import resolve_privacy

    sc = scenario.get(args.scenario)
    cfg, params = sc.configure(_run_values(args))
    federation = load_policy(args.policy, sc.policy) if args.policy else sc.policy
    cfg = resolve_privacy(cfg, federation)
    plan = training_plan(sc, to_dict(cfg), to_dict(params))
    digest = plan_hash(plan)
    if args.approve:
        added = approve_plan(Path(args.approve), digest)
        print(f"{'approved' if added else 'already approved'}: {digest} in {args.approve}")
        return 0
    import json

    print(json.dumps(plan, indent=2, sort_keys=True))
    print(f"\nplan hash: {digest}")
    print(f"A site approves it with: flsuite plan {sc.name} <same settings> --approve SITE_DIR/policy.toml")
    return 0


def _add_setting_options(p: argparse.ArgumentParser, default_out: str) -> None:
    """The scenario, its settings (``--rounds``, ``--seed``, ``--set``), the output folder and the policy."""
    p.add_argument("scenario")
    p.add_argument("--rounds", type=int, help="federated rounds (num-server-rounds)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting (see `flsuite settings SCENARIO`)")
    p.add_argument("--out", help=f"output folder (default: {default_out})")
    p.add_argument("--policy", help="federation policy (TOML) over the domain's defaults; sites add their own")


def _add_run_options(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options `run` and `serve` share: the scenario, its settings, outputs, governance, resume."""
    _add_setting_options(p, default_out)
    p.add_argument("--strategy", help="aggregation strategy (see `flsuite strategies`)")
    p.add_argument("--audit", help="audit trail to append to (default: OUT/audit.jsonl)")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start a new run even where OUT holds an unfinished run's checkpoint (and, with --seeds, run finished "
        "seeds again; overwriting their results also needs --force)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite the results of a finished run in OUT (without it, such a folder is refused)",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue an interrupted run from the checkpoint in DIR (its output folder) after its last completed "
        "round, with its own settings; results go to DIR unless --out is given",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(
        prog="flsuite",
        description="Federated learning for hospitals, banks and industrial fleets, on Flower.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("scenarios", help="list the registered scenarios")
    s.set_defaults(fn=cmd_scenarios)
    s = sub.add_parser("strategies", help="list the aggregation strategies")
    s.set_defaults(fn=cmd_strategies)
    s = sub.add_parser("settings", help="list a scenario's settings with their recommended values")
    s.add_argument("scenario")
    s.set_defaults(fn=cmd_settings)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    m = dsub.add_parser("make", help="write a scenario's synthetic sites in the real format")
    m.add_argument("scenario")
    m.add_argument("--out", required=True, help="output directory (one sub-folder per site)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--scale", type=float, default=1.0, help="multiply every site's size (e.g. 0.1)")
    m.add_argument(
        "--format", choices=("parquet", "csv", "dicom", "npy"), help="file format (default: the scenario's own)"
    )
    m.add_argument("--devices", type=int, help="iot: number of devices in the fleet (default 200)")
    m.add_argument("--force", action="store_true", help="write into a non-empty directory")
    m.add_argument(
        "--with-identifiers",
        action="store_true",
        help="medical: write made-up patient identifiers into some files, to exercise `flsuite site check`",
    )
    m.set_defaults(fn=cmd_data_make)

    st = sub.add_parser("site", help="site-side utilities")
    stsub = st.add_subparsers(dest="site_command", required=True)
    c = stsub.add_parser("check", help="validate a site's data and scan it for direct identifiers (exit 2 on findings)")
    c.add_argument("--domain", required=True, help="finance, medical or iot")
    c.add_argument("--data", required=True, help="a site folder, or a directory with one sub-folder per site")
    c.add_argument("--lenient", action="store_true", help="report unusable files as skipped instead of failing")
    c.set_defaults(fn=cmd_site_check)
    j = stsub.add_parser(
        "join", help="check this site, then run its Flower SuperNode against the coordinator's SuperLink"
    )
    j.add_argument("--superlink", required=True, metavar="HOST:PORT", help="the coordinator's SuperLink address")
    j.add_argument("--domain", required=True, help="finance, medical or iot")
    j.add_argument("--data", required=True, help="this site's data folder")
    j.add_argument("--policy", help="this site's governance policy (default: policy.toml in the data folder)")
    j.add_argument("--key", help="this site's private key (sites/<name>.key from `flsuite certs init`)")
    j.add_argument("--ca", help="the pilot CA certificate (ca.crt) that signed the SuperLink's certificate")
    j.add_argument("--port", type=int, help="local port of the SuperNode's own API (default: a free port)")
    j.add_argument("--insecure", action="store_true", help="plain-text transport (trials on one machine only)")
    j.add_argument("--lenient", action="store_true", help="skip unusable files instead of failing the check")
    j.add_argument(
        "--clientapp",
        choices=("warm", "per-message"),
        help="warm (default): one worker imports the ClientApp once and forks a process per message; "
        "per-message: Flower's own, a new flwr-clientapp process with all its imports for every message",
    )
    j.set_defaults(fn=cmd_site_join)

    ce = sub.add_parser("certs", help="pilot certificates and site keys for a deployment")
    cesub = ce.add_subparsers(dest="certs_command", required=True)
    ci = cesub.add_parser("init", help="create a pilot CA, the SuperLink's TLS certificate and one key pair per site")
    ci.add_argument("--out", required=True, help="new folder for the certificates and keys")
    ci.add_argument("--sites", required=True, help="comma-separated site names, e.g. hospital_a,hospital_b")
    ci.add_argument(
        "--host",
        action="append",
        help="a name or address sites use to reach the SuperLink (repeatable; localhost and 127.0.0.1 always)",
    )
    ci.add_argument("--days", type=int, default=365, help="validity of the certificates (default 365)")
    ci.set_defaults(fn=cmd_certs_init)

    sv = sub.add_parser("serve", help="coordinator: start a SuperLink (TLS, site authentication) and run a scenario")
    _add_run_options(sv, "runs/SCENARIO-deployed")
    sv.add_argument("--certs", help="folder made by `flsuite certs init` (TLS certificate and site public keys)")
    sv.add_argument("--sites", help="register only these sites (comma-separated; default: every key in CERTS/sites)")
    sv.add_argument("--num-sites", type=int, help="sites that must connect before round 1 (default: registered keys)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    sv.add_argument("--port", type=int, default=9092, help="SuperLink port (default 9092)")
    sv.add_argument("--wait", type=float, default=300.0, help="seconds to wait for every site to connect (default 300)")
    sv.add_argument("--insecure", action="store_true", help="plain-text transport (trials on one machine only)")
    sv.set_defaults(fn=cmd_serve)

    r = sub.add_parser("run", help="run federated, centralised and local-only arms; write results.json")
    _add_run_options(r, "runs/SCENARIO")
    r.add_argument("--data", help="directory with one sub-folder per site (default: synthetic)")
    r.add_argument("--quiet", action="store_true", help="print only the summary")
    r.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="run every arm under N seeds (SEED, SEED+1, ...; each changes the data split, initial weights and "
        "sampling): each seed in OUT/seed-S, mean and 95%% intervals over seeds in OUT/results.json",
    )
    r.add_argument("--no-report", action="store_true", help="do not write report.md and report.html")
    r.set_defaults(fn=cmd_run)

    rp = sub.add_parser("report", help="write report.md and a self-contained report.html from run folders")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `flsuite run` (or results.json)")
    rp.add_argument("--out", help="output folder (default: the run folder; for several, runs/comparison)")
    rp.set_defaults(fn=cmd_report)

    sw = sub.add_parser("sweep", help="run strategies over the same seeds and rank them where differences exceed noise")
    _add_setting_options(sw, "runs/SCENARIO-sweep")
    sw.add_argument("--strategies", required=True, help="comma-separated strategy names (see `flsuite strategies`)")
    sw.add_argument("--seeds", type=int, default=5, metavar="N", help="seeds per strategy (default 5)")
    sw.add_argument("--data", help="directory with one sub-folder per site (default: synthetic)")
    sw.add_argument(
        "--fresh",
        action="store_true",
        help="run every seed again, even where finished results exist (overwriting them also needs --force)",
    )
    sw.add_argument(
        "--force",
        action="store_true",
        help="overwrite finished results in OUT/STRATEGY that this sweep runs again (other settings, or --fresh)",
    )
    sw.add_argument("--quiet", action="store_true", help="print only the summaries")
    sw.set_defaults(fn=cmd_sweep)

    from flcore.config import ROBUSTNESS_ATTACKS, ROBUSTNESS_STRATEGIES

    rb = sub.add_parser(
        "robustness", help="compare strategies under simulated attacks (federated arm only); write a table"
    )
    _add_setting_options(rb, "runs/SCENARIO-robustness")
    rb.add_argument("--strategies", default=",".join(ROBUSTNESS_STRATEGIES), help="comma-separated strategy names")
    rb.add_argument(
        "--attacks",
        default=",".join(ROBUSTNESS_ATTACKS),
        help="comma-separated attacks (scale, sign-flip, noise, nan, inf); the clean run is always included",
    )
    rb.add_argument("--data", help="directory with one sub-folder per site (default: synthetic)")
    rb.add_argument("--quiet", action="store_true", help="print only the table")
    rb.set_defaults(fn=cmd_robustness)

    pl = sub.add_parser("plan", help="show a run's training plan and its hash, or approve it in a site policy")
    pl.add_argument("scenario")
    pl.add_argument("--rounds", type=int, help="federated rounds (num-server-rounds)")
    pl.add_argument("--strategy", help="aggregation strategy")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting, as for `flsuite run`")
    pl.add_argument("--policy", help="federation policy (TOML), as for `flsuite run`")
    pl.add_argument("--approve", metavar="POLICY", help="add the plan's hash to this site policy's approved_plans")
    pl.set_defaults(fn=cmd_plan)

    po = sub.add_parser("policy", help="governance policies")
    posub = po.add_subparsers(dest="policy_command", required=True)
    ps = posub.add_parser("show", help="print a domain's policy (or a file over it) as TOML, a template for a site")
    ps.add_argument("--domain", required=True, help="finance, medical or iot")
    ps.add_argument("--policy", help="a policy file to apply over the domain's defaults")
    ps.set_defaults(fn=cmd_policy_show)

    a = sub.add_parser("audit", help="audit-trail utilities")
    asub = a.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="check an audit trail's hash chain (exit 1 if altered)")
    v.add_argument("file")
    v.add_argument("--head", help="hash of the last entry as recorded elsewhere (results.json), to detect truncation")
    v.set_defaults(fn=cmd_audit_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flsuite`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except FlsuiteUserError as err:
        text = textwrap.fill(str(err), width=100, break_long_words=False, break_on_hyphens=False)
        print(f"flsuite: error: {text}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("flsuite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
