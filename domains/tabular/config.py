"""Recommended settings for a binary-classification table of any schema, in one place.

Why these values:

* an MLP (64, 32) over the federation's standardised, imputed and one-hot encoded
  features, or XGBoost (``model=xgboost``) with Flower's bagging;
* SGD with momentum at 0.05, batch 128, 20 rounds of 3 local epochs: a table of a
  few thousand rows per site converges in that budget without overfitting;
* ``pos-weight = 1``: the label rate of a generic table is unknown; raise it for rare
  positives (fraud: 10, see finance-five-banks);
* ``val-fraction = 0.2``: a fifth of each site's training rows choose the operating
  threshold (Youden's J), so the exported model has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from flcore.config import parse_ints, setting


@dataclass(frozen=True)
class TabularParams:
    """Model hyperparameters of tabular models (``--set key=value``); ``schema`` names the table's schema file."""

    model: str = setting(
        "mlp",
        "mlp (torch, weight-averaging strategies) or xgboost (boosted trees: fedxgb-hist, fedxgb-bagging or "
        "fedxgb-cyclic).",
        choices=("mlp", "xgboost"),
    )
    schema: str = setting(
        "",
        "The tables' schema: a file, or its JSON (--schema FILE passes that; see README). Empty: DATA/schema.toml "
        "when present, else the scenario's own contract.",
    )
    hidden_sizes: str = setting("64,32", "Hidden layer widths, comma-separated.")
    dropout: float = setting(0.1, "Dropout after each hidden layer.", low=0.0, high=1.0, high_open=True)
    pos_weight: float = setting(1.0, "Weight of positive examples in the loss.", low=0.0, low_open=True)
    xgb_eta: float = setting(0.05, "xgboost: shrinkage of every tree.", low=0.0, high=1.0, low_open=True)
    xgb_max_depth: int = setting(6, "xgboost: maximum depth of a tree.", low=1, high=16)
    xgb_min_child_weight: float = setting(1.0, "xgboost: minimum hessian sum in a leaf.", low=0.0)
    xgb_lambda: float = setting(1.0, "xgboost: L2 penalty on leaf values.", low=0.0)
    xgb_max_bin: int = setting(
        256,
        "xgboost: histogram bins per feature. Fewer bins coarsen what fedxgb-hist's histograms say about each "
        "site's rows (and shrink its traffic), at some cost in accuracy.",
        low=2,
        high=1024,
    )

    def booster_params(self) -> dict[str, float | int]:
        """The XGBoost parameters these settings give."""
        return {
            "eta": self.xgb_eta,
            "max_depth": self.xgb_max_depth,
            "min_child_weight": self.xgb_min_child_weight,
            "lambda": self.xgb_lambda,
            "max_bin": self.xgb_max_bin,
        }

    def hidden(self) -> tuple[int, ...]:
        """``hidden_sizes`` parsed to a tuple of positive ints."""
        return parse_ints(self.hidden_sizes, "hidden-sizes", "64,32")


RECOMMENDED_RUN = {
    "num-server-rounds": 20,
    "local-epochs": 3,
    "learning-rate": 0.05,
    "momentum": 0.9,
    "batch-size": 128,
    "clip-norm": 5.0,
    "strategy": "fedavg",
    "fraction-train": 1.0,
    "test-fraction": 0.3,
    "val-fraction": 0.2,
}

#: With ``model=xgboost``: histogram-based federated XGBoost, 10 rounds of 20 trees grown by all sites together
#: (each round one checkpointed session; bagging and cyclic stay as --strategy choices).
RECOMMENDED_XGBOOST_RUN = {
    "strategy": "fedxgb-hist",
    "local-epochs": 20,
    "num-server-rounds": 10,
}
