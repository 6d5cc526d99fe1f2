"""Synthetic bank tables in the shape a bank's own export has: 20 numbers, a text category, gaps, ``is_fraud``.

Three banks of different size and fraud rate. Each row holds a transaction id and a
booking time (never features), 20 numeric columns (amounts, counts, flags, scores),
``merchant_category`` as text, and ``is_fraud`` (1 fraud, 0 legitimate). About 2% of
``distance_km`` and ``account_age_days`` and 1% of ``merchant_category`` are empty.
Fraud is likelier in some categories and moves a few columns; each bank has its own
customer base (a location shift of every column). ``schema.toml`` beside the bank
folders describes the tables, so ``flsuite run tabular --data DIR`` reads them as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data.schema import SCHEMA_FILE
from flcore.data.tables import write_table
from flcore.outputs import write_text_atomic

CATEGORIES = ("grocery", "fuel", "restaurants", "travel", "electronics", "online_retail", "atm", "gambling")
#: How much each category raises the odds of fraud (log scale).
_CATEGORY_RISK = np.array([-0.8, -0.5, -0.6, 0.6, 0.9, 0.7, 0.3, 1.2])
NUMERIC = (
    "amount",
    "amount_avg_30d",
    "hour",
    "n_tx_24h",
    "n_tx_7d",
    "distance_km",
    "account_age_days",
    "card_present",
    "online",
    "foreign",
    *(f"score_{i:02d}" for i in range(1, 11)),
)
LABEL = "is_fraud"
#: name, transactions, fraud rate
BANKS = (("bank_north", 3000, 0.03), ("bank_south", 2000, 0.05), ("bank_east", 1200, 0.04))

SCHEMA_TEXT = f"""# The banks' tables: which column is the label, which are categories, what to drop.
label = "{LABEL}"
positive = 1
categorical = ["merchant_category"]
drop = ["transaction_id", "booked_at"]
missing = "impute"
"""


def bank_table(n: int, fraud_rate: float, shift: float, rng: np.random.Generator) -> pd.DataFrame:
    """One bank's transactions (see module docstring)."""
    category = rng.choice(len(CATEGORIES), size=n, p=[0.25, 0.15, 0.18, 0.07, 0.08, 0.15, 0.08, 0.04])
    latent = rng.normal(size=(n, 4))
    logit = 1.4 * latent[:, 0] - 0.9 * latent[:, 1] + _CATEGORY_RISK[category]
    # Intercept set so that the bank's fraud rate is about ``fraud_rate``.
    logit += np.log(fraud_rate / (1 - fraud_rate)) - np.quantile(logit, 1 - fraud_rate) + 2.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    z = latent + 0.9 * y[:, None] * np.array([1.0, -0.6, 0.8, 0.0])
    cols = {
        "amount": np.round(np.exp(3.5 + 0.8 * z[:, 0] + rng.normal(0, 0.5, n)), 2),
        "amount_avg_30d": np.round(np.exp(3.5 + 0.3 * z[:, 3] + rng.normal(0, 0.3, n)), 2),
        "hour": np.mod(np.round(14 + 4 * z[:, 1] + rng.normal(0, 3, n)), 24),
        "n_tx_24h": rng.poisson(np.exp(0.8 + 0.5 * z[:, 2])),
        "n_tx_7d": rng.poisson(np.exp(2.3 + 0.3 * z[:, 2])),
        "distance_km": np.round(np.exp(2.0 + 0.9 * z[:, 0] - 0.4 * z[:, 1]), 1),
        "account_age_days": np.round(np.exp(6.5 - 0.5 * z[:, 2] + rng.normal(0, 0.6, n))),
        "card_present": (rng.random(n) < 1 / (1 + np.exp(z[:, 0]))).astype(int),
        "online": (rng.random(n) < 1 / (1 + np.exp(-z[:, 2]))).astype(int),
        "foreign": (rng.random(n) < 0.05 + 0.2 * y).astype(int),
    }
    mix = rng.normal(size=(4, 10)) / 2
    scores = z @ mix + rng.normal(0, 1, size=(n, 10)) + shift
    cols.update({f"score_{i + 1:02d}": np.round(scores[:, i], 4) for i in range(10)})
    frame = pd.DataFrame({"transaction_id": [f"t{i:06d}" for i in range(n)]})
    frame["booked_at"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 86400 * 90, n), unit="s")
    for name in NUMERIC:
        frame[name] = cols[name]
    frame["merchant_category"] = np.asarray(CATEGORIES, dtype=object)[category]
    for name, share in (("distance_km", 0.02), ("account_age_days", 0.02), ("merchant_category", 0.01)):
        frame.loc[rng.random(n) < share, name] = None
    frame[LABEL] = y
    return frame


def write_sites(out: Path, seed: int = 0, scale: float = 1.0, file_format: str = "csv") -> list[Path]:
    """Write the three banks to ``out/<bank>/transactions.<format>`` and ``out/schema.toml``."""
    rng = np.random.default_rng(seed)
    paths = []
    for name, n, rate in BANKS:
        frame = bank_table(max(60, round(n * scale)), rate, rng.normal(0, 0.3), rng)
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(write_table(frame, folder / f"transactions.{file_format}"))
    paths.append(write_text_atomic(Path(out) / SCHEMA_FILE, SCHEMA_TEXT))
    return paths
