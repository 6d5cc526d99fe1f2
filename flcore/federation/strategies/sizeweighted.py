"""FedAvg with tunable size weighting: site k's weight is n_k^(1+beta) / sum_j n_j^(1+beta)."""

from __future__ import annotations

from logging import INFO
from typing import Any

import numpy as np
from flwr.supercore import log

from flcore.federation.strategies.averaging import FedAvg, size_weights, weighted_average

__all__ = ["FedAvgSizeWeighted", "size_weights", "weighted_average"]


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
        Passed to :class:`flcore.federation.strategies.averaging.FedAvg` (Flower's FedAvg).
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

    def site_weights(self, sizes: list[float]) -> np.ndarray:
        """Weights n_k^(1+beta) / sum_j n_j^(1+beta) of the replies."""
        return size_weights(sizes, self.beta)
