"""Reads a hospital's ``labels.csv``: consent first, then labels, then each row resolved to one DICOM file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from domains.medical.adapters.dicom_files import uid_index
from flcore.data.manifest import read_manifest
from flcore.data.site import UNLABELLED, Problem
from flcore.data.validation import parse_consent
from flcore.exceptions import DataValidationError, FlsuiteError

MANIFEST = "labels.csv"


@dataclass
class Listing:
    """The images a manifest names, and the rows that name none.

    Attributes
    ----------
    rows : list of (str, int) or Problem
        In row order: each image's path relative to the folder and its label (0, 1, or
        ``UNLABELLED``), or the problem of a row naming a missing file, no file, or a
        file listed before (in order, so that strict mode refuses the first bad row).
    no_consent : int
        Rows dropped, unread, for want of consent.
    consent_recorded : bool
        Whether the manifest has a ``consent`` column.
    """

    rows: list[tuple[str, int] | Problem] = field(default_factory=list)
    no_consent: int = 0
    consent_recorded: bool = False


def read_listing(site_dir: Path, *, labelled: bool = True, require_consent: bool = False) -> Listing:
    """The manifest's consented rows resolved to files; rows that cannot be resolved become problems.

    Parameters
    ----------
    site_dir : Path
        The hospital folder holding ``labels.csv``.
    labelled : bool
        True (training): a ``label`` column of 0/1 is required, and a ``consent`` column
        when ``require_consent``. False (images to score): neither is; a label cell left
        empty gives ``UNLABELLED``, a filled one must still be 0 or 1, and rows without
        consent are still dropped where the column exists.
    require_consent : bool
        Refuse a manifest without a ``consent`` column (training only).

    Raises
    ------
    DataValidationError
        For a manifest that is missing, unreadable, without rows, without a ``file`` or
        ``sop_instance_uid`` column, or with a bad label or consent value.
    """
    frame = _manifest(site_dir, labelled, require_consent)
    manifest = site_dir / MANIFEST
    listing = Listing(consent_recorded="consent" in frame.columns)
    if listing.consent_recorded:
        consented = parse_consent(frame["consent"], manifest)
        listing.no_consent = int((~consented).sum())
        frame = frame[consented]
    labels = _labels(frame, manifest, labelled)  # rows without consent are not looked at
    blank = pd.Series([""] * len(frame), frame.index)
    files = frame["file"].str.strip() if "file" in frame.columns else blank
    uids = frame["sop_instance_uid"].str.strip() if "sop_instance_uid" in frame.columns else blank
    by_uid: dict[str, str] = {}
    if (uids[files == ""] != "").any():
        by_uid = uid_index(site_dir)
    root = site_dir.resolve()
    seen: set[str] = set()
    for row, file, uid, label in zip(frame.index, files, uids, labels, strict=True):
        where = f"{manifest} row {int(row) + 1}"
        if file:
            try:
                target = (site_dir / file).resolve()
                usable = root in target.parents and target.is_file()
            except (OSError, ValueError):  # e.g. a NUL byte or an over-long name
                usable = False
            if not usable:
                listing.rows.append(
                    Problem(
                        where,
                        "missing_file",
                        f"it names file {file!r}, which does not exist inside the hospital folder.",
                        "Fix the path (relative to the hospital folder) or remove the row.",
                        field="file",
                    )
                )
                continue
            rel = target.relative_to(root).as_posix()
        elif uid:
            if uid not in by_uid:
                listing.rows.append(
                    Problem(
                        where,
                        "missing_file",
                        f"no DICOM file in the folder has SOPInstanceUID {uid}.",
                        "Add the image or remove the row.",
                        field="sop_instance_uid",
                    )
                )
                continue
            rel = by_uid[uid]
        else:
            listing.rows.append(
                Problem(where, "missing_file", "it names no file and no SOPInstanceUID.", "Fill one of them.")
            )
            continue
        if rel in seen:
            listing.rows.append(
                Problem(
                    where,
                    "duplicate",
                    f"file {rel!r} is listed more than once.",
                    "List each image once with a single label.",
                )
            )
            continue
        seen.add(rel)
        listing.rows.append((rel, int(label)))
    return listing


def _manifest(site_dir: Path, labelled: bool, require_consent: bool) -> pd.DataFrame:
    path = site_dir / MANIFEST
    frame = read_manifest(
        path,
        what="manifest",
        site="hospital",
        required={"label": "Add a 'label' column with 1 where the finding is present and 0 where it is absent."}
        if labelled
        else {},
        read_fix="Save it as comma-separated UTF-8 text the training user can read.",
        missing_fix=f"Write {MANIFEST} with columns file (path relative to the folder) or sop_instance_uid, "
        "label (0/1) and consent (yes/no).",
        empty_fix="Write a header (file,label,consent) and one row per image.",
    )
    if frame is None:  # unreachable: with missing_fix given, read_manifest raises for an absent manifest
        raise FlsuiteError(f"{path}: no manifest came back for a required one (a bug in flsuite; please report it)")
    if "file" not in frame.columns and "sop_instance_uid" not in frame.columns:
        raise DataValidationError(
            path,
            "rows must name their image by 'file' (relative path) or 'sop_instance_uid'; neither column exists.",
            "Add a 'file' column with each image's path relative to the hospital folder.",
            field="file",
        )
    if labelled and require_consent and "consent" not in frame.columns:
        raise DataValidationError(
            path,
            "the policy requires consent per record but the manifest has no 'consent' column.",
            "Add a 'consent' column (yes/no) from your consent register; records without consent are never loaded.",
            field="consent",
        )
    if len(frame) == 0:
        raise DataValidationError(
            path, "the manifest has a header but no rows.", "Add one row per image, or remove this hospital."
        )
    return frame


def _labels(frame: pd.DataFrame, path: Path, labelled: bool) -> pd.Series:
    """The rows' labels as 0/1; unless ``labelled``, an absent column or an empty cell gives ``UNLABELLED``."""
    if "label" not in frame.columns:  # only when not labelled: read_manifest requires it otherwise
        return pd.Series(UNLABELLED, index=frame.index, dtype=np.int64)
    labels = frame["label"].str.strip()
    blank = (labels == "") & (not labelled)
    bad = ~labels.isin(["0", "1"]) & ~blank
    if bad.any():
        row = int(frame.index[np.flatnonzero(bad.to_numpy())[0]])
        found = "an empty value" if not labels.loc[row] else "a value other than 0 or 1"
        raise DataValidationError(  # the cell is not echoed: a pasted identifier would spread through logs
            path,
            f"labels must be 0 or 1 but row {row + 1} holds {found} ({int(bad.sum())} bad label(s)).",
            "Map 'finding present' to 1 and 'absent' to 0.",
            field="label",
        )
    return labels.where(~blank, str(UNLABELLED)).astype(np.int64)
