"""Domain-agnostic table files (CSV or Parquet) at the boundary: found, read, written and stacked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data.files import READ_ERRORS, describe_error, memory_limit, preflight_table
from flcore.data.identifiers import normalise_column
from flcore.exceptions import DataValidationError
from flcore.outputs import atomic_write

#: File suffixes read as tables; anything but ``.csv`` is read as Parquet.
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def table_files(folder: Path) -> list[Path]:
    """The ``.csv`` / ``.parquet`` entries directly inside ``folder`` (none if it is no folder), sorted, not hidden.

    Entries that are not regular files (a directory or a broken link named like a table)
    are listed too, so that reading them reports them instead of silently leaving data out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and not p.name.startswith("."))


def site_tables(site_dir: Path, site: str, fix: str) -> list[Path]:
    """A site folder's table files (the columns its policy drops: :func:`flcore.governance.policy.site_drop_columns`).

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
    return files


def tables_to_score(path: Path, site: str, fix: str) -> tuple[str, list[Path], Path]:
    """What a scoring read takes: a site folder's tables, or one table file.

    Returns the records' name (the folder's, or the file's stem), the files, and the folder whose
    policy applies (a file's own folder: its ``drop_columns`` hold for one file as for all).

    Raises
    ------
    DataValidationError
        When the folder holds no table, or the file is not a ``.csv`` / ``.parquet`` table.
    """
    path = Path(path)
    if path.is_dir():
        return path.name, site_tables(path, site, fix), path
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataValidationError(
            path,
            f"expected a {site} folder or a .csv / .parquet table.",
            "Pass the table file or the folder holding it.",
        )
    return path.stem, [path], path.parent


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


def read_table(path: Path, expected: str, *, drop: Iterable[str] = (), max_bytes: int | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame whose index holds 0-based row positions.

    Parameters
    ----------
    path : Path
        The file; ``.csv`` is read as CSV, any other suffix as Parquet.
    expected : str
        What the file should hold, given as the fix when the file is empty.
    drop : iterable of str
        Columns never read (a site's ``drop_columns``), compared as
        :func:`~flcore.data.identifiers.normalise_column` gives them (``Patient Name``
        matches ``patient_name``). A CSV parser skips their values; Parquet does not load them.
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
