"""`flsuite audit verify`, `policy show` and `plan`: check an audit trail, show a policy, show or approve a plan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flcore.commands.common import run_values
from flcore.config import to_dict
from flcore.exceptions import ConfigError, FlsuiteUserError
from flcore.governance.audit import format_report, verify


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """`flsuite audit verify FILE`: check the hash chain; name the first altered, removed or inserted entry."""
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
    from flcore.governance.plan import approve_plan, plan_hash, training_plan
    from flcore.governance.policy import load_policy
    from flcore.governance.siteguard import resolve_privacy

    sc = scenario.get(args.scenario)
    cfg, params = sc.configure(run_values(args))
    federation = load_policy(args.policy, sc.policy) if args.policy else sc.policy
    cfg = resolve_privacy(cfg, federation)
    plan = training_plan(sc, to_dict(cfg), to_dict(params))
    digest = plan_hash(plan)
    if args.approve:
        added = approve_plan(Path(args.approve), digest)
        print(f"{'approved' if added else 'already approved'}: {digest} in {args.approve}")
        return 0
    print(json.dumps(plan, indent=2, sort_keys=True))
    print(f"\nplan hash: {digest}")
    print(f"A site approves it with: flsuite plan {sc.name} <same settings> --approve SITE_DIR/policy.toml")
    return 0
