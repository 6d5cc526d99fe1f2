"""Reads any table (CSV or Parquet) through its schema (:mod:`flcore.data.schema`), validated at the boundary.

Contract, per site folder: one or more ``.csv`` / ``.parquet`` files with the same
columns, holding the schema's label and features. Columns named like a direct
identifier are refused unless the schema or the site's ``policy.toml`` drops them
(then they are never read). The site comes back *raw* (see
:mod:`flcore.data.preprocess`): the federation's preprocessing encodes it before
training. Errors name the file, the row and the column, never a cell's value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data.identifiers import normalise_column, refuse_identifiers
from flcore.data.schema import TableSchema, as_text, is_empty
from flcore.data.site import UNLABELLED, SiteData
from flcore.data.tables import read_table, site_tables, table_files, tables_to_score
from flcore.data.validation import IGNORED_COLUMNS, describe_value, parse_consent
from flcore.exceptions import DataValidationError


class SchemaTableAdapter:
    """Domain adapter for tables described by a :class:`TableSchema` (see module docstring).

    Parameters
    ----------
    schema : TableSchema
        What the tables hold.
    site : str
        What a site is ("bank", "hospital"), for messages.
    noun : str
        What a row is ("transaction", "patient").
    drop_columns : callable, optional
        ``drop_columns(site_dir)``: the columns a site's own policy drops, never read
        (:func:`flcore.governance.policy.site_drop_columns`; the data layer does not read policies).
    """

    def __init__(
        self,
        schema: TableSchema,
        site: str = "site",
        noun: str = "record",
        drop_columns: Callable[[Path], Sequence[str]] | None = None,
    ) -> None:
        self.schema, self.site, self.noun = schema, site, noun
        self.drop_columns: Callable[[Path], Sequence[str]] = drop_columns or (lambda _: ())
        self.layout = (
            f"each {site} folder holds one or more .csv or .parquet files with the columns its schema names "
            f"(label '{schema.label}'" + (f", features {', '.join(schema.features)}" if schema.features else "") + ")"
        )

    def can_read(self, site_dir: Path) -> bool:
        """Whether the folder holds at least one CSV or Parquet file."""
        return bool(table_files(site_dir))

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load every table of the site folder through the schema, labels required.

        With ``strict=False`` a record with a bad label or a value the schema refuses is
        dropped and counted in ``info["skipped"]["invalid"]`` instead of refusing the table.

        Raises
        ------
        DataValidationError
            Naming the file, the row and the column, for any breach of the schema.
        """
        site_dir = Path(site_dir)
        files = site_tables(site_dir, self.site, f"Put the {self.site}'s table in a .csv or .parquet file.")
        site = self._site(site_dir.name, str(site_dir), files, self.drop_columns(site_dir), strict, labelled=True)
        vocab: dict[str, list[str]] = site.info["vocab"]  # type: ignore[assignment]
        for column, categories in vocab.items():  # what the site would disclose for preprocessing
            if len(categories) > self.schema.max_categories:
                raise DataValidationError(
                    site_dir,
                    f"the categorical column holds {len(categories)} different values, more than the schema's "
                    f"max_categories ({self.schema.max_categories}); its set of categories would disclose row values.",
                    "Exclude the column, group its values into fewer categories before export, or raise "
                    "max_categories in the schema if the values identify no one.",
                    field=column,
                )
        return site

    def read_unlabelled(self, path: Path, *, strict: bool = True) -> SiteData:
        """Records to score: a table file or a folder of them; labels are used where present, else ``UNLABELLED``."""
        name, files, folder = tables_to_score(path, self.site, "Pass a .csv or .parquet file, or a folder of them.")
        return self._site(name, str(path), files, self.drop_columns(folder), strict, labelled=False)

    def from_frame(self, frame: pd.DataFrame, name: str = "frame") -> SiteData:
        """Records to score from an in-memory table (labels used where present; the schema's ``drop`` unread)."""
        frame = frame.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        dropped = {normalise_column(c) for c in self.schema.drop}
        frame = frame[[c for c in frame.columns if normalise_column(c) not in dropped]]
        return self._assemble(name, name, [(Path(name), self._rows(frame, Path(name), True, labelled=False))])

    # -- reading -----------------------------------------------------------------------

    def _site(
        self, name: str, source: str, files: list[Path], drop: Sequence[str], strict: bool, *, labelled: bool
    ) -> SiteData:
        expected = f"Write a header with the columns the schema names, then one row per {self.noun}."
        drop = [*drop, *self.schema.drop]
        parts = [(p, self._rows(read_table(p, expected, drop=drop), p, strict, labelled=labelled)) for p in files]
        return self._assemble(name, source, parts)

    def _rows(self, frame: pd.DataFrame, path: Path, strict: bool, *, labelled: bool) -> _Rows:
        """One table checked against the schema: its consented, valid rows, features parsed.

        A label must be the schema's positive or negative value; when scoring (``labelled=False``) it may
        also be empty or absent (``UNLABELLED``), but a filled-in wrong one is as bad as in training.
        """
        s = self.schema
        n_read = len(frame)
        if n_read == 0:
            raise DataValidationError(
                path, "the table has a header but no rows.", f"Export at least one {self.noun} under the header."
            )
        refuse_identifiers(frame.columns, path)
        no_consent = 0
        if s.consent is not None and (labelled or s.consent in frame.columns):
            keep = parse_consent(frame, path, s.consent)
            no_consent = int((~keep).sum())
            frame = frame[keep]
        features = self._features(frame, path)
        self._check_named_columns(frame, path)
        if s.label in frame.columns:
            y = frame[s.label].map(s.is_positive)
            if labelled:
                self._check_positive_present(frame[s.label], y, path)
        elif labelled:
            raise DataValidationError(
                path,
                f"there is no '{s.label}' column, which the schema names as the label.",
                f"Add the '{s.label}' column, or name the label column in the schema (label = \"...\").",
                field=s.label,
            )
        else:
            y = pd.Series(None, index=frame.index, dtype=object)
        values = {c: self._column(frame[c], path, c) for c in features}
        bad: dict[int, tuple[str, str]] = {}  # row -> (column, reason)
        if s.label in frame.columns:
            for i in y.index[y.isna()]:
                cell = frame.at[i, s.label]
                if labelled or not is_empty(cell):
                    bad.setdefault(i, (s.label, f"'{s.label}' is {describe_value(cell)}, expected {s.label_meaning()}"))
        if s.missing == "refuse":
            for c, v in values.items():
                for i in v.index[v.isna()]:
                    bad.setdefault(i, (c, f"'{c}' is missing a value"))
        if bad and strict:
            i, (field, why) = min(bad.items())
            raise DataValidationError(
                path,
                f"row {int(i) + 1}: {why} ({len(bad)} bad row(s) in the table).",
                f"Write {s.label_meaning()} in '{s.label}', or set positive and negative in the schema."
                if field == s.label
                else 'Fill the missing values, or set missing = "impute" in the schema to use the federation\'s means.',
                field=field,
            )
        keep_rows = frame.index.difference(pd.Index(list(bad)))
        return _Rows(
            features,
            {c: v.loc[keep_rows] for c, v in values.items()},
            y.loc[keep_rows],
            [f"{path.name}:{int(i) + 1}" for i in keep_rows],
            n_read,
            no_consent,
            [f"{path.name} row {int(i) + 1}: {why}" for i, (_, why) in sorted(bad.items())[:5]],
            len(bad),
            s.consent is None or s.consent in frame.columns,
        )

    def _check_named_columns(self, frame: pd.DataFrame, path: Path) -> None:
        """Every column the schema names as categorical or excluded is in the table (a typo would change the model)."""
        for key, names in (("categorical", self.schema.categorical), ("exclude", self.schema.exclude)):
            absent = [c for c in names if c not in frame.columns]
            if absent:
                raise DataValidationError(
                    path,
                    f"the schema's {key} column '{absent[0]}' is not in the table ({len(absent)} missing).",
                    f"Correct the name in the schema's '{key}' (column names are case-sensitive), or remove it.",
                    field=absent[0],
                )

    def _check_positive_present(self, labels: pd.Series, y: pd.Series, path: Path) -> None:
        """Refuse labels none of which is the positive value when every other value counts as negative (a typo)."""
        s = self.schema
        if s.negative is not None or (y == True).any() or not labels.notna().any():  # noqa: E712 (object series)
            return
        found = ", ".join(sorted({str(v) for v in labels.dropna().unique()})[:5])
        raise DataValidationError(
            path,
            f"no row of '{s.label}' holds the schema's positive value '{s.positive}' (values found: {found}), "
            "and every other value would count as negative.",
            "Correct 'positive' in the schema, or name 'negative' too so that any other value is refused.",
            field=s.label,
        )

    def _features(self, frame: pd.DataFrame, path: Path) -> list[str]:
        s = self.schema
        if s.features:
            absent = [c for c in s.features if c not in frame.columns]
            if absent:
                raise DataValidationError(
                    path,
                    f"the schema's feature column '{absent[0]}' is not in the table ({len(absent)} missing).",
                    "Export every feature the schema lists, or correct the schema's 'features'.",
                    field=absent[0],
                )
            return list(s.features)
        skip = {s.label, *s.exclude, *((s.consent,) if s.consent else ())}
        features = [c for c in frame.columns if c not in skip and not IGNORED_COLUMNS.match(c)]
        if not features:
            raise DataValidationError(
                path, "no feature column is left besides the label.", "Export the feature columns next to the label."
            )
        return features

    def _column(self, series: pd.Series, path: Path, column: str) -> pd.Series:
        """A feature column as numbers (NaN: missing), or as category texts (NaN: missing)."""
        if column in self.schema.categorical:
            return series.map(_category)
        if pd.api.types.is_bool_dtype(series):  # numpy bool, or pandas' nullable boolean (NA: missing)
            return pd.Series(series.to_numpy(dtype=float, na_value=np.nan), index=series.index)
        numbers = pd.to_numeric(series.astype(object), errors="coerce").astype(float)
        text = numbers.isna() & ~series.map(is_empty)
        if text.any():
            raise DataValidationError(
                path,
                f"expected numbers but found {describe_value(series[text].iloc[0])} in row "
                f"{int(series[text].index[0]) + 1}.",
                "List the column under 'categorical' in the schema, or under 'exclude' if it is no feature.",
                field=column,
            )
        infinite = np.isinf(numbers) | (numbers.abs() > np.finfo(np.float32).max)
        if infinite.any():
            raise DataValidationError(
                path,
                f"expected finite numbers but found an infinite or out-of-range value in row "
                f"{int(numbers[infinite].index[0]) + 1}.",
                'Replace infinite values (or leave the cell empty and use missing = "impute").',
                field=column,
            )
        return numbers

    def _assemble(self, name: str, source: str, parts: list[tuple[Path, _Rows]]) -> SiteData:
        first_path, first = parts[0]
        for path, rows in parts[1:]:
            if rows.features != first.features:
                raise DataValidationError(
                    path,
                    f"its feature columns differ from those of {first_path.name}.",
                    f"Every file of a {self.site} must have the same columns.",
                )
        columns = first.features
        vocab: dict[str, list[str]] = {}
        raw = []
        for c in columns:
            col = pd.concat([r.values[c] for _, r in parts]) if parts else pd.Series(dtype=float)
            if c in self.schema.categorical:
                codes, uniques = pd.factorize(col, use_na_sentinel=True)
                vocab[c] = [str(u) for u in uniques]
                raw.append(np.where(codes < 0, np.nan, codes).astype(np.float64))
            else:
                raw.append(col.to_numpy(dtype=np.float64))
        n = sum(len(r.ids) for _, r in parts)
        x = np.stack(raw, axis=1).astype(np.float32) if raw else np.zeros((n, 0), dtype=np.float32)
        labels = pd.concat([r.y for _, r in parts])
        y = np.asarray([UNLABELLED if v is None or v != v else int(bool(v)) for v in labels], dtype=np.int64)
        if n == 0:
            raise DataValidationError(
                source, f"no usable {self.noun} is left after consent and validation.", "Check the table's rows."
            )
        read = sum(r.n_read for _, r in parts)
        return SiteData(
            name,
            x,
            y,
            source=source,
            info={
                "feature_names": columns,
                "raw_columns": columns,
                "vocab": vocab,
                "missing_rule": self.schema.missing,
                "schema": self.schema.to_dict(),
                "records_read": read,
                "consent_recorded": all(r.consent_recorded for _, r in parts),
                "skipped": {
                    "no_consent": sum(r.no_consent for _, r in parts),
                    "invalid": sum(r.invalid for _, r in parts),
                },
                "skipped_examples": [e for _, r in parts for e in r.examples][:5],
                "files": [str(p) for p, _ in parts],
            },
            ids=np.asarray([i for _, r in parts for i in r.ids], dtype=object),
        )


class _Rows:
    """One table's usable rows: parsed feature columns, labels (True/False/None), ids and counts."""

    def __init__(
        self,
        features: list[str],
        values: dict[str, pd.Series],
        y: pd.Series,
        ids: list[str],
        n_read: int,
        no_consent: int,
        examples: list[str],
        invalid: int,
        consent_recorded: bool,
    ) -> None:
        self.features, self.values, self.y, self.ids = features, values, y, ids
        self.n_read, self.no_consent, self.examples, self.invalid = n_read, no_consent, examples, invalid
        self.consent_recorded = consent_recorded


def _category(value: object) -> object:
    """A category as text (``5411`` and ``5411.0`` are one: :func:`~flcore.data.schema.as_text`); empty: NaN."""
    return np.nan if is_empty(value) else as_text(value)
