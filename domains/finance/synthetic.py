"""Synthetic card-transaction banks that behave like the real federated fraud problem.

What makes the real problem hard, and what this generator reproduces:

* **Heavy, bank-specific class imbalance**: fraud rates between 0.1% and 2%.
* **Quantity skew**: the largest bank holds over 10x the transactions of the smallest.
* **Feature shift**: every bank has its own customer base and encoding, so each
  feature's location and scale differ between banks.
* **Partly shared, partly bank-specific fraud**: a few fraud patterns (card testing,
  account takeover, ...) hit every bank; others are concentrated at one or two banks
  and appear only rarely elsewhere. A bank training alone has seen a handful of
  examples of the rare ones and misses them; the federation has seen them all.
* **Irreducible error**: a share of fraud looks exactly like normal spending
  (first-party fraud), so no model reaches a perfect PR-AUC.

Features are generated from a low-dimensional latent "behaviour" space mapped to
128 columns, with a few skewed amount-like and count-like columns, which gives the
correlated, partly redundant columns of engineered transaction tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data.tables import write_table

N_FEATURES = 128
FEATURE_COLUMNS = [f"f{i:03d}" for i in range(N_FEATURES)]
LABEL_COLUMN = "label"

_N_LATENT = 16
_N_PATTERNS = 8
_PATTERN_WIDTH = 10  # columns a fraud pattern moves


@dataclass(frozen=True)
class BankSpec:
    """Size, fraud rate and fraud-pattern mixture of one synthetic bank."""

    name: str
    n_transactions: int
    fraud_rate: float
    pattern_weights: tuple[float, ...]


def _default_banks() -> tuple[BankSpec, ...]:
    # Patterns 0-2 are shared by every bank; 3-7 are concentrated at one or two
    # banks and rarer elsewhere.
    r = 0.4
    return (
        BankSpec("bank_a", 48_000, 0.0015, (1, 1, 1, 3, r, r, r, 2)),
        BankSpec("bank_b", 30_000, 0.004, (1, 1, 1, 2, 3, r, r, r)),
        BankSpec("bank_c", 15_000, 0.008, (1, 1, 1, r, 2, 3, r, r)),
        BankSpec("bank_d", 8_000, 0.02, (1, 1, 1, r, r, 2, 3, r)),
        BankSpec("bank_e", 4_000, 0.012, (1, 1, 1, r, r, r, 2, 3)),
    )


@dataclass(frozen=True)
class FraudWorld:
    """The shared structure every bank draws from (seeded)."""

    loading: np.ndarray  # (latent, features)
    directions: np.ndarray  # (patterns, features), sparse fraud shifts
    strengths: np.ndarray  # (patterns,)
    skewed: np.ndarray  # indices of amount-like columns
    counts: np.ndarray  # indices of count-like columns


@dataclass
class FinanceSynthConfig:
    """Knobs of the generator; defaults give the `finance-five-banks` scenario.

    Parameters
    ----------
    banks : tuple of BankSpec
        One entry per bank.
    scale : float
        Multiplies every bank's transaction count (use < 1 for tests).
    feature_shift : float
        Standard deviation of the per-bank location shift of each feature.
    undetectable_share : float
        Share of fraud that looks like normal spending.
    """

    banks: tuple[BankSpec, ...] = field(default_factory=_default_banks)
    scale: float = 1.0
    feature_shift: float = 0.35
    undetectable_share: float = 0.12


def _make_world(rng: np.random.Generator) -> FraudWorld:
    loading = rng.normal(0.0, 1.0, size=(_N_LATENT, N_FEATURES)) / np.sqrt(_N_LATENT)
    directions = np.zeros((_N_PATTERNS, N_FEATURES))
    for p in range(_N_PATTERNS):
        cols = rng.choice(N_FEATURES, size=_PATTERN_WIDTH, replace=False)
        directions[p, cols] = rng.choice([-1.0, 1.0], size=_PATTERN_WIDTH) * rng.uniform(0.5, 1.0, size=_PATTERN_WIDTH)
        directions[p] /= np.linalg.norm(directions[p])
    strengths = rng.uniform(5.0, 6.5, size=_N_PATTERNS)
    cols = rng.permutation(N_FEATURES)
    return FraudWorld(loading, directions, strengths, skewed=cols[:6], counts=cols[6:10])


def _bank_transactions(
    spec: BankSpec,
    n: int,
    world: FraudWorld,
    config: FinanceSynthConfig,
    rng: np.random.Generator,
) -> pd.DataFrame:
    n_fraud = max(1, round(n * spec.fraud_rate))
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.choice(n, size=n_fraud, replace=False)] = 1

    latent = rng.normal(size=(n, _N_LATENT))
    x = latent @ world.loading + rng.normal(0.0, 0.6, size=(n, N_FEATURES))

    fraud_idx = np.flatnonzero(labels)
    weights = np.asarray(spec.pattern_weights, dtype=float)
    patterns = rng.choice(_N_PATTERNS, size=n_fraud, p=weights / weights.sum())
    detectable = rng.random(n_fraud) >= config.undetectable_share
    magnitude = world.strengths[patterns] * rng.uniform(0.6, 1.4, size=n_fraud)
    shift = world.directions[patterns] * (magnitude * detectable)[:, None]
    # Fraudsters also behave erratically: extra spread along the pattern's columns.
    jitter = rng.normal(0.0, 0.5, size=(n_fraud, N_FEATURES)) * (world.directions[patterns] != 0)
    x[fraud_idx] += shift + jitter * detectable[:, None]

    # Bank-specific customer base and encoding: location and scale shift.
    x = x * rng.lognormal(0.0, 0.15, size=N_FEATURES) + rng.normal(0.0, config.feature_shift, size=N_FEATURES)
    # Amount-like columns are log-normal, velocity-like columns are counts.
    x[:, world.skewed] = np.exp(0.8 * x[:, world.skewed]) * 40.0
    x[:, world.counts] = np.round(np.exp(0.5 * x[:, world.counts]) * 2.0)

    frame = pd.DataFrame(x.astype(np.float32), columns=FEATURE_COLUMNS)
    frame.insert(0, "transaction_id", [f"{spec.name}-{i:07d}" for i in range(n)])
    frame[LABEL_COLUMN] = labels
    return frame


def make_banks(config: FinanceSynthConfig | None = None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Generate one transaction table per bank.

    Parameters
    ----------
    config : FinanceSynthConfig, optional
        Generator settings; the defaults give the five-banks scenario.
    seed : int
        Seed of everything random, the shared fraud patterns included.

    Returns
    -------
    dict of str to pandas.DataFrame
        Bank name to a table with a ``transaction_id`` column, 128 float feature
        columns ``f000``..``f127`` and a 0/1 ``label`` column.
    """
    config = config or FinanceSynthConfig()
    rng = np.random.default_rng(seed)
    world = _make_world(rng)
    banks = {}
    for spec in config.banks:
        n = max(50, round(spec.n_transactions * config.scale))
        banks[spec.name] = _bank_transactions(spec, n, world, config, rng)
    return banks


def write_banks(banks: dict[str, pd.DataFrame], out: Path, file_format: str = "parquet") -> list[Path]:
    """Write each bank to ``out/<bank>/transactions.<csv|parquet>``.

    Returns the written files. Each file is written to a temporary name first and
    renamed, so an interrupted run never leaves a half-written table behind.
    """
    if file_format not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet', got {file_format!r}")
    written = []
    for name, frame in banks.items():
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        written.append(write_table(frame, folder / f"transactions.{file_format}"))
    return written
