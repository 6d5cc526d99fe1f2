"""Reads a hospital's own clinical table (CSV or Parquet), honouring patient consent.

Contract, per hospital folder: one or more ``.csv`` / ``.parquet`` files with the same
columns: one or more numeric feature columns, a ``label`` column with 1 (condition
present) or 0 (absent), and an optional ``consent`` column (yes/no). Key and time
columns (``id``, ``*_id``, ``timestamp``, ``time``, ``date``, ``datetime``, ``*_at``)
are ignored. A column named like a direct identifier (``mrn``, ``patient_name``,
``dob`` ...) is refused unless the hospital's ``policy.toml`` lists it in
``drop_columns``, in which case it is never read. Errors name files, rows and columns,
never a cell's value.

Patients to score (:meth:`ClinicalTableAdapter.read_unlabelled`) follow the same contract,
except that the ``label`` column, or a label cell, may be empty or absent, and that a
``consent`` column is not required (where there is one, records without consent are
still dropped).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from flcore.data.schema import TableSchema
from flcore.data.site import SiteData
from flcore.data.tables import read_table, site_tables, stack_tables, table_files, tables_to_score
from flcore.data.validation import CONSENT, feature_columns, invalid_rows, parse_consent, validate_frame
from flcore.exceptions import DataValidationError
from flcore.governance.policy import site_drop_columns

LABEL = "label"
_EXPECTED = f"Write a header with the numeric feature columns and a '{LABEL}' column, then one row per patient."
_MAX_EXAMPLES = 5
_NO_TABLE = "Put the hospital's clinical table in a .csv or .parquet file inside the folder."


class ClinicalTableAdapter:
    """Domain adapter for hospitals' clinical tables (see module docstring for the contract).

    Parameters
    ----------
    require_consent : bool
        Refuse a table without a ``consent`` column. Either way, records whose consent is
        no are dropped before their values are looked at, and counted.
    """

    layout = (
        "each hospital folder holds one or more .csv or .parquet files with numeric feature columns, "
        f"a '{LABEL}' column (1 = condition present, 0 = absent) and optionally a '{CONSENT}' column (yes/no)"
    )

    def __init__(self, require_consent: bool = False) -> None:
        self.require_consent = require_consent

    def can_read(self, site_dir: Path) -> bool:
        """Whether the folder holds a CSV or Parquet table other than an imaging manifest (``labels.csv``)."""
        return any(p.name != "labels.csv" for p in table_files(site_dir))

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load every table of the hospital folder, drop non-consented records, and validate the rest.

        Parameters
        ----------
        site_dir : Path
            The hospital folder.
        strict : bool
            What to do with a bad record (a feature that is missing or not finite, a label other
            than 0 or 1): refuse the table (True) or drop the record and count it in
            ``info["skipped"]["invalid"]`` (False). Table-level problems (missing label column,
            text in a feature column, files with different columns, no rows left) are refused
            in both modes.

        Returns
        -------
        SiteData
            ``info`` holds ``feature_names``, ``records_read``, ``skipped`` (``no_consent`` and
            ``invalid`` counts) and ``skipped_examples`` (a few "file row N: reason" strings for the
            invalid records dropped by a lenient read); ``ids`` names each record's file and 1-based
            data row (``records.csv:12``).

        Raises
        ------
        DataValidationError
            Naming the file, the column and the fix, for any breach of the contract (a
            column named like a direct identifier included).
        """
        site_dir = Path(site_dir)
        files = site_tables(site_dir, "hospital", _NO_TABLE)
        return self._load(site_dir.name, site_dir, files, site_drop_columns(site_dir), strict, labelled=True)

    def read_unlabelled(self, path: Path, *, strict: bool = True) -> SiteData:
        """Load patients to score: a hospital folder (as :meth:`read`) or one table file.

        Features are read, filtered and validated exactly as for training, so the scores
        equal the run's. Labels are used where given; a table without a ``label`` column, or
        an empty label cell, gives ``UNLABELLED`` (-1). A ``consent`` column is not required,
        even with ``require_consent``; where there is one, records without consent are dropped.

        Parameters
        ----------
        path : Path
            A hospital folder, or one ``.csv`` / ``.parquet`` file (read under the
            ``policy.toml`` of the folder it lies in, if any).
        strict : bool
            As for :meth:`read`: refuse the table for a bad record (True), or drop and count it.

        Returns
        -------
        SiteData
            As :meth:`read`, with ``y`` 0, 1 or -1 and ``ids`` "file:ROW" (1-based data row).

        Raises
        ------
        DataValidationError
            As for :meth:`read`, a label given but not 0 or 1 included, or for a path that is
            neither a folder nor a table file.
        """
        name, files, folder = tables_to_score(path, "hospital", _NO_TABLE)
        return self._load(name, Path(path), files, site_drop_columns(folder), strict, labelled=False)

    def _load(
        self, name: str, source: Path, files: list[Path], drop: Iterable[str], strict: bool, *, labelled: bool
    ) -> SiteData:
        """Consented, validated records of ``files``; labels and consent required when ``labelled``."""
        parts = []
        ids: list[str] = []
        read_total, no_consent, invalid = 0, 0, 0
        consent_recorded = True
        examples: list[str] = []
        for path in files:
            frame = read_table(path, _EXPECTED, drop=drop)
            n_read = len(frame)
            read_total += n_read
            consent_recorded &= CONSENT in frame.columns
            frame, dropped = self._consented(frame, path, required=labelled and self.require_consent)
            no_consent += dropped
            if not strict:
                features = feature_columns(
                    frame, path, label=LABEL, drop=[CONSENT], noun="patient", label_required=labelled
                )
                bad = invalid_rows(frame, features, LABEL, label_required=labelled)
                invalid += len(bad)
                examples += [f"{path.name} row {int(i) + 1}: {why}" for i, why in bad.iloc[:_MAX_EXAMPLES].items()]
                frame = frame.drop(index=bad.index)
            x, y, cols = validate_frame(
                frame,
                path,
                label=LABEL,
                drop=[CONSENT],
                label_fix="Map condition present (positive) to 1 and absent (negative) to 0.",
                noun="patient",
                site="hospital",
                allow_empty=n_read > 0,  # a header-only table is refused; one emptied by filtering is not
                label_required=labelled,
            )
            parts.append((path, x, y, cols))
            ids += [f"{path.name}:{int(i) + 1}" for i in frame.index]
        x_all, y_all, columns = stack_tables(parts, "hospital")
        where = files[0] if len(files) == 1 else source
        if len(y_all) == 0:
            raise DataValidationError(
                where,
                f"no usable record is left: of {read_total} read, {no_consent} lack consent and {invalid} are invalid.",
                "A hospital needs at least one consented, valid record; check the consent and label columns, "
                "or remove the hospital.",
            )
        return SiteData(
            name=name,
            x=x_all,
            y=y_all,
            source=str(source),
            info={
                "feature_names": columns,
                # The schema this contract amounts to, so that an exported model scores any table of these columns.
                "schema": TableSchema(features=tuple(columns), consent=CONSENT).to_dict(),
                "records_read": read_total,
                "consent_recorded": consent_recorded,
                "skipped": {"no_consent": no_consent, "invalid": invalid},
                "skipped_examples": examples[:_MAX_EXAMPLES],
            },
            ids=np.asarray(ids, dtype=object),
        )

    @staticmethod
    def _consented(frame: pd.DataFrame, path: Path, *, required: bool) -> tuple[pd.DataFrame, int]:
        """The records with consent (row positions kept as the index) and how many were dropped."""
        if CONSENT not in frame.columns:
            if required:
                raise DataValidationError(
                    path,
                    f"consent is required but the table has no '{CONSENT}' column.",
                    f"Add a '{CONSENT}' column with yes or no for every patient; "
                    "records without recorded consent cannot be used.",
                    field=CONSENT,
                )
            return frame, 0
        keep = parse_consent(frame, path)
        return frame[keep], int((~keep).sum())
