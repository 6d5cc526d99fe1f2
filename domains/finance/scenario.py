"""The `finance-five-banks` scenario: five banks of very different size detect card fraud together."""

from __future__ import annotations

from pathlib import Path

from domains.finance.adapters.transactions import TransactionAdapter
from domains.finance.config import RECOMMENDED_RUN, RECOMMENDED_XGBOOST_RUN, FinanceParams
from domains.finance.governance import DEFAULT_POLICY
from domains.finance.models import FraudMLP
from domains.finance.synthetic import FinanceSynthConfig, make_banks, write_banks
from flcore.data.schema import find_schema
from flcore.data.schematable import SchemaTableAdapter
from flcore.data.site import DomainAdapter, FeatureStats
from flcore.exceptions import ConfigError
from flcore.governance.policy import site_drop_columns
from flcore.learning.task import BinaryClassificationTask
from flcore.learning.xgb import XGBoostTask
from flcore.scenario import Scenario


def make_data(out: Path, seed: int = 0, scale: float = 1.0, file_format: str | None = None) -> list[Path]:
    """Write the five synthetic banks to ``out/<bank>/transactions.<format>`` (Parquet by default)."""
    if file_format not in (None, "parquet", "csv"):
        raise ConfigError(f"finance-five-banks writes parquet or csv tables, not {file_format}.")
    return write_banks(make_banks(FinanceSynthConfig(scale=scale), seed=seed), Path(out), file_format or "parquet")


def make_adapter(params: FinanceParams, data_dir: Path | None) -> DomainAdapter:
    """The banks' own schema (``schema`` setting or ``DATA/schema.toml``), else the 128-feature reference contract."""
    schema = find_schema(params.schema, data_dir)
    if schema is None:
        return TransactionAdapter()
    return SchemaTableAdapter(schema, site="bank", noun="transaction", drop_columns=site_drop_columns)


def make_task(params: FinanceParams) -> BinaryClassificationTask | XGBoostTask:
    """The fraud MLP trained with weighted BCE, or boosted trees (``model=xgboost``); PR-AUC is the primary metric."""
    if params.model == "xgboost":
        return XGBoostTask(booster_params=params.booster_params())
    hidden = params.hidden()

    def build(stats: FeatureStats) -> FraudMLP:
        return FraudMLP(stats, hidden=hidden, dropout=params.dropout)

    return BinaryClassificationTask(build=build, pos_weight=params.pos_weight, primary_metric="pr_auc")


SCENARIO = Scenario(
    name="finance-five-banks",
    domain="finance",
    description="Five banks (4k-48k transactions, 0.15-2% fraud) train a fraud MLP (or XGBoost) together.",
    site_noun="bank",
    adapter=TransactionAdapter(),
    make_data=make_data,
    make_task=make_task,
    params=FinanceParams(),
    run_defaults=RECOMMENDED_RUN,
    # Flower accounts client-level DP for plain FedAvg with equal bank weights only.
    privacy_defaults={"client-dp": {"strategy": "fedavg"}},
    model_defaults={"xgboost": RECOMMENDED_XGBOOST_RUN},
    policy=DEFAULT_POLICY,
    make_adapter=make_adapter,
)
