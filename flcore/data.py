"""Site data: the adapter protocol, train/test splits and federated feature statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from sklearn.model_selection import train_test_split

from flcore.exceptions import DataValidationError


@dataclass
class SiteData:
    """One site's examples: features ``x`` (float32, 2-D) and labels ``y`` (int64, 1-D)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    source: str = ""
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim < 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"site {self.name}: x must be (n, ...) and y (n,), got {self.x.shape} and {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class SiteSplit:
    """A site's train and held-out test examples."""

    name: str
    train: SiteData
    test: SiteData


@runtime_checkable
class DomainAdapter(Protocol):
    """Reads one site's data in its domain's real format.

    One adapter per source format, as readers are in pydicom/MONAI: the core asks
    whether a folder is readable and, if so, gets arrays back; it never parses the
    format itself.
    """

    #: Human description of the expected layout, used in error messages.
    layout: str

    def can_read(self, site_dir: Path) -> bool:
        """Whether ``site_dir`` looks like a site folder of this format."""
        ...

    def read(self, site_dir: Path) -> SiteData:
        """Load and validate a site; raise :class:`DataValidationError` on bad input."""
        ...


def list_site_dirs(data_dir: Path, adapter: DomainAdapter) -> list[Path]:
    """The site folders of a data directory (one sub-folder per site), sorted by name.

    Raises
    ------
    DataValidationError
        When the directory does not exist, is empty or holds no site folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataValidationError(
            data_dir,
            "the data directory does not exist or is not a directory.",
            f"Pass a directory that holds one sub-folder per site ({adapter.layout}).",
        )
    sites = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sites:
        raise DataValidationError(
            data_dir,
            "no site sub-folder was found.",
            f"Create one sub-folder per site ({adapter.layout}).",
        )
    return sites


def split_site(site: SiteData, test_fraction: float, seed: int) -> SiteSplit:
    """Stratified, seeded train/test split of one site.

    Stratification keeps both positives and negatives in each split when the site has
    at least two of each; with fewer it falls back to a plain random split.
    """
    idx = np.arange(len(site))
    counts = np.bincount(site.y) if site.y.size else np.array([])
    stratify = site.y if counts.size > 1 and counts.min() >= 2 else None
    if len(site) < 2:
        raise DataValidationError(
            site.source or site.name,
            f"the site has {len(site)} example(s); at least 2 are needed to hold out a test split.",
            "Add data to this site or remove it from the federation.",
        )
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    tr.sort()
    te.sort()

    def part(ix: np.ndarray, suffix: str) -> SiteData:
        return SiteData(site.name, site.x[ix], site.y[ix], site.source, {**site.info, "split": suffix})

    return SiteSplit(site.name, part(tr, "train"), part(te, "test"))


@dataclass
class FeatureStats:
    """Per-feature sums a site can share without sharing rows: count, sum, sum of squares.

    Combining sites' stats gives the pooled mean and standard deviation exactly.
    """

    count: int
    total: np.ndarray
    total_sq: np.ndarray
    positives: int = 0

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray | None = None) -> FeatureStats:
        x64 = x.reshape(len(x), -1).astype(np.float64)
        return cls(
            count=len(x64),
            total=x64.sum(axis=0),
            total_sq=np.square(x64).sum(axis=0),
            positives=int(np.asarray(y).sum()) if y is not None else 0,
        )

    @staticmethod
    def combine(parts: list[FeatureStats]) -> FeatureStats:
        if not parts:
            raise ValueError("no statistics to combine")
        return FeatureStats(
            count=sum(p.count for p in parts),
            total=np.sum([p.total for p in parts], axis=0),
            total_sq=np.sum([p.total_sq for p in parts], axis=0),
            positives=sum(p.positives for p in parts),
        )

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        var = self.total_sq / max(self.count, 1) - np.square(self.mean)
        # Constant features get std 1 so that standardising leaves them at zero.
        std = np.sqrt(np.clip(var, 0.0, None))
        return np.where(std > 1e-8, std, 1.0)
