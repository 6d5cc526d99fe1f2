"""Federated preprocessing of tables: imputation values and category maps from per-site statistics, never rows.

A table read through a schema (:mod:`flcore.data.schematable`) arrives *raw*: one
float column per schema feature, a missing value as NaN, and a categorical column as
codes into the site's own list of categories (``info["vocab"]``). Before training:

1. every site summarises its training rows (:func:`summarise`): per numeric column
   the count and sum of its present values and the count of missing ones, per
   categorical column the set of categories it holds. That summary is all a site
   discloses for preprocessing; results.json records it (``governance.preprocessing``);
2. the summaries combine into one :class:`Preprocessing` (:meth:`Preprocessing.fit`):
   the mean of every numeric column over the federation's present values, and the
   sorted union of every categorical column's categories;
3. every site, and later every prediction, encodes its rows with it
   (:meth:`Preprocessing.transform`): missing numbers become the federation's mean,
   each category one 0/1 column (a category no site trained on: all zeros).

The standardisation that follows is the model's own layer, from the federation's
feature sums (:class:`flcore.data.site.FeatureStats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flcore.data.site import SiteData, SiteSplit
from flcore.exceptions import DataValidationError

#: The category a missing categorical value becomes under ``missing = "impute"``.
MISSING_CATEGORY = "<missing>"


@dataclass
class SiteSummary:
    """What one site discloses for preprocessing: counts and sums per number column, category sets.

    ``numeric[col] = (present values, their sum)``; ``missing[col]`` counts empty cells
    of any column; ``categories[col]`` is the sorted set of categories seen.
    """

    site: str
    rows: int
    numeric: dict[str, tuple[int, float]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> SiteSummary:
        """Inverse of :meth:`to_json` (a summary received from a site)."""
        numeric = {str(c): (int(v["count"]), float(v["sum"])) for c, v in dict(values["numeric_count_and_sum"]).items()}
        return cls(
            str(values["site"]),
            int(values["rows"]),
            numeric,
            {str(c): int(n) for c, n in dict(values["missing_counts"]).items()},
            {str(c): [str(v) for v in cats] for c, cats in dict(values["category_sets"]).items()},
        )

    def to_json(self) -> dict[str, Any]:
        """The disclosure as results.json's governance section records it."""
        return {
            "site": self.site,
            "rows": self.rows,
            "numeric_count_and_sum": {c: {"count": n, "sum": s} for c, (n, s) in self.numeric.items()},
            "missing_counts": dict(self.missing),
            "category_sets": {c: list(v) for c, v in self.categories.items()},
        }


def is_raw(site: SiteData) -> bool:
    """Whether a site's features are raw schema columns that need :class:`Preprocessing` first."""
    return "vocab" in site.info


def summarise(site: SiteData) -> SiteSummary:
    """A raw site's disclosure (see :class:`SiteSummary`), computed from its rows where they are."""
    columns: list[str] = list(site.info["raw_columns"])  # type: ignore[call-overload]
    vocab: dict[str, list[str]] = dict(site.info["vocab"])  # type: ignore[call-overload]
    x = np.asarray(site.x, dtype=np.float64)
    summary = SiteSummary(site.name, len(x))
    for j, col in enumerate(columns):
        values = x[:, j]
        present = ~np.isnan(values)
        summary.missing[col] = int((~present).sum())
        if col in vocab:
            codes = np.unique(values[present]).astype(int)
            summary.categories[col] = sorted({vocab[col][c] for c in codes})
        else:
            summary.numeric[col] = (int(present.sum()), float(values[present].sum()))
    return summary


@dataclass
class Preprocessing:
    """The federation's encoding of raw schema columns: imputation values and category maps.

    Parameters
    ----------
    columns : list of str
        The raw feature columns, in schema order.
    categories : dict
        Categorical column -> its categories, sorted (one 0/1 feature each).
    impute : dict
        Numeric column -> the value a missing cell takes (the federation's mean).
    missing : str
        The schema's rule, ``"refuse"`` or ``"impute"``.
    """

    columns: list[str]
    categories: dict[str, list[str]]
    impute: dict[str, float]
    missing: str = "refuse"

    @classmethod
    def fit(cls, summaries: Sequence[SiteSummary], columns: Sequence[str], missing: str) -> Preprocessing:
        """Combine the sites' summaries: means over all present values, unions of category sets.

        Raises
        ------
        DataValidationError
            When a numeric column has no value at any site (no mean to impute with).
        """
        categories: dict[str, set[str]] = {}
        impute: dict[str, float] = {}
        for col in columns:
            if any(col in s.categories for s in summaries):
                seen = set().union(*(s.categories.get(col, []) for s in summaries))
                if missing == "impute" and any(s.missing.get(col, 0) for s in summaries):
                    seen.add(MISSING_CATEGORY)
                categories[col] = seen
                continue
            count = sum(s.numeric[col][0] for s in summaries)
            total = sum(s.numeric[col][1] for s in summaries)
            if count == 0:
                raise DataValidationError(
                    ", ".join(s.site for s in summaries),
                    "the column is empty at every site, so it has no mean to impute missing values with.",
                    "Remove it from the schema's features (or list it under 'exclude').",
                    field=col,
                )
            if missing == "impute":
                impute[col] = total / count
        return cls(list(columns), {c: sorted(v) for c, v in categories.items()}, impute, missing)

    @property
    def feature_names(self) -> list[str]:
        """The encoded features in model order: a numeric column as itself, a category as ``column=value``."""
        out: list[str] = []
        for col in self.columns:
            out += [f"{col}={v}" for v in self.categories[col]] if col in self.categories else [col]
        return out

    def transform(self, site: SiteData) -> SiteData:
        """A raw site encoded for the model (numbers imputed, categories one-hot), same rows, same labels.

        ``info["unseen_categories"]`` counts the cells whose category no site trained on
        (they encode as all zeros).

        Raises
        ------
        DataValidationError
            When the site's raw columns are not this preprocessing's (another schema).
        """
        columns = list(site.info.get("raw_columns", []))  # type: ignore[call-overload]
        if columns != self.columns:
            absent, extra = [c for c in self.columns if c not in columns], [c for c in columns if c not in self.columns]
            what = (
                f"missing {', '.join(repr(c) for c in absent[:5])}" * bool(absent)
                + ("; " * bool(absent and extra))
                + f"not the model's: {', '.join(repr(c) for c in extra[:5])}" * bool(extra)
            ) or "the same columns in another order"
            raise DataValidationError(
                site.source or site.name,
                f"its feature columns are not the ones the model was trained on ({what}).",
                "Read the data with the schema the model was trained with (its manifest lists the columns).",
            )
        vocab: dict[str, list[str]] = dict(site.info["vocab"])  # type: ignore[call-overload]
        raw = np.asarray(site.x, dtype=np.float64)
        parts: list[np.ndarray] = []
        unseen = 0
        for j, col in enumerate(self.columns):
            values = raw[:, j]
            missing = np.isnan(values)
            if col in self.categories:
                index = {v: k for k, v in enumerate(self.categories[col])}
                # The site's own codes -> the federation's; the extra last entry stands in for missing cells.
                local = np.asarray([index.get(v, -1) for v in vocab.get(col, [])] + [-1])
                codes = np.where(
                    missing, index.get(MISSING_CATEGORY, -1), local[np.where(missing, -1, values).astype(int)]
                )
                onehot = np.zeros((len(values), len(self.categories[col])), dtype=np.float32)
                known = codes >= 0
                onehot[np.flatnonzero(known), codes[known]] = 1.0
                unseen += int((~known & ~missing).sum())
                parts.append(onehot)
            else:
                if missing.any() and col not in self.impute:
                    raise DataValidationError(
                        site.source or site.name,
                        f"{int(missing.sum())} missing value(s), and the model's schema refuses missing values.",
                        'Fill them before scoring, or train with missing = "impute".',
                        field=col,
                    )
                parts.append(np.where(missing, self.impute.get(col, 0.0), values)[:, None].astype(np.float32))
        x = np.concatenate(parts, axis=1) if parts else np.zeros((len(raw), 0), dtype=np.float32)
        info = {k: v for k, v in site.info.items() if k not in ("vocab", "raw_columns")}
        info.update(feature_names=self.feature_names, unseen_categories=unseen)
        return SiteData(site.name, x, site.y, site.source, info, ids=site.ids)

    def to_json(self) -> dict[str, Any]:
        """What a model's manifest records."""
        return {"columns": self.columns, "categories": self.categories, "impute": self.impute, "missing": self.missing}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Preprocessing:
        return cls(
            list(values["columns"]),
            {str(k): [str(c) for c in v] for k, v in dict(values["categories"]).items()},
            {str(k): float(v) for k, v in dict(values["impute"]).items()},
            str(values.get("missing", "refuse")),
        )


def federated_preprocessing(splits: list[SiteSplit]) -> tuple[list[SiteSplit], Preprocessing | None, list[SiteSummary]]:
    """Fit the federation's preprocessing on the sites' training summaries and encode every split with it.

    Returns the splits unchanged (and no preprocessing) when they are not raw schema tables.
    """
    if not splits or not is_raw(splits[0].train):
        return splits, None, []
    summaries = [summarise(s.train) for s in splits]
    info = splits[0].train.info
    prep = Preprocessing.fit(summaries, list(info["raw_columns"]), str(info["missing_rule"]))  # type: ignore[call-overload]
    return [encode_split(s, prep) for s in splits], prep, summaries


def encode_split(split: SiteSplit, prep: Preprocessing) -> SiteSplit:
    """A raw site split encoded with the federation's preprocessing (train, test and validation alike)."""
    val = prep.transform(split.val) if split.val is not None else None
    return SiteSplit(split.name, prep.transform(split.train), prep.transform(split.test), val)
