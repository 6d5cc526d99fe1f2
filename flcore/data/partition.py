"""Partitioners that form simulated sites from pooled examples: natural, label skew, quantity skew.

Flower Datasets has partitioners of the same names, but they work on Hugging Face
``datasets`` objects; these work on the numpy arrays the adapters return, with the
same semantics (Hsu et al. 2019 for the Dirichlet label skew).
"""

from __future__ import annotations

import numpy as np

from flcore.data.site import SiteData
from flcore.exceptions import ConfigError

_MAX_TRIES = 100


def _check(num_sites: int, n: int, alpha: float, min_size: int) -> None:
    if num_sites < 1:
        raise ConfigError(f"num-sites must be an int in the range [1, inf). Got {num_sites} instead.")
    if alpha <= 0:
        raise ConfigError(f"partition-alpha must be a float in the range (0, inf). Got {alpha} instead.")
    if num_sites * min_size > n:
        raise ConfigError(
            f"Cannot form {num_sites} sites of at least {min_size} examples from {n} examples. "
            "Lower num-sites or the minimum site size."
        )


def dirichlet_label_skew(
    y: np.ndarray, num_sites: int, alpha: float, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Split indices so that each class is spread over sites by Dirichlet(alpha) shares.

    Small ``alpha`` (0.1) gives sites dominated by one class; large ``alpha`` (100)
    approaches an IID split. Draws are repeated until every site holds at least
    ``min_size`` examples.

    Returns
    -------
    list of numpy.ndarray
        One sorted index array per site; together they cover every index once.
    """
    y = np.asarray(y)
    _check(num_sites, len(y), alpha, min_size)
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_TRIES):
        parts: list[list[int]] = [[] for _ in range(num_sites)]
        for cls in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == cls))
            shares = rng.dirichlet(np.full(num_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ConfigError(
        f"Could not form {num_sites} sites of at least {min_size} examples with "
        f"partition-alpha={alpha} after {_MAX_TRIES} draws. Raise partition-alpha or lower num-sites."
    )


def quantity_skew(n: int, num_sites: int, alpha: float, seed: int, min_size: int = 10) -> list[np.ndarray]:
    """Split ``n`` indices into sites whose sizes follow Dirichlet(alpha) shares.

    Labels stay IID; only the amount of data per site differs.
    """
    _check(num_sites, n, alpha, min_size)
    rng = np.random.default_rng(seed)
    spare = n - num_sites * min_size
    shares = rng.dirichlet(np.full(num_sites, alpha))
    sizes = min_size + np.floor(shares * spare).astype(int)
    sizes[np.argmax(sizes)] += n - sizes.sum()
    perm = rng.permutation(n)
    return [np.sort(p) for p in np.split(perm, np.cumsum(sizes)[:-1])]


def repartition(sites: list[SiteData], scheme: str, num_sites: int, alpha: float, seed: int) -> list[SiteData]:
    """Form sites by ``scheme``: ``natural`` keeps the given sites; otherwise pool and re-split."""
    if scheme == "natural":
        return sites
    x = np.concatenate([s.x for s in sites])
    y = np.concatenate([s.y for s in sites])
    k = num_sites or len(sites)
    if scheme == "dirichlet":
        parts = dirichlet_label_skew(y, k, alpha, seed)
    elif scheme == "quantity":
        parts = quantity_skew(len(y), k, alpha, seed)
    else:
        raise ConfigError(f"Unknown partition scheme {scheme!r}. Use natural, dirichlet or quantity.")
    return [
        SiteData(f"site_{i:02d}", x[ix], y[ix], source=f"{scheme} partition of {len(sites)} site(s)")
        for i, ix in enumerate(parts)
    ]
