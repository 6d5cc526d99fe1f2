"""`flsuite data make` and `site check`: write a scenario's synthetic sites, check a site's own data."""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path
from typing import Any

from flcore.exceptions import ConfigError, FlsuiteUserError
from flcore.outputs import check_output_dir


def cmd_data_make(args: argparse.Namespace) -> int:
    """`flsuite data make SCENARIO --out DIR`: synthetic sites in the real format."""
    from flcore import scenario

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
    root = out.resolve()
    # The site folders written: the first part of every path under --out (schema.toml beside them is none).
    rel = [Path(f).resolve().relative_to(root) for f in files]
    folders = {r.parts[0] for r in rel if len(r.parts) > 1 or (root / r).is_dir()}
    print(f"wrote {len(folders)} {sc.site_noun} folder(s) under {out}")
    return 0


def cmd_site_check(args: argparse.Namespace) -> int:
    """`flsuite site check --domain D --data DIR`: what a site's data office runs before joining."""
    from flcore.experiment.sitecheck import check_sites

    schema = Path(args.schema) if args.schema else None
    report = check_sites(args.domain, Path(args.data), strict=not args.lenient, schema=schema)
    print(report.text())
    return 0 if report.ok else 2
