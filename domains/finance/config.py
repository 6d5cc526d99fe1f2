"""Recommended hyperparameters for federated fraud detection, in one place.

Why these values (measured on ``finance-five-banks``, see the README):

* ``local-epochs = 5``: banks are few and reliable, so more local work per round
  saves communication without hurting convergence.
* SGD, ``learning-rate = 0.05``, momentum 0.9, batch 256, gradient clipping at 5.
* ``strategy = fedavg-sizeweighted`` with ``size-weight-beta = -1`` (equal weight per
  bank). Fraud is concentrated at smaller banks with higher fraud rates; plain
  sample-weighted FedAvg lets the largest bank, with the fewest fraud cases per
  transaction, dominate the average and loses about 10% PR-AUC against pooled
  training. Equal weights keep every bank's fraud patterns in the model.
* ``pos-weight = 10``: fraud is 0.1-2% of transactions; weighting positives ten-fold
  keeps them in the gradient without the instability of full re-balancing (~500x).
"""

from __future__ import annotations

from dataclasses import dataclass

from flcore.config import parse_ints, setting


@dataclass(frozen=True)
class FinanceParams:
    """Model hyperparameters of the finance models (``--set key=value``)."""

    model: str = setting(
        "mlp",
        "mlp (torch, weight-averaging strategies) or xgboost (boosted trees, fedxgb-bagging or fedxgb-cyclic).",
        choices=("mlp", "xgboost"),
    )
    schema: str = setting(
        "",
        "A schema file for banks' own tables (label, features, categories, missing values; see README). Empty: "
        "DATA/schema.toml when present, else the reference contract (128 numeric features and 'label').",
    )
    hidden_sizes: str = setting("64,32", "Hidden layer widths, comma-separated.")
    dropout: float = setting(0.1, "Dropout after each hidden layer.", low=0.0, high=1.0, high_open=True)
    pos_weight: float = setting(10.0, "Weight of fraud examples in the loss.", low=0.0, low_open=True)
    xgb_eta: float = setting(0.05, "xgboost: shrinkage of every tree.", low=0.0, high=1.0, low_open=True)
    xgb_max_depth: int = setting(6, "xgboost: maximum depth of a tree.", low=1, high=16)
    xgb_min_child_weight: float = setting(1.0, "xgboost: minimum hessian sum in a leaf.", low=0.0)
    xgb_lambda: float = setting(1.0, "xgboost: L2 penalty on leaf values.", low=0.0)

    def booster_params(self) -> dict[str, float]:
        """The XGBoost parameters these settings give."""
        return {
            "eta": self.xgb_eta,
            "max_depth": self.xgb_max_depth,
            "min_child_weight": self.xgb_min_child_weight,
            "lambda": self.xgb_lambda,
        }

    def hidden(self) -> tuple[int, ...]:
        """``hidden_sizes`` parsed to a tuple of positive ints."""
        return parse_ints(self.hidden_sizes, "hidden-sizes", "64,32")


RECOMMENDED_RUN = {
    "num-server-rounds": 20,
    "local-epochs": 5,
    "learning-rate": 0.05,
    "momentum": 0.9,
    "batch-size": 256,
    "clip-norm": 5.0,
    "strategy": "fedavg-sizeweighted",
    "size-weight-beta": -1.0,
    "fraction-train": 1.0,
    "test-fraction": 0.3,
}

#: With ``model=xgboost``: Flower's bagging, one boosting round per bank per round (every bank adds one
#: tree a round), and more rounds, which cost little for trees.
RECOMMENDED_XGBOOST_RUN = {
    "strategy": "fedxgb-bagging",
    "local-epochs": 1,
    "num-server-rounds": 60,
}
