"""Finds and opens a hospital's DICOM files: candidates at any depth, the SOPInstanceUID index, quiet reads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from flcore.data.files import describe_error
from flcore.data.site import Problem

NOT_DICOM_SUFFIXES = frozenset(
    {".csv", ".txt", ".md", ".json", ".tsv", ".xml", ".pdf", ".xlsx", ".npz", ".toml", ".yaml", ".yml", ".ini", ".log"}
)


@contextlib.contextmanager
def quiet_values() -> Iterator[None]:
    """Read headers without pydicom's value warnings, which quote the value (it may be an identifier)."""
    before = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        pydicom_config.settings.reading_validation_mode = before


def candidate_files(site_dir: Path) -> Iterator[Path]:
    """Every file under ``site_dir`` that may be DICOM, in sorted order."""
    for root, dirs, files in os.walk(site_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            if not name.startswith(".") and p.suffix.lower() not in NOT_DICOM_SUFFIXES:
                yield p


def uid_index(site_dir: Path) -> dict[str, str]:
    """Where each SOPInstanceUID lies under ``site_dir`` (first file holding it; unreadable files skipped)."""
    index = {}
    for path in candidate_files(site_dir):
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except Exception:  # not indexed: a row naming its UID is then reported as having no such file
            continue
        uid = str(ds.get("SOPInstanceUID", "")).strip()
        if uid:
            index.setdefault(uid, path.relative_to(site_dir).as_posix())
    return index


def unreadable(path: Path, err: Exception) -> Problem:
    """The problem of a file pydicom could not read: not DICOM at all, or damaged."""
    if isinstance(err, InvalidDicomError):
        return Problem(
            str(path),
            "not_dicom",
            "the file is not DICOM (no 'DICM' prefix and file meta header).",
            "Remove it from labels.csv, or re-save it with a DICOM tool if it is an old ACR-NEMA file.",
        )
    return Problem(
        str(path),
        "not_dicom",
        f"the file could not be read as DICOM ({describe_error(err)}).",
        "Check that it is a complete DICOM file (it may be truncated) or remove it from labels.csv.",
    )
