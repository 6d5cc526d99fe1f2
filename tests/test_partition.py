"""Partitioners: coverage, minimum sizes, skew, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.data.partition import dirichlet_label_skew, quantity_skew, repartition
from flcore.data.site import SiteData
from flcore.exceptions import ConfigError


def _covers_once(parts: list[np.ndarray], n: int) -> bool:
    allidx = np.concatenate(parts)
    return len(allidx) == n and len(np.unique(allidx)) == n


def test_dirichlet_covers_every_index_once_and_respects_min_size() -> None:
    y = np.repeat([0, 1, 2], [300, 200, 100])
    parts = dirichlet_label_skew(y, num_sites=4, alpha=0.5, seed=0, min_size=20)
    assert _covers_once(parts, len(y))
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_small_alpha_skews_labels_more_than_large_alpha() -> None:
    y = np.repeat([0, 1], [1000, 1000])

    def spread(alpha: float) -> float:
        parts = dirichlet_label_skew(y, num_sites=5, alpha=alpha, seed=1, min_size=5)
        shares = [y[p].mean() for p in parts]
        return float(np.std(shares))

    assert spread(0.1) > 3 * spread(100.0)
    assert spread(100.0) < 0.05  # near IID


def test_dirichlet_is_deterministic_per_seed() -> None:
    y = np.repeat([0, 1], [100, 100])
    a = dirichlet_label_skew(y, 3, 1.0, seed=7)
    b = dirichlet_label_skew(y, 3, 1.0, seed=7)
    c = dirichlet_label_skew(y, 3, 1.0, seed=8)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_quantity_skew_sizes() -> None:
    parts = quantity_skew(1000, num_sites=5, alpha=0.3, seed=0, min_size=10)
    sizes = sorted(len(p) for p in parts)
    assert _covers_once(parts, 1000)
    assert sizes[0] >= 10
    assert sizes[-1] > 3 * sizes[0]  # skewed


def test_too_many_sites_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="Cannot form 50 sites of at least 10 examples from 100 examples"):
        quantity_skew(100, num_sites=50, alpha=1.0, seed=0)
    with pytest.raises(ConfigError, match=r"partition-alpha must be a float in the range \(0, inf\)"):
        dirichlet_label_skew(np.zeros(100), 2, alpha=0.0, seed=0)


def test_repartition_natural_keeps_sites_and_others_pool() -> None:
    rng = np.random.default_rng(0)
    sites = [SiteData(f"s{i}", rng.normal(size=(100, 3)).astype(np.float32), np.arange(100) % 2) for i in range(2)]
    assert repartition(sites, "natural", 0, 0.5, 0) is sites
    new = repartition(sites, "dirichlet", 4, 1.0, 0)
    assert len(new) == 4
    assert sum(len(s) for s in new) == 200
