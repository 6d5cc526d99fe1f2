"""Anomaly models for the IoT vertical: a spectral autoencoder whose reconstruction error is the score."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from flcore.data.site import FeatureStats
from flcore.learning.training import Standardize


class SpectralAutoencoder(nn.Module):
    """Standardise -> encoder -> bottleneck -> decoder; returns each window's reconstruction error.

    Trained on normal windows only, it learns how spectra of healthy machines vary
    (speed, load, sensor gain); a defect adds structure it cannot reconstruct, so
    the mean squared error in standardised units is the anomaly score.

    Parameters
    ----------
    stats : FeatureStats
        Feature statistics for the fixed standardisation layer (federated sums).
    hidden : tuple of int
        Encoder widths down to the bottleneck, e.g. ``(128, 16)``; the decoder mirrors them.
    """

    def __init__(self, stats: FeatureStats, hidden: tuple[int, ...] = (128, 16)) -> None:
        super().__init__()
        self.standardize = Standardize(stats)
        width = int(stats.mean.size)
        dims = [width, *hidden]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            enc += [nn.Linear(a, b), nn.GELU()]
        self.encoder = nn.Sequential(*enc[:-1])  # linear bottleneck
        dec: list[nn.Module] = []
        rev = dims[::-1]
        for a, b in itertools.pairwise(rev):
            dec += [nn.GELU(), nn.Linear(a, b)]
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardize(x)
        return torch.mean((self.decoder(self.encoder(z)) - z) ** 2, dim=-1)
