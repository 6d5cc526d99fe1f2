"""`flsuite certs init`, `coordinator start`, `submit`, `serve` and `site join`: keys, coordinator, runs, sites."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flcore.commands.common import configured, resume_folder
from flcore.commands.preflight import preflight_run
from flcore.config import refuse_attack_outside_simulation, to_dict
from flcore.outputs import check_output_dir


def cmd_certs_init(args: argparse.Namespace) -> int:
    """`flsuite certs init --out DIR --sites a,b,c`: a pilot CA, the SuperLink's certificate, one key per site."""
    from flcore.deploy.certs import init_certs

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


def _run_options(args: argparse.Namespace) -> Any:
    """The run `submit` and `serve` send, from the command line (checked as `flsuite run` checks its own)."""
    from flcore.deploy.serve import RunOptions
    from flcore.federation.checkpoint import find_checkpoint
    from flcore.governance.policy import load_policy
    from flcore.governance.siteguard import resolve_privacy

    sc, cfg, params, resume = configured(args)
    refuse_attack_outside_simulation(cfg)
    resume_from = find_checkpoint(args.resume) if resume is not None else None
    policy = load_policy(args.policy, sc.policy) if args.policy else sc.policy
    cfg = resolve_privacy(cfg, policy)
    run_config: dict[str, Any] = {**to_dict(cfg), **to_dict(params)}
    out = Path(args.out) if args.out else resume_folder(args) or Path(f"runs/{sc.name}-deployed")
    preflight_run(args, sc, cfg, resume, out)
    if args.num_sites:
        run_config["num-sites-expected"] = args.num_sites
    return RunOptions(
        scenario=sc.name,
        run_config=run_config,
        out=out,
        wait_for_sites_s=args.wait,
        policy_file=Path(args.policy) if args.policy else None,
        audit_file=Path(args.audit) if args.audit else None,
        resume_from=resume_from,
    )


def _sites(args: argparse.Namespace) -> list[str] | None:
    return [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None


def cmd_coordinator_start(args: argparse.Namespace) -> int:
    """`flsuite coordinator start --state DIR --certs DIR`: the long-lived SuperLink and its Fleet gateway."""
    from flcore.deploy.coordinator import CoordinatorOptions, run_coordinator

    options = CoordinatorOptions(
        state=Path(args.state),
        certs=Path(args.certs) if args.certs else None,
        host=args.host,
        port=args.port,
        control=args.control,
        sites=_sites(args),
        insecure=args.insecure,
        xgb_port=args.xgb_port,
    )
    return run_coordinator(options, say=_say)


def cmd_submit(args: argparse.Namespace) -> int:
    """`flsuite submit SCENARIO --coordinator STATE`: a run on the coordinator service, followed to its end."""
    from flcore.deploy.coordinator import CoordinatorInfo
    from flcore.deploy.serve import submit

    info = CoordinatorInfo.read(Path(args.coordinator))
    return submit(_run_options(args), info, say=_say)


def cmd_serve(args: argparse.Namespace) -> int:
    """`flsuite serve SCENARIO --certs DIR`: one run on a coordinator of its own."""
    from flcore.deploy.serve import ServeOptions, serve

    options = ServeOptions(
        run=_run_options(args),
        host=args.host,
        port=args.port,
        certs=Path(args.certs) if args.certs else None,
        xgb_port=args.xgb_port,
        sites=_sites(args),
        insecure=args.insecure,
    )
    return serve(options, say=_say)


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_site_join(args: argparse.Namespace) -> int:
    """`flsuite site join`: the site check, then a SuperNode serving this site's data under its policy."""
    from flcore.deploy.join import JoinOptions, join

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
        schema=Path(args.schema) if args.schema else None,
        **({"clientapp": args.clientapp} if args.clientapp else {}),
    )
    return join(options, say=_say)
