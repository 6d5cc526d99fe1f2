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

from domains.tabular.config import TabularParams
from flcore.config import setting


@dataclass(frozen=True)
class FinanceParams(TabularParams):
    """Model hyperparameters of the finance models (``--set key=value``): the tabular ones, fraud's defaults."""

    schema: str = setting(
        "",
        "A schema for banks' own tables: a file, or its JSON (--schema FILE passes that; see README). Empty: "
        "DATA/schema.toml when present, else the reference contract (128 numeric features and 'label').",
    )
    pos_weight: float = setting(10.0, "Weight of fraud examples in the loss.", low=0.0, low_open=True)


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

#: With ``model=xgboost``: histogram-based federated XGBoost (every tree grown from all banks' summed
#: histograms), 10 rounds of 30 trees: 300 trees, as many as the pooled and per-bank arms grow. Flower's bagging
#: (0.59x pooled PR-AUC on finance-five-banks) and cyclic stay as --strategy choices; see the README.
RECOMMENDED_XGBOOST_RUN = {
    "strategy": "fedxgb-hist",
    "local-epochs": 30,
    "num-server-rounds": 10,
}
