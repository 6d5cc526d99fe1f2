"""Site data: the adapter protocol, train/test splits and federated feature statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from sklearn.model_selection import train_test_split

from flcore.exceptions import DataValidationError

#: ``SiteData.y`` of a record whose label is not known (records to score).
UNLABELLED = -1

#: The file in a site's folder that holds the site's own policy (read by :mod:`flcore.governance.policy`).
SITE_POLICY_FILE = "policy.toml"
#: The folder, in a site's folder, for what the suite keeps there: the privacy ledger, the SuperNode's log.
SITE_STATE = ".flsuite"


@dataclass
class SiteData:
    """One site's examples: features ``x`` (float32, 2-D) and labels ``y`` (int64, 1-D)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    source: str = ""
    info: dict[str, object] = field(default_factory=dict)
    #: Optional: where each example came from (``"file.csv:12"``, a DICOM file, a recording window), one per row.
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim < 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"site {self.name}: x must be (n, ...) and y (n,), got {self.x.shape} and {self.y.shape}")
        if self.ids is not None and len(self.ids) != len(self.y):
            raise ValueError(f"site {self.name}: {len(self.ids)} example ids for {len(self.y)} examples")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class SiteSplit:
    """A site's train, optional validation, and held-out test examples.

    Validation examples never enter training; they exist to choose an operating
    point (a decision threshold) without touching the test split.
    """

    name: str
    train: SiteData
    test: SiteData
    val: SiteData | None = None


@dataclass
class Problem:
    """A file or record an adapter cannot use: strict mode refuses the site, lenient mode skips it.

    Parameters
    ----------
    path : str
        The file (or file and row) at fault.
    kind : str
        Short reason, counted per kind in ``SiteData.info["skipped"]`` in lenient mode.
    problem, fix : str
        What was expected and found; how to fix it.
    field : str, optional
        The column, tag or field at fault.
    """

    path: str
    kind: str
    problem: str
    fix: str
    field: str | None = None

    def __str__(self) -> str:
        where = self.path + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.problem}"

    def error(self, others: int, domain: str) -> DataValidationError:
        """The error strict mode raises, counting the ``others`` problems found in the same folder."""
        more = (
            f" ({others} more problem(s) in this folder; `flsuite site check --domain {domain} --data DIR --lenient` "
            "lists all)"
            if others
            else ""
        )
        return DataValidationError(self.path, self.problem + more, self.fix, field=self.field)


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

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load and validate a site; raise :class:`DataValidationError` on bad input.

        With ``strict=False`` an adapter may skip individual bad records or files
        instead of refusing, and counts them in ``SiteData.info["skipped"]``.
        """
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


def _stratified(idx: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Stratify when each class has at least two examples; otherwise a plain random split.
    counts = np.bincount(y) if y.size else np.array([])
    stratify = y if counts.size > 1 and counts.min() >= 2 else None
    try:
        a, b = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # too few examples for every class in both parts: plain split
        a, b = train_test_split(idx, test_size=fraction, random_state=seed)
    return np.sort(a), np.sort(b)


def split_site(site: SiteData, test_fraction: float, seed: int, val_fraction: float = 0.0) -> SiteSplit:
    """Stratified, seeded train/test split of one site, with optional validation split.

    Stratification keeps both positives and negatives in each split when the site has
    at least two of each; with fewer it falls back to a plain random split. The
    validation split (``val_fraction`` of what remains after the test split) is
    carved out of the training examples, so it never overlaps training or test.
    """
    need = 3 if val_fraction > 0 else 2
    if len(site) < need:
        raise DataValidationError(
            site.source or site.name,
            f"the site has {len(site)} example(s); at least {need} are needed to hold out test"
            + (" and validation splits." if need == 3 else " split."),
            "Add data to this site or remove it from the federation.",
        )
    tr, te = _stratified(np.arange(len(site)), site.y, test_fraction, seed)
    va = None
    if val_fraction > 0:
        tr, va = _stratified(tr, site.y[tr], val_fraction, seed + 1)

    def part(ix: np.ndarray, suffix: str) -> SiteData:
        ids = site.ids[ix] if site.ids is not None else None
        return SiteData(site.name, site.x[ix], site.y[ix], site.source, {**site.info, "split": suffix}, ids)

    return SiteSplit(site.name, part(tr, "train"), part(te, "test"), part(va, "validation") if va is not None else None)


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
