"""The `tabular` scenario: any binary-classification table, read through its own schema."""

from __future__ import annotations

from pathlib import Path

from domains.tabular.config import RECOMMENDED_RUN, RECOMMENDED_XGBOOST_RUN, TabularParams
from domains.tabular.governance import DEFAULT_POLICY
from domains.tabular.synthetic import write_sites
from flcore.data.schema import TableSchema, find_schema
from flcore.data.schematable import SchemaTableAdapter
from flcore.data.site import FeatureStats
from flcore.exceptions import ConfigError
from flcore.governance.policy import site_drop_columns
from flcore.learning.models import TabularMLP
from flcore.learning.task import BinaryClassificationTask
from flcore.learning.xgb import XGBoostTask
from flcore.scenario import Scenario

#: Without a schema file: a ``label`` column (1 positive, 0 negative), every other column
#: but id/time ones a numeric feature, missing numbers imputed with the federation's means.
DEFAULT_SCHEMA = TableSchema(missing="impute")


def make_data(out: Path, seed: int = 0, scale: float = 1.0, file_format: str | None = None) -> list[Path]:
    """Three synthetic banks' CSV (or Parquet) tables of 20 numbers, a category and gaps, with ``schema.toml``."""
    if file_format not in (None, "csv", "parquet"):
        raise ConfigError(f"tabular writes csv or parquet tables, not {file_format}.")
    return write_sites(Path(out), seed=seed, scale=scale, file_format=file_format or "csv")


def make_adapter(params: TabularParams, data_dir: Path | None) -> SchemaTableAdapter:
    """The table adapter for the run's schema (``schema`` setting, ``DATA/schema.toml``, or the default)."""
    schema = find_schema(params.schema, data_dir) or DEFAULT_SCHEMA
    return SchemaTableAdapter(schema, site="site", noun="record", drop_columns=site_drop_columns)


def make_task(params: TabularParams) -> BinaryClassificationTask | XGBoostTask:
    """An MLP (or XGBoost) with ROC-AUC as primary metric and a Youden operating point chosen on validation rows."""
    if params.model == "xgboost":
        return XGBoostTask(booster_params=params.booster_params(), primary_metric="roc_auc", threshold_rule="youden")
    hidden = params.hidden()

    def build(stats: FeatureStats) -> TabularMLP:
        return TabularMLP(stats, hidden=hidden, dropout=params.dropout)

    return BinaryClassificationTask(
        build=build, pos_weight=params.pos_weight, primary_metric="roc_auc", threshold_rule="youden"
    )


SCENARIO = Scenario(
    name="tabular",
    domain="tabular",
    description="Any binary-classification table, with its own schema (label, features, categories, gaps).",
    site_noun="site",
    adapter=make_adapter(TabularParams(), None),
    make_data=make_data,
    make_task=make_task,
    params=TabularParams(),
    run_defaults=RECOMMENDED_RUN,
    model_defaults={"xgboost": RECOMMENDED_XGBOOST_RUN},
    policy=DEFAULT_POLICY,
    make_adapter=make_adapter,
)
