"""Reads a bank's transaction table (CSV or Parquet) and validates it at the boundary.

Contract, per bank folder: one or more ``.csv`` / ``.parquet`` files with the same
columns: exactly 128 numeric, finite feature columns, a ``label`` column with values
0 (legitimate) or 1 (fraud), at least one row. Key and time columns (``id``, ``*_id``,
``timestamp``, ``time``, ``date``, ``datetime``, ``*_at``) are ignored. A column named
like a direct identifier (``iban``, ``card_number``, ``customer_name`` ...) is refused
unless the bank's ``policy.toml`` lists it in ``drop_columns``: then it is never read,
and it is not one of the 128 features.

Transactions to score (:meth:`TransactionAdapter.read_unlabelled`) follow the same
contract, except that the ``label`` column, or a label cell, may be empty or absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flcore.data.schema import TableSchema
from flcore.data.site import SiteData
from flcore.data.tables import read_table, site_tables, stack_tables, table_files, tables_to_score
from flcore.data.validation import validate_frame
from flcore.governance.policy import site_drop_columns

N_FEATURES = 128
LABEL = "label"
_EXPECTED = f"Write a header with {N_FEATURES} feature columns and a '{LABEL}' column, then one row per transaction."
_NO_TABLE = "Put the bank's transactions in transactions.csv or transactions.parquet."


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

        Returns
        -------
        SiteData
            ``ids`` names each transaction's file and 1-based data row (``transactions.csv:12``).

        Raises
        ------
        DataValidationError
            Naming the file, the column and the fix, for any breach of the contract.
        """
        site_dir = Path(site_dir)
        files = site_tables(site_dir, "bank", _NO_TABLE)
        source = files[0] if len(files) == 1 else site_dir
        return self._load(site_dir.name, source, files, site_drop_columns(site_dir), label_required=True)

    def read_unlabelled(self, path: Path, *, strict: bool = True) -> SiteData:
        """Load transactions to score: a bank folder (as :meth:`read`) or one table file.

        Features are read and validated exactly as for training, so the scores equal the
        run's. Labels are used where given; a table without a ``label`` column, or an
        empty label cell, gives ``UNLABELLED`` (-1).

        Parameters
        ----------
        path : Path
            A bank folder, or one ``.csv`` / ``.parquet`` file (read under the ``policy.toml``
            of the folder it lies in, if any).
        strict : bool
            Ignored, as for :meth:`read`: any bad row is refused.

        Returns
        -------
        SiteData
            ``x`` (n, 128) float32, ``y`` 0, 1 or -1, ``ids`` "file:ROW" (1-based data row).

        Raises
        ------
        DataValidationError
            For any breach of the contract, a label given but not 0 or 1 included, or a
            path that is neither a folder nor a table file.
        """
        name, files, folder = tables_to_score(path, "bank", _NO_TABLE)
        return self._load(name, Path(path), files, site_drop_columns(folder), label_required=False)

    @staticmethod
    def _load(
        name: str, source: Path, files: list[Path], drop: tuple[str, ...] | list[str], *, label_required: bool
    ) -> SiteData:
        """Validate and stack the tables; ``ids`` are ``file:ROW``."""
        parts, ids = [], []
        for path in files:
            frame = read_table(path, _EXPECTED, drop=drop)
            x, y, cols = validate_frame(
                frame,
                path,
                label=LABEL,
                n_features=N_FEATURES,
                label_fix="Map fraud to 1 and legitimate to 0.",
                noun="transaction",
                site="bank",
                label_required=label_required,
            )
            parts.append((path, x, y, cols))
            ids += [f"{path.name}:{int(i) + 1}" for i in frame.index]
        x_all, y_all, columns = stack_tables(parts, "bank")
        return SiteData(
            name,
            x_all,
            y_all,
            source=str(source),
            # The schema this contract amounts to, so that an exported model scores any table of these columns.
            info={
                "feature_names": columns,
                "files": [str(f) for f in files],
                "schema": TableSchema(features=tuple(columns)).to_dict(),
            },
            ids=np.asarray(ids, dtype=object),
        )
