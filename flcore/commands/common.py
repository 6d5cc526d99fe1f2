"""What several commands share: their settings from the command line, a resumed run's checkpoint, governance."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flcore.config import to_dict
from flcore.exceptions import ConfigError
from flcore.governance.audit import AuditTrail


def progress(quiet: bool) -> Callable[[str], None]:
    """What a command prints as it works: nothing with ``--quiet``, else each line at once."""
    return (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}. Example: --set local-epochs=3")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def run_values(args: argparse.Namespace) -> dict[str, Any]:
    """Settings from ``--set`` and the shortcut options (``--rounds``, ``--seed``, ``--strategy``)."""
    values: dict[str, Any] = _parse_sets(args.set or [])
    for option, key in (("rounds", "num-server-rounds"), ("seed", "seed"), ("strategy", "strategy")):
        if getattr(args, option, None) is not None:
            values[key] = getattr(args, option)
    if getattr(args, "schema", None):  # the schema itself travels, so that deployed sites read what the run plans
        from flcore.data.schema import TableSchema

        values["schema"] = TableSchema.load(args.schema).setting()
    return values


def configured(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Scenario, settings and parameters of `run`/`serve`; with ``--resume``, the checkpoint's and the checkpoint."""
    from flcore import scenario
    from flcore.federation.strategies import get_spec

    sc = scenario.get(args.scenario)
    values = run_values(args)
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


def to_dict_pair(sc: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A scenario's settings and parameters, parsed, as one kebab-case dict."""
    cfg, params = sc.configure(values)
    return {**to_dict(cfg), **to_dict(params)}


def resume_folder(args: argparse.Namespace) -> Path | None:
    """The output folder of the run being resumed (``--resume`` names it or its checkpoint file)."""
    from flcore.federation.checkpoint import find_checkpoint

    return find_checkpoint(args.resume).parent if args.resume else None


def governance_args(sc: Any, args: argparse.Namespace, out: Path) -> tuple[Any, Any]:
    """The federation's policy (``--policy`` over the domain's defaults) and the audit trail."""
    from flcore.governance.policy import load_policy

    policy = load_policy(args.policy, sc.policy) if args.policy else sc.policy
    if args.policy and policy.ledger != sc.policy.ledger:
        raise ConfigError(
            f"{args.policy} sets 'ledger': a privacy ledger belongs to one site. Set it in that site's own "
            "policy.toml, not in the federation's policy."
        )
    path = Path(args.audit) if args.audit else out / "audit.jsonl"
    return policy, (AuditTrail(path) if policy.audit_trail or args.audit else None)
