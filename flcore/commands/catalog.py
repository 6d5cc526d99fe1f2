"""`flsuite scenarios`, `strategies` and `settings`: what the suite can run, and with which settings."""

from __future__ import annotations

import argparse

from flcore.config import settings_of, to_dict


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

    sc = scenario.get(args.scenario)
    cfg, params = sc.configure({})
    for obj in (cfg, params):
        values = to_dict(obj)
        for key, f in settings_of(obj).items():
            print(f"{key:<22} {values[key]!s:<22} {f.metadata.get('help', '')}")
    return 0
