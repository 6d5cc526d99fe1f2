"""`flsuite --help` builds its parser without importing torch, Flower or the scenarios (it used to take ~4 s)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "flwr", "sklearn", "xgboost", "pandas", "pydicom", "flcore.scenario")


def test_the_parser_imports_nothing_heavy() -> None:
    code = (
        f"import sys, flcore.cli; flcore.cli.build_parser(); print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "flcore.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "site", "data", "report", "sweep", "robustness", "serve", "audit", "policy", "plan"):
        assert command in out.stdout
