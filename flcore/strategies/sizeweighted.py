"""FedAvg with tunable size weighting: site k's weight is n_k^(1+beta) / sum_j n_j^(1+beta)."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log


def size_weights(sizes: list[float], beta: float) -> np.ndarray:
    """Normalised weights n_k^(1+beta) / sum_j n_j^(1+beta).

    ``beta = 0`` is sample-weighted FedAvg (McMahan et al. 2017); ``beta = -1`` weighs
    every site equally; ``beta < 0`` favours small sites, ``beta > 0`` large ones.
    """
    n = np.asarray(sizes, dtype=np.float64)
    if n.size == 0:
        raise ValueError("no site sizes given")
    if np.any(n <= 0) or not np.all(np.isfinite(n)):
        raise ValueError(f"site sizes must be positive and finite, got {sizes}")
    # Scale first so n^(1+beta) cannot overflow for large n and beta.
    w = np.power(n / n.max(), 1.0 + beta)
    return w / w.sum()


def weighted_average(records: list[ArrayRecord], weights: np.ndarray) -> ArrayRecord:
    """Weighted average of ArrayRecords holding the same keys and shapes."""
    out: dict[str, np.ndarray] = {}
    dtypes: dict[str, np.dtype] = {}
    for record, w in zip(records, weights, strict=True):
        for key, value in record.items():
            arr = value.numpy()
            dtypes.setdefault(key, arr.dtype)
            # Accumulate in float64, send back in the sites' own dtype (float32 stays float32).
            out[key] = out[key] + arr * float(w) if key in out else arr.astype(np.float64) * float(w)
    return ArrayRecord({k: Array(v.astype(dtypes[k])) for k, v in out.items()})


class FedAvgSizeWeighted(FedAvg):
    """FedAvg whose site weights follow n_k^(1+beta) instead of n_k.

    Sample-weighted FedAvg lets the largest site dominate. When the information
    that matters is concentrated at small sites (a small bank with a high fraud
    rate, a small hospital with a rare phenotype), ``beta < 0`` gives them a larger
    say. The rule generalises FedAvg (Li et al., "Fair Resource Allocation in
    Federated Learning", ICLR 2020, discuss the same trade-off).

    Parameters
    ----------
    beta : float
        Size exponent offset in [-1, 1]; 0 reproduces FedAvg exactly.
    **kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(self, beta: float = 0.0, **kwargs: Any) -> None:
        if not -1.0 <= beta <= 1.0:
            raise ValueError(f"beta must be a float in the range [-1, 1]. Got {beta} instead.")
        super().__init__(**kwargs)
        self.beta = beta

    def summary(self) -> None:
        """Log the strategy's configuration."""
        super().summary()
        log(INFO, "\t└──> Size weighting: n^(1+beta), beta=%s", self.beta)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies' arrays with size weights n_k^(1+beta)."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [msg.content for msg in valid]
        sizes = [float(cast(float, next(iter(c.metric_records.values()))[self.weighted_by_key])) for c in contents]
        arrays = [next(iter(c.array_records.values())) for c in contents]
        aggregated = weighted_average(arrays, size_weights(sizes, self.beta))
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return aggregated, metrics
