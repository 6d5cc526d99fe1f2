"""Domain-agnostic reading and validation of numeric tables (CSV or Parquet) at the boundary."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data.files import READ_ERRORS, describe_error, memory_limit, preflight_table
from flcore.exceptions import DataValidationError
from flcore.governance.policy import SITE_POLICY_FILE, site_drop_columns
from flcore.outputs import atomic_write

#: File suffixes read as tables; anything but ``.csv`` is read as Parquet.
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

#: Key and time columns that are never features (a pseudonymous key such as ``patient_id`` may stay).
IGNORED_COLUMNS = re.compile(r"^(id|.*_id|timestamp|time|date|datetime|.*_at)$", re.IGNORECASE)

# Direct identifiers (HIPAA Safe Harbor's list and its like), as column names. A name is compared
# after normalise_column() ("Patient Name", "patient-name" and "PatientName" are all "patient_name"),
# and matches when it is, whole: optional qualifiers (whose: patient_, home_, customer_, first_ ...),
# then one of the identifiers below, then optional number words (_number, _no, _nr, _id, _1 ...).
_QUALIFIER = (
    r"patient|person|customer|client|member|user|owner|holder|account_?holder|card_?holder|policy_?holder|"
    r"subscriber|insured|guarantor|contact|emergency|next_of_kin|kin|mother|father|parent|guardian|spouse|"
    r"home|work|business|primary|secondary|personal|private|billing|mailing|residential|current|previous|"
    r"alt|alternate|other|full|legal|preferred|maiden|given|family|first|last|middle|sur|fore|nick|birth"
)
_NUMBER_WORD = r"number|no|nr|num|nbr"
_SUFFIX_WORD = _NUMBER_WORD + r"|id|code|line|[0-9]+"
#: Identifier names (regex alternatives over normalised names), by kind. The first entry may stand
#: alone (``mrn``, ``email_address``, ``ssn_id``); the second needs a number word after it:
#: ``account`` or ``hospital`` alone may be a category and ``account_id`` / ``hospital_id`` a
#: pseudonymous key, ``account_number`` and ``hospital_number`` are identifiers.
IDENTIFIER_NAMES: dict[str, tuple[str, str]] = {
    "name": (r"names?|initials|user_?name", ""),
    "medical record number": (r"mrn|med_?rec", r"medical_record|hospital|chart|case_note"),
    "social security number": (r"ssn|social_security", r"social_insurance|sin"),
    "national id": (
        r"national_?id|national_identity|nino|nhi|personnummer|bsn|tax_?(?:id|code)|tin|tfn|"
        r"(?:health_)?insurance_id",
        r"national_insurance|insurance|health_insurance|medicare|medicaid|health_card|id_card|identity_card|tax|nhs",
    ),
    "passport or licence": (r"passport|vin|licen[cs]e_plate", r"(?:drivers?_|driving_)?licen[cs]e"),
    "date of birth": (r"dob|d_o_b|date_of_birth|birth_?date|birthday|birth_?dt|born(?:_at|_on)?", ""),
    "e-mail address": (r"e_?mail(?:_?address|_addr)?", ""),
    "phone number": (r"(?:tele)?phone|tel|mobile(?:_phone)?|cell_?phone|fax", r"cell"),
    "address": (r"(?:street_)?address|addr|street|post_?code|postal_code|zip(?:_?code)?", ""),
    "network address": (r"ip|ip_?addr(?:ess)?|ipv[46](?:_addr(?:ess)?)?|mac_addr(?:ess)?", ""),
    "account or card number": (
        r"iban|pan|cvv|cvc|credit_card|debit_card",
        r"(?:bank_)?account|acct|(?:credit_|debit_)?card|cc",
    ),
    "device serial number": (r"(?:device_)?serial|imei|udi", ""),
}


def _identifier_pattern(free: str, numbered: str) -> re.Pattern[str]:
    core = rf"(?:{free})(?:_?(?:{_SUFFIX_WORD}))*"
    if numbered:
        core += rf"|(?:{numbered})(?:_?(?:{_NUMBER_WORD}))+"
    return re.compile(rf"(?:(?:{_QUALIFIER})_?)*(?:{core})")


_IDENTIFIER_PATTERNS = {kind: _identifier_pattern(*names) for kind, names in IDENTIFIER_NAMES.items()}

CONSENT = "consent"
_CONSENT_WORDS = {"yes": True, "y": True, "true": True, "1": True, "no": False, "n": False, "false": False, "0": False}


def table_files(folder: Path) -> list[Path]:
    """The ``.csv`` / ``.parquet`` entries directly inside ``folder`` (none if it is no folder), sorted, not hidden.

    Entries that are not regular files (a directory or a broken link named like a table)
    are listed too, so that reading them reports them instead of silently leaving data out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and not p.name.startswith("."))


def site_tables(site_dir: Path, site: str, fix: str) -> tuple[list[Path], tuple[str, ...]]:
    """A site folder's table files and the columns its ``policy.toml`` drops (``drop_columns``).

    Parameters
    ----------
    site_dir : Path
        The site's folder.
    site : str
        What a site is ("bank", "hospital"), for the messages.
    fix : str
        What to do when the folder holds no table.

    Raises
    ------
    DataValidationError
        When the folder does not exist or holds no ``.csv`` / ``.parquet`` file.
    """
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise DataValidationError(
            site_dir, f"the {site} folder does not exist or is not a folder.", f"Pass the {site}'s data folder."
        )
    files = table_files(site_dir)
    if not files:
        raise DataValidationError(site_dir, f"the {site} folder holds no .csv or .parquet file.", fix)
    return files, site_drop_columns(site_dir)


def stack_tables(
    parts: Sequence[tuple[Path, np.ndarray, np.ndarray, list[str]]], site: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One site's validated tables ``(file, x, y, feature columns)`` as one ``x``, ``y`` and column list.

    Raises
    ------
    DataValidationError
        When a file's feature columns differ from the first file's (names or order).
    """
    first, columns = parts[0][0], parts[0][3]
    for path, _, _, cols in parts[1:]:
        if cols != columns:
            raise DataValidationError(
                path,
                f"its feature columns differ from those of {first.name}.",
                f"Every file of a {site} must have the same columns in the same order.",
            )
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), columns


def normalise_column(name: object) -> str:
    """A column name in lower case with its words joined by ``_``, as names are compared.

    ``Patient Name``, ``patient-name``, ``PatientName`` and ``PATIENT_NAME`` all give ``patient_name``.
    """
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return "_".join(re.findall(r"[a-z0-9]+", text.lower()))


def identifier_kind(name: object) -> str | None:
    """What direct identifier a column name looks like (see :data:`IDENTIFIER_NAMES`), or None."""
    normal = normalise_column(name)
    for kind, pattern in _IDENTIFIER_PATTERNS.items():
        if pattern.fullmatch(normal):
            return kind
    return None


def refuse_identifiers(columns: Iterable[object], path: Path) -> None:
    """Refuse a table with a column named like a direct identifier (a name, a record number, a birth date ...).

    Such a column would otherwise train like any feature or travel with the data; its
    values are never looked at, and the error names the column, not its content.

    Raises
    ------
    DataValidationError
        Naming the file and the first such column (and how many others there are).
    """
    found = [(str(c), kind) for c in columns if (kind := identifier_kind(c)) is not None]
    if not found:
        return
    column, kind = found[0]
    others = (
        f" ({len(found) - 1} more such column(s): {', '.join(repr(c) for c, _ in found[1:4])})"
        if len(found) > 1
        else ""
    )
    raise DataValidationError(
        path,
        f"column '{column}' looks like a direct identifier ({kind}){others}; identifiers must not be read as data.",
        "Remove it from the export or, if the site keeps it for its own records, list it in drop_columns in "
        f"{Path(path).parent / SITE_POLICY_FILE} (drop_columns = [{json.dumps(column)}]): then it is never read. "
        "If it holds no identifier, rename it.",
        field=column,
    )


def read_table(path: Path, expected: str, *, drop: Iterable[str] = (), max_bytes: int | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame whose index holds 0-based row positions.

    Parameters
    ----------
    path : Path
        The file; ``.csv`` is read as CSV, any other suffix as Parquet.
    expected : str
        What the file should hold, given as the fix when the file is empty.
    drop : iterable of str
        Columns never read (a site's ``drop_columns``), compared as :func:`normalise_column`
        gives them (``Patient Name`` matches ``patient_name``). A CSV parser skips their
        values; Parquet does not load them.
    max_bytes : int or None
        Largest table read, as its size or Parquet metadata claims before reading
        (None: half of the memory available; never more than that).

    Returns
    -------
    pd.DataFrame
        Columns as strings; the index is reset so that error messages can give row numbers.

    Raises
    ------
    DataValidationError
        When the file is not a readable regular file, claims more memory than allowed,
        is empty or cannot be parsed.
    """
    path = Path(path)
    kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
    problem = preflight_table(
        path,
        memory_limit(max_bytes),
        too_large_fix="Split the table into several files of the same columns (each is read on its own).",
    )
    if problem is not None:
        raise DataValidationError(path, problem.problem, problem.fix)
    dropped = {normalise_column(c) for c in drop}
    try:
        if kind == "CSV":
            frame = pd.read_csv(path, low_memory=False, usecols=lambda c: normalise_column(c) not in dropped)
        else:
            frame = pd.read_parquet(path, columns=_parquet_columns(path, dropped) if dropped else None)
    except pd.errors.EmptyDataError:
        raise DataValidationError(path, "the file is empty (no header, no rows).", expected) from None
    except READ_ERRORS as err:
        raise DataValidationError(
            path,
            f"the file could not be read as {kind} ({describe_error(err)}).",
            f"Check that it is a valid {kind} file, or re-export it from the source system.",
        ) from None
    frame = frame.reset_index(drop=True)  # row numbers are positions, even if a string index was stored
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _parquet_columns(path: Path, dropped: set[str]) -> list[str]:
    """The columns of a Parquet file to load: all but the dropped ones (and pandas' stored index)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return [n for n in names if normalise_column(n) not in dropped and not n.startswith("__index_level_")]


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as CSV or Parquet (by ``path``'s suffix), whole or not at all (:func:`atomic_write`)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with atomic_write(path, "w") as handle:
            frame.to_csv(handle, index=False)
    else:
        with atomic_write(path, "wb") as handle:
            frame.to_parquet(handle, index=False)
    return path


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
) -> list[str]:
    """The feature columns of a table, after checking the label column and the feature count.

    Needs no rows, so it also checks the header of a table whose rows were all filtered out.

    Parameters
    ----------
    frame : pd.DataFrame
        The table, as returned by :func:`read_table`.
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

    Returns
    -------
    list of str
        Feature column names, in file order.

    Raises
    ------
    DataValidationError
        When a column is named like a direct identifier (even one ``ignored`` would have
        left out, such as ``national_id``), the label column is missing or the feature
        count is wrong.
    """
    refuse_identifiers(frame.columns, path)
    drop = set(drop)
    if label not in frame.columns:
        raise DataValidationError(
            path,
            f"there is no '{label}' column (columns found: {_preview(frame.columns)}).",
            f"Add a '{label}' column with 0 or 1 for every {noun}. {label_fix}",
            field=label,
        )
    features = [c for c in frame.columns if c != label and c not in drop and not ignored.match(c)]
    others = ", ".join(f"'{c}'" for c in [label, *sorted(drop & set(frame.columns))])
    if n_features is not None and len(features) != n_features:
        raise DataValidationError(
            path,
            f"expected exactly {n_features} feature columns but found {len(features)} "
            f"(besides {others} and ignored id/time columns).",
            f"Export all {n_features} features; id and time columns may stay, other extra columns must go.",
        )
    if not features:
        raise DataValidationError(
            path,
            f"expected at least one feature column but found none (besides {others} and ignored id/time columns).",
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
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check a table against the numeric-table contract and return its arrays.

    The frame's index must hold the 0-based row positions in the file (as :func:`read_table`
    gives them), so that rows dropped beforehand do not shift the row numbers in errors.

    Parameters
    ----------
    frame, path, label, n_features, ignored, drop, label_fix, noun
        As for :func:`feature_columns`.
    site : str
        What a folder of tables is ("bank", "hospital"), for the fix of an empty table.
    allow_empty : bool
        Accept a table without rows (e.g. once every row was filtered out) and return empty arrays.

    Returns
    -------
    x : np.ndarray
        Features, float32, shape (n, n_features).
    y : np.ndarray
        Labels, int64, shape (n,), values 0 or 1.
    feature_names : list of str
        The feature columns, in file order.

    Raises
    ------
    DataValidationError
        For a missing label column, a wrong feature count, a table without rows, text in a
        feature column, a value that is not finite as float32, or a label other than 0 or 1.
    """
    features = feature_columns(
        frame, path, label=label, n_features=n_features, ignored=ignored, drop=drop, label_fix=label_fix, noun=noun
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
    labels = frame[label]
    numeric_labels = pd.to_numeric(labels, errors="coerce")
    bad = ~numeric_labels.isin([0, 1])
    if bad.any():
        raise DataValidationError(
            path,
            f"labels must be 0 or 1 but found {describe_value(labels[bad].iloc[0], number=_NOT_01)} in row "
            f"{_row(labels[bad].index[0])} ({int(bad.sum())} bad label(s)).",
            label_fix,
            field=label,
        )
    return x32, numeric_labels.to_numpy(dtype=np.int64), features


def invalid_rows(frame: pd.DataFrame, features: list[str], label: str = "label") -> pd.Series:
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
    labels = frame[label]
    bad_y = ~pd.to_numeric(labels, errors="coerce").isin([0, 1]).to_numpy()
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
                "Encode categorical fields as numbers before export.",
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
