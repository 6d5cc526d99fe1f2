"""Reads a site's manifest: a small CSV beside the data naming each data file and its label."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from flcore.data.files import DEFAULT_MAX_BYTES, READ_ERRORS, describe_error, memory_limit, preflight_table
from flcore.exceptions import DataValidationError


def read_manifest(
    path: Path,
    *,
    what: str,
    site: str,
    required: Mapping[str, str],
    read_fix: str,
    missing_fix: str | None = None,
    empty_fix: str | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> pd.DataFrame | None:
    """Read a manifest CSV and check its columns, so that an adapter only has its rows to check.

    Every cell is read as text (an empty cell is ``""``, never NaN, and no value is
    converted); column names are compared stripped and lower-case. The index holds
    0-based row positions. Messages name the file and the column, never a cell's value.

    Parameters
    ----------
    path : Path
        The manifest (e.g. ``labels.csv`` in a site folder).
    what : str
        What the file is ("manifest", "label file"), named in the messages.
    site : str
        What a site is ("hospital", "device"), named when the file is missing.
    required : mapping of str to str
        Columns that must exist, each with the fix given when it does not (checked in order).
    read_fix : str
        The fix when the file is too large or cannot be read as UTF-8 CSV.
    missing_fix : str, optional
        The fix when there is no such file; None makes the manifest optional (None is returned).
    empty_fix : str, optional
        The fix when the file is empty (no header); None takes an empty file as no manifest.
    max_bytes : int or None
        Largest file read, as its size claims before reading (never more than half the
        memory available; None leaves only that bound).

    Returns
    -------
    pd.DataFrame or None
        The rows, columns normalised; None for an optional manifest that is absent or empty.

    Raises
    ------
    DataValidationError
        When a required manifest is missing or empty, the file cannot be used or read as
        CSV, a row holds more values than the header names, a column appears twice, or a
        required column is absent.
    """
    path = Path(path)
    if not os.path.lexists(path):
        if missing_fix is None:
            return None
        raise DataValidationError(path.parent, f"there is no {path.name} {what} in the {site} folder.", missing_fix)
    problem = preflight_table(path, memory_limit(max_bytes), too_large_fix=read_fix)
    if problem is not None:
        raise DataValidationError(path, f"the {what} cannot be used: {problem.problem}", problem.fix)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        if empty_fix is None:
            return None
        raise DataValidationError(path, f"the {what} is empty.", empty_fix) from None
    except READ_ERRORS as err:
        raise DataValidationError(
            path, f"the {what} could not be read as CSV ({describe_error(err)}).", read_fix
        ) from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas takes one extra value per row as an index
        raise DataValidationError(
            path,
            f"row 1 holds more values than the header names columns ({len(frame.columns)}).",
            "Quote values that contain a comma, or name every column in the header.",
        )
    frame = frame.fillna("")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    dupes = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        raise DataValidationError(
            path,
            f"column {dupes[0]!r} appears more than once (names are compared without case and spaces).",
            "Keep one column of each name.",
            field=dupes[0],
        )
    for column, fix in required.items():
        if column not in frame.columns:
            raise DataValidationError(
                path,
                f"there is no '{column}' column (columns found: {', '.join(frame.columns) or 'none'}).",
                fix,
                field=column,
            )
    return frame
