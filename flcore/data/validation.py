"""The numeric-table contract: feature columns, finite float32 features, 0/1 labels and consent, checked."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data.identifiers import refuse_identifiers
from flcore.data.schema import SCHEMA_HINT
from flcore.data.site import UNLABELLED
from flcore.exceptions import DataValidationError

#: Key and time columns that are never features (a pseudonymous key such as ``patient_id`` may stay).
IGNORED_COLUMNS = re.compile(r"^(id|.*_id|timestamp|time|date|datetime|.*_at)$", re.IGNORECASE)

CONSENT = "consent"
_CONSENT_WORDS = {"yes": True, "y": True, "true": True, "1": True, "no": False, "n": False, "false": False, "0": False}


def feature_columns(
    frame: pd.DataFrame,
    path: Path,
    *,
    label: str = "label",
    n_features: int | None = None,
    ignored: re.Pattern[str] = IGNORED_COLUMNS,
    drop: Iterable[str] = (),
    label_fix: str = "Map the positive class to 1 and the negative class to 0.",
    noun: str = "record",
    label_required: bool = True,
) -> list[str]:
    """The feature columns of a table, after checking the label column and the feature count.

    Needs no rows, so it also checks the header of a table whose rows were all filtered out.

    Parameters
    ----------
    frame : pd.DataFrame
        The table, as returned by :func:`~flcore.data.tables.read_table`.
    path : Path
        The file, named in errors.
    label : str
        The label column.
    n_features : int or None
        The exact number of feature columns expected; None accepts any number >= 1.
    ignored : re.Pattern
        Columns matching it (identifiers, times) are not features.
    drop : iterable of str
        Other non-feature columns (e.g. ``consent``).
    label_fix : str
        What 1 and 0 mean, e.g. "Map fraud to 1 and legitimate to 0."
    noun : str
        What a row is ("transaction", "patient").
    label_required : bool
        Refuse a table without the label column (True, for training); False accepts one
        (records to score), and the label column, when present, is still no feature.

    Returns
    -------
    list of str
        Feature column names, in file order.

    Raises
    ------
    DataValidationError
        When a column is named like a direct identifier (even one ``ignored`` would have
        left out, such as ``national_id``), the label column is missing (if required) or
        the feature count is wrong.
    """
    refuse_identifiers(frame.columns, path)
    drop = set(drop)
    if label_required and label not in frame.columns:
        raise DataValidationError(
            path,
            f"there is no '{label}' column (columns found: {_preview(frame.columns)}).",
            f"Add a '{label}' column with 0 or 1 for every {noun}. {label_fix}{SCHEMA_HINT}",
            field=label,
        )
    features = [c for c in frame.columns if c != label and c not in drop and not ignored.match(c)]
    named = [label] if label_required or label in frame.columns else []
    others = ", ".join(f"'{c}'" for c in [*named, *sorted(drop & set(frame.columns))])
    besides = f"besides {others} and ignored id/time columns" if others else "besides ignored id/time columns"
    if n_features is not None and len(features) != n_features:
        raise DataValidationError(
            path,
            f"expected exactly {n_features} feature columns but found {len(features)} ({besides}).",
            f"Export all {n_features} features; id and time columns may stay, other extra columns must go."
            + SCHEMA_HINT,
        )
    if not features:
        raise DataValidationError(
            path,
            f"expected at least one feature column but found none ({besides}).",
            "Export the numeric feature columns next to the label.",
        )
    return features


def validate_frame(
    frame: pd.DataFrame,
    path: Path,
    *,
    label: str = "label",
    n_features: int | None = None,
    ignored: re.Pattern[str] = IGNORED_COLUMNS,
    drop: Iterable[str] = (),
    label_fix: str = "Map the positive class to 1 and the negative class to 0.",
    noun: str = "record",
    site: str = "site",
    allow_empty: bool = False,
    label_required: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check a table against the numeric-table contract and return its arrays.

    The frame's index must hold the 0-based row positions in the file (as
    :func:`~flcore.data.tables.read_table` gives them), so that rows dropped beforehand
    do not shift the row numbers in errors.

    Parameters
    ----------
    frame, path, label, n_features, ignored, drop, label_fix, noun
        As for :func:`feature_columns`.
    site : str
        What a folder of tables is ("bank", "hospital"), for the fix of an empty table.
    allow_empty : bool
        Accept a table without rows (e.g. once every row was filtered out) and return empty arrays.
    label_required : bool
        True (training): every record needs a label, 0 or 1. False (records to score): the
        label column may be absent, and an empty label cell is allowed; both give
        :data:`~flcore.data.schematable.UNLABELLED`. A label that is given must still be 0 or 1.

    Returns
    -------
    x : np.ndarray
        Features, float32, shape (n, n_features).
    y : np.ndarray
        Labels, int64, shape (n,), values 0 or 1 (or ``UNLABELLED`` when labels are not required).
    feature_names : list of str
        The feature columns, in file order.

    Raises
    ------
    DataValidationError
        For a missing label column (if required), a wrong feature count, a table without rows,
        text in a feature column, a value that is not finite as float32, or a label other than 0 or 1.
    """
    features = feature_columns(
        frame,
        path,
        label=label,
        n_features=n_features,
        ignored=ignored,
        drop=drop,
        label_fix=label_fix,
        noun=noun,
        label_required=label_required,
    )
    if len(frame) == 0 and not allow_empty:
        raise DataValidationError(
            path,
            "the table has a header but no rows.",
            f"A {site} needs at least one {noun}; remove the {site} or export its data again.",
        )
    numeric = _numeric(frame, features, path)
    x = numeric.to_numpy(dtype=np.float64)
    x32 = _float32(x)
    finite = np.isfinite(x32)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise DataValidationError(
            path,
            f"expected finite numbers but found {_non_finite(x[r, c])} in row {_row(frame.index[r])} "
            f"({int((~finite).sum())} non-finite value(s) in the table).",
            "Impute or drop missing and infinite values, and keep |value| below 3.4e38 (float32), before export.",
            field=features[c],
        )

    if label not in frame.columns:  # only when labels are not required
        return x32, np.full(len(frame), UNLABELLED, dtype=np.int64), features
    labels = frame[label]
    numeric_labels = pd.to_numeric(labels, errors="coerce")
    unlabelled = pd.Series(False, index=labels.index) if label_required else _empty(labels)
    bad = ~numeric_labels.isin([0, 1]) & ~unlabelled
    if bad.any():
        raise DataValidationError(
            path,
            f"labels must be 0 or 1 but found {describe_value(labels[bad].iloc[0], number=_NOT_01)} in row "
            f"{_row(labels[bad].index[0])} ({int(bad.sum())} bad label(s)).",
            label_fix,
            field=label,
        )
    return x32, numeric_labels.where(~unlabelled, UNLABELLED).to_numpy(dtype=np.int64), features


def invalid_rows(
    frame: pd.DataFrame, features: list[str], label: str = "label", *, label_required: bool = True
) -> pd.Series:
    """The records a lenient read drops: a feature not finite as float32, or a label other than 0 or 1.

    Text in a feature column is not a record problem but a table one; it is left for
    :func:`validate_frame` to refuse.

    Parameters
    ----------
    frame : pd.DataFrame
        The table, index holding 0-based row positions.
    features : list of str
        Its feature columns (from :func:`feature_columns`).
    label : str
        The label column.
    label_required : bool
        False (records to score): an absent label column or an empty label cell is no problem,
        as for :func:`validate_frame`.

    Returns
    -------
    pd.Series
        One reason per bad record (the first problem found), indexed like ``frame``.
    """
    if len(frame) == 0:
        return pd.Series(dtype=object)
    coerced = frame[features].apply(lambda col: pd.to_numeric(col.astype(object), errors="coerce"))
    text = coerced.isna().to_numpy() & frame[features].notna().to_numpy()
    x = coerced.to_numpy(dtype=np.float64)
    bad_x = ~np.isfinite(_float32(x)) & ~text
    if label in frame.columns:
        labels = frame[label]
        bad_y = ~pd.to_numeric(labels, errors="coerce").isin([0, 1]).to_numpy()
        if not label_required:
            bad_y &= ~_empty(labels).to_numpy()
    else:  # only when labels are not required (feature_columns refuses it otherwise)
        labels, bad_y = pd.Series(index=frame.index, dtype=object), np.zeros(len(frame), dtype=bool)
    reasons = {}
    for r in np.flatnonzero(bad_x.any(axis=1) | bad_y):
        if bad_x[r].any():
            c = int(np.argmax(bad_x[r]))
            reasons[frame.index[r]] = f"non-finite value {_non_finite(x[r, c])} in '{features[c]}'"
        else:
            reasons[frame.index[r]] = f"label is {describe_value(labels.iloc[r], number=_NOT_01)}, not 0 or 1"
    return pd.Series(reasons, dtype=object)


def parse_consent(values: pd.DataFrame | pd.Series, path: Path, column: str = CONSENT) -> np.ndarray:
    """Read a consent column as booleans.

    Parameters
    ----------
    values : pd.DataFrame or pd.Series
        The table (its ``column`` is read) or the column itself, index holding 0-based row positions.
    path : Path
        The file, named in errors.
    column : str
        The consent column of a table.

    Returns
    -------
    np.ndarray
        True where the record may be used. Accepts yes/no, y/n, true/false, 1/0 (any case,
        surrounding spaces ignored) and booleans.

    Raises
    ------
    DataValidationError
        When the column is missing, or a value (empty included) is none of those.
    """
    if isinstance(values, pd.DataFrame):
        if column not in values.columns:
            raise DataValidationError(
                path,
                f"there is no '{column}' column (columns found: {_preview(values.columns)}).",
                f"Add a '{column}' column with yes or no for every record.",
                field=column,
            )
        values = values[column]
    parsed = values.map(_consent_value)
    bad = parsed.isna()
    if bad.any():
        raise DataValidationError(
            path,
            f"consent must be yes or no but found {describe_value(values[bad].iloc[0], number=_NOT_01)} in row "
            f"{_row(values[bad].index[0])} ({int(bad.sum())} bad value(s)).",
            "Write yes or no for every record; a record without recorded consent cannot be used.",
            field=column,
        )
    return parsed.to_numpy(dtype=bool)


def _empty(values: pd.Series) -> pd.Series:
    """Where a cell holds no value: NaN, None or blank text (an unlabelled record, when labels are optional)."""
    return values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())


def _consent_value(value: object) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return True if value == 1 else False if value == 0 else None  # NaN and 2 give None
    if isinstance(value, str):
        return _CONSENT_WORDS.get(value.strip().lower())
    return None


def _numeric(frame: pd.DataFrame, features: list[str], path: Path) -> pd.DataFrame:
    """The feature columns as numbers; refuse a column holding text (or booleans)."""
    columns = {}
    for col in features:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            columns[col] = series
            continue
        numeric = pd.to_numeric(series.astype(object), errors="coerce")
        bad = series[numeric.isna() & series.notna()]
        # A text column whose text rows were all filtered out (e.g. no consent) holds numbers now.
        if len(bad) or pd.api.types.is_bool_dtype(series):
            example = f" (e.g. {describe_value(bad.iloc[0])} in row {_row(bad.index[0])})" if len(bad) else ""
            raise DataValidationError(
                path,
                f"expected numeric values but the column holds text{example}.",
                "Encode categorical fields as numbers before export." + SCHEMA_HINT,
                field=col,
            )
        columns[col] = numeric
    return pd.DataFrame(columns, index=frame.index)


def _float32(x: np.ndarray) -> np.ndarray:
    # Checked as float32, the type models train on: 1e39 is finite in float64 but not there.
    with np.errstate(over="ignore"):
        return x.astype(np.float32)


_NOT_01 = "a number other than 0 or 1"


def describe_value(value: object, number: str | None = None) -> str:
    """What kind of value a cell holds, never the value itself (it could identify someone).

    Parameters
    ----------
    value : object
        The cell.
    number : str, optional
        How to describe a finite number, e.g. "a number other than 0 or 1"; None shows the
        number itself (for settings such as a sampling rate, which identify no one).

    Returns
    -------
    str
        E.g. "an empty value", "a text value", "a boolean", "an infinite value", "12800".
    """
    item = getattr(value, "item", None)
    if callable(item) and isinstance(value, np.generic):
        value = item()
    if value is None or value is pd.NA or value is pd.NaT:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, str):
        if not value.strip():
            return "an empty value"
        try:
            value = float(value)
        except ValueError:
            return "a text value"
    if isinstance(value, int | float):
        if math.isnan(value):
            return "an empty value (NaN)"
        if math.isinf(value):
            return "an infinite value"
        return number if number is not None else f"{value:g}"
    if isinstance(value, pd.Timestamp | np.datetime64 | pd.Timedelta):
        return "a date or time"
    return f"a value of type {type(value).__name__}"


def _non_finite(value: float) -> str:
    """A value that is not finite as float32, described without revealing a finite number."""
    if math.isnan(value) or math.isinf(value):
        return str(value)  # nan, inf, -inf
    return "a number beyond float32's range (magnitude above 3.4e38)"


def _row(index: object) -> int:
    """1-based data row number as shown by a spreadsheet (after the header)."""
    return int(index) + 1  # type: ignore[call-overload]


def _preview(columns: Iterable[object]) -> str:
    cols = [str(c) for c in columns]
    return ", ".join(cols[:5]) + (f", ... ({len(cols)} in all)" if len(cols) > 5 else "")
