"""Model building blocks shared by domains: an MLP over federated-standardised tabular features."""

from __future__ import annotations

import torch
from torch import nn

from flcore.data.site import FeatureStats
from flcore.learning.training import Standardize


class TabularMLP(nn.Module):
    """Standardise -> [Linear -> ReLU -> Dropout] x k -> Linear to one logit.

    Parameters
    ----------
    stats : FeatureStats
        Feature statistics for the fixed standardisation layer (federated sums).
    hidden : tuple of int
        Hidden layer widths (empty: logistic regression).
    dropout : float
        Dropout after each hidden layer.
    """

    def __init__(self, stats: FeatureStats, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        self.standardize = Standardize(stats)
        layers: list[nn.Module] = []
        width = int(stats.mean.size)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(x)).squeeze(-1)
