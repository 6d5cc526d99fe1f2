"""One small tabular run shared by the preprocessing, export and evaluation tests: two banks train, a third stays out.

Made once per test process (in-process grid, 2 rounds of 1 local epoch, a tenth of the
synthetic banks' size) and read by every module that needs a trained model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from flcore.cli import main
from flcore.data.schema import SCHEMA_FILE

TRAINED = ("bank_north", "bank_south")
HELD_OUT = "bank_east"
LABEL = "is_fraud"


@dataclass(frozen=True)
class TabularRun:
    """Where the shared run's inputs and outputs are."""

    banks: Path  # all three generated banks and schema.toml
    data: Path  # the two training banks and schema.toml
    out: Path  # the run folder

    def table(self, bank: str) -> Path:
        return self.banks / bank / "transactions.csv"

    def frame(self, bank: str) -> pd.DataFrame:
        return pd.read_csv(self.table(bank))

    @property
    def models(self) -> Path:
        return self.out / "models"

    def test_scores(self) -> pd.DataFrame:
        return pd.read_csv(self.models / "test_scores.csv")


_RUNS: dict[str, TabularRun] = {}


def tabular_run(factory: pytest.TempPathFactory) -> TabularRun:
    """The shared run, made on first use."""
    if "run" not in _RUNS:
        root = factory.mktemp("tabular-run")
        banks = root / "banks"
        assert main(["data", "make", "tabular", "--out", str(banks), "--scale", "0.1"]) == 0
        data = root / "train"
        data.mkdir()
        for bank in TRAINED:
            shutil.copytree(banks / bank, data / bank)
        shutil.copy(banks / SCHEMA_FILE, data / SCHEMA_FILE)
        out = root / "out"
        args = ["run", "tabular", "--data", str(data), "--engine", "inprocess", "--rounds", "2"]
        args += ["--set", "local-epochs=1", "--out", str(out), "--quiet", "--no-report"]
        assert main(args) == 0
        _RUNS["run"] = TabularRun(banks, data, out)
    return _RUNS["run"]
