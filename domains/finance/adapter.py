"""Reads a bank's transaction table (CSV or Parquet) and validates it at the boundary.

Contract, per bank folder: one or more ``.csv`` / ``.parquet`` files with the same
columns: exactly 128 numeric, finite feature columns, a ``label`` column with values
0 (legitimate) or 1 (fraud), at least one row. Identifier and time columns
(``id``, ``*_id``, ``timestamp``, ``time``, ``date``, ``datetime``, ``*_at``) are
ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data import SiteData
from flcore.exceptions import DataValidationError

N_FEATURES = 128
LABEL = "label"
SUFFIXES = (".csv", ".parquet", ".pq")
_IGNORED = re.compile(r"^(id|.*_id|timestamp|time|date|datetime|.*_at)$", re.IGNORECASE)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, low_memory=False)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            path,
            "the file is empty (no header, no rows).",
            f"Write a header with 128 feature columns and a '{LABEL}' column, then one row per transaction.",
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataValidationError(
            path,
            f"the file could not be read as {kind} ({first}).",
            f"Check that it is a valid {kind} file, or re-export it from the source system.",
        ) from None


class TransactionAdapter:
    """Domain adapter for the finance vertical (see module docstring for the contract)."""

    layout = "each bank folder holds transactions.csv or transactions.parquet with 128 feature columns and 'label'"

    def can_read(self, site_dir: Path) -> bool:
        """Whether the folder holds at least one CSV or Parquet file."""
        return any(p.suffix.lower() in SUFFIXES for p in Path(site_dir).iterdir() if p.is_file())

    def read(self, site_dir: Path) -> SiteData:
        """Load every table of the bank folder and validate it.

        Raises
        ------
        DataValidationError
            Naming the file, the column and the fix, for any breach of the contract.
        """
        site_dir = Path(site_dir)
        files = sorted(p for p in site_dir.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataValidationError(
                site_dir,
                "the bank folder holds no .csv or .parquet file.",
                "Put the bank's transactions in transactions.csv or transactions.parquet.",
            )
        xs, ys, columns = [], [], None
        for path in files:
            x, y, cols = self._read_file(path)
            if columns is not None and cols != columns:
                raise DataValidationError(
                    path,
                    f"its feature columns differ from those of {files[0].name}.",
                    "Every file of a bank must have the same columns in the same order.",
                )
            columns = cols
            xs.append(x)
            ys.append(y)
        x_all = np.concatenate(xs)
        y_all = np.concatenate(ys)
        if len(y_all) == 0:
            raise DataValidationError(
                files[0] if len(files) == 1 else site_dir,
                "the table has a header but no rows.",
                "A bank needs at least one transaction; remove the bank or export its data again.",
            )
        return SiteData(
            site_dir.name,
            x_all,
            y_all,
            source=str(files[0] if len(files) == 1 else site_dir),
            info={"feature_names": columns, "files": [str(f) for f in files]},
        )

    def _read_file(self, path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
        frame = _read_table(path).reset_index(drop=True)  # row numbers are positions
        frame.columns = [str(c) for c in frame.columns]
        if LABEL not in frame.columns:
            raise DataValidationError(
                path,
                f"there is no '{LABEL}' column (columns found: {_preview(frame.columns)}).",
                f"Add a '{LABEL}' column with 1 for fraud and 0 for legitimate transactions.",
                field=LABEL,
            )
        features = [c for c in frame.columns if c != LABEL and not _IGNORED.match(c)]
        if len(features) != N_FEATURES:
            raise DataValidationError(
                path,
                f"expected exactly {N_FEATURES} feature columns but found {len(features)} "
                f"(besides '{LABEL}' and ignored id/time columns).",
                f"Export all {N_FEATURES} features; id and time columns may stay, other extra columns must go.",
            )
        if len(frame) == 0:
            raise DataValidationError(
                path,
                "the table has a header but no rows.",
                "A bank needs at least one transaction; remove the bank or export its data again.",
            )
        for col in features:
            if not (pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col])):
                numeric = pd.to_numeric(frame[col], errors="coerce")
                bad = frame[col][numeric.isna() & frame[col].notna()]
                example = f" (e.g. {_show(bad.iloc[0])} in row {_row(bad.index[0])})" if len(bad) else ""
                raise DataValidationError(
                    path,
                    f"expected numeric values but the column holds text{example}.",
                    "Encode categorical fields as numbers before export.",
                    field=col,
                )
        x = frame[features].to_numpy(dtype=np.float64)
        # Checked as float32, the type models train on: 1e39 is finite in float64 but not there.
        with np.errstate(over="ignore"):
            x32 = x.astype(np.float32)
        finite = np.isfinite(x32)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            n_bad = int((~finite).sum())
            raise DataValidationError(
                path,
                f"expected finite numbers but found {x[r, c]} in row {_row(r)} "
                f"({n_bad} non-finite value(s) in the table).",
                "Impute or drop missing and infinite values, and keep |value| below 3.4e38 (float32), before export.",
                field=features[c],
            )
        labels = frame[LABEL]
        numeric_labels = pd.to_numeric(labels, errors="coerce")
        bad = ~numeric_labels.isin([0, 1])
        if bad.any():
            first = labels[bad].iloc[0]
            raise DataValidationError(
                path,
                f"labels must be 0 or 1 but found {_show(first)} in row {_row(labels[bad].index[0])} "
                f"({int(bad.sum())} bad label(s)).",
                "Map fraud to 1 and legitimate to 0.",
                field=LABEL,
            )
        return x32, numeric_labels.to_numpy(dtype=np.int64), features


def _show(value: object) -> str:
    """Show a cell value without numpy's type wrapper (2, not np.int64(2))."""
    item = getattr(value, "item", None)
    return repr(item() if callable(item) else value)


def _row(index: object) -> int:
    """1-based data row number as shown by a spreadsheet (after the header)."""
    return int(index) + 1  # type: ignore[call-overload]


def _preview(columns: object) -> str:
    cols = [str(c) for c in columns]  # type: ignore[attr-defined]
    return ", ".join(cols[:5]) + (f", ... ({len(cols)} in all)" if len(cols) > 5 else "")
