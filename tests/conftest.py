"""Shared fixtures: tiny, seeded synthetic inputs generated on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.finance.synthetic import FEATURE_COLUMNS


def make_transactions(n: int = 64, seed: int = 0, fraud: int = 3) -> pd.DataFrame:
    """A valid bank table: id column, 128 features, 0/1 label with ``fraud`` positives."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 128)).astype(np.float32), columns=FEATURE_COLUMNS)
    frame.insert(0, "transaction_id", [f"t{i}" for i in range(n)])
    labels = np.zeros(n, dtype=int)
    labels[:fraud] = 1
    frame["label"] = labels
    return frame


def write_bank(root: Path, name: str, frame: pd.DataFrame, fmt: str = "csv") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"transactions.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def banks_dir(tmp_path: Path) -> Path:
    """Three valid banks of 150-250 transactions as CSV and Parquet."""
    root = tmp_path / "banks"
    write_bank(root, "bank_1", make_transactions(250, seed=1, fraud=6), "csv")
    write_bank(root, "bank_2", make_transactions(200, seed=2, fraud=5), "parquet")
    write_bank(root, "bank_3", make_transactions(150, seed=3, fraud=4), "csv")
    return root


@pytest.fixture
def flower_task() -> None:
    """Give Flower the task identity it needs to build Messages outside a run (as run_simulation does)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0
