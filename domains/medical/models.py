"""Models of the medical vertical: a small CNN for lesion detection and an MLP for clinical tables."""

from __future__ import annotations

import torch
from torch import nn

from flcore.data.site import FeatureStats
from flcore.learning.models import TabularMLP


class IntensityNorm(nn.Module):
    """Fixed ``(x - mean) / std`` with one mean and std over all pixels of the federation.

    Computed from the sites' pooled per-pixel sums, stored as buffers so every
    hospital normalises identically.
    """

    def __init__(self, stats: FeatureStats) -> None:
        super().__init__()
        pixels = max(int(stats.total.size), 1)
        n = max(stats.count, 1) * pixels
        mean = float(stats.total.sum()) / n
        var = max(float(stats.total_sq.sum()) / n - mean * mean, 1e-8)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(var**0.5, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LesionCNN(nn.Module):
    """Conv blocks (3x3 conv, GroupNorm, ReLU, 2x2 max-pool) -> global avg+max pool -> one logit.

    GroupNorm rather than BatchNorm: batch statistics differ between hospitals and
    running averages do not aggregate meaningfully in FedAvg. Global max pooling
    keeps a small lesion's response from being averaged away.

    Parameters
    ----------
    stats : FeatureStats
        Pixel sums of the federation, for the intensity normalisation.
    channels : tuple of int
        Output channels of each block; every block but the last halves the resolution.
    dropout : float
        Dropout before the classifier.
    """

    def __init__(self, stats: FeatureStats, channels: tuple[int, ...] = (16, 32, 64, 64), dropout: float = 0.2):
        super().__init__()
        self.norm = IntensityNorm(stats)
        layers: list[nn.Module] = []
        width = 1
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(width, c, 3, padding=1), nn.GroupNorm(min(8, c), c), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            width = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(self.norm(x))
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(-1)


def augment_images(batch: torch.Tensor, gen: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Random horizontal flips and shifts of up to ``max_shift`` pixels (per batch), seeded by ``gen``."""
    out = batch
    flip = torch.rand(len(out), generator=gen) < 0.5
    if flip.any():
        out = out.clone()
        out[flip] = out[flip].flip(-1)
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    return torch.roll(out, shifts=(dy, dx), dims=(-2, -1))


class ClinicalMLP(TabularMLP):
    """A clinical risk score: standardised clinical features -> small MLP -> one logit.

    See :class:`flcore.learning.models.TabularMLP` for the parameters.
    """
