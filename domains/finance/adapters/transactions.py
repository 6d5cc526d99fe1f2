"""Reads a bank's transaction table (CSV or Parquet) and validates it at the boundary.

Contract, per bank folder: one or more ``.csv`` / ``.parquet`` files with the same
columns: exactly 128 numeric, finite feature columns, a ``label`` column with values
0 (legitimate) or 1 (fraud), at least one row. Key and time columns (``id``, ``*_id``,
``timestamp``, ``time``, ``date``, ``datetime``, ``*_at``) are ignored. A column named
like a direct identifier (``iban``, ``card_number``, ``customer_name`` ...) is refused
unless the bank's ``policy.toml`` lists it in ``drop_columns``: then it is never read,
and it is not one of the 128 features.
"""

from __future__ import annotations

from pathlib import Path

from flcore.data.site import SiteData
from flcore.data.tables import read_table, site_tables, stack_tables, table_files
from flcore.data.validation import validate_frame
from flcore.governance.policy import site_drop_columns

N_FEATURES = 128
LABEL = "label"
_EXPECTED = f"Write a header with {N_FEATURES} feature columns and a '{LABEL}' column, then one row per transaction."


class TransactionAdapter:
    """Domain adapter for the finance vertical (see module docstring for the contract)."""

    layout = "each bank folder holds transactions.csv or transactions.parquet with 128 feature columns and 'label'"

    def can_read(self, site_dir: Path) -> bool:
        """Whether the folder holds at least one CSV or Parquet file."""
        return bool(table_files(site_dir))

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load every table of the bank folder and validate it.

        Parameters
        ----------
        site_dir : Path
            The bank folder.
        strict : bool
            Ignored: a bank's table is one export, and silently dropping bad rows would bias
            its fraud rate, so any bad row is refused in both modes.

        Raises
        ------
        DataValidationError
            Naming the file, the column and the fix, for any breach of the contract.
        """
        site_dir = Path(site_dir)
        files = site_tables(
            site_dir, "bank", "Put the bank's transactions in transactions.csv or transactions.parquet."
        )
        drop = site_drop_columns(site_dir)
        parts = []
        for path in files:
            x, y, cols = validate_frame(
                read_table(path, _EXPECTED, drop=drop),
                path,
                label=LABEL,
                n_features=N_FEATURES,
                label_fix="Map fraud to 1 and legitimate to 0.",
                noun="transaction",
                site="bank",
            )
            parts.append((path, x, y, cols))
        x_all, y_all, columns = stack_tables(parts, "bank")
        return SiteData(
            site_dir.name,
            x_all,
            y_all,
            source=str(files[0] if len(files) == 1 else site_dir),
            info={"feature_names": columns, "files": [str(f) for f in files]},
        )
