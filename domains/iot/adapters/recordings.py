"""Reads one accelerometer recording (NPY, CSV or Parquet) and its device metadata into samples in g.

A device folder holds ``device.json`` (``machine_id``, ``sampling_rate_hz``, optional
``units`` or ``g_per_count``) and recordings at any depth: ``.npy`` files of 1-D samples,
or ``.csv`` / ``.parquet`` tables with an ``accel`` column (constant ``sampling_rate_hz``
and ``machine_id`` columns override ``device.json``). Every failure to read a recording
becomes a :class:`~flcore.data.site.Problem` naming the file; messages never repeat a
value read from a file except numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains.iot.adapters.features import SpectralFeatures
from flcore.data.files import READ_ERRORS, describe_error, format_bytes, load_npy, preflight_table, regular_file
from flcore.data.site import Problem
from flcore.data.validation import describe_value
from flcore.exceptions import DataValidationError

METADATA = "device.json"
LABELS = "labels.csv"
RECORDING_SUFFIXES = (".npy", ".csv", ".parquet")
SIGNAL_COLUMN = "accel"
RATE_KEY = "sampling_rate_hz"
MACHINE_KEY = "machine_id"


@dataclass
class Recording:
    """One recording's samples and the metadata that applies to it."""

    rel: str
    samples: np.ndarray
    rate: float
    machine_id: str


def recording_files(device_dir: Path) -> Iterator[Path]:
    """Every recording under ``device_dir`` (any depth), sorted, skipping hidden files and ``labels.csv``.

    A directory named like a recording (``rec.npy/``) is listed as one, not searched, so
    that reading it reports it instead of quietly reading what lies inside.
    """
    for root, dirs, files in os.walk(device_dir):
        named = {d for d in dirs if Path(d).suffix.lower() in RECORDING_SUFFIXES}
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in named)
        for name in sorted([*files, *named]):
            path = Path(root) / name
            if name.startswith(".") or path.suffix.lower() not in RECORDING_SUFFIXES:
                continue
            if path.parent == device_dir and name.lower() == LABELS:
                continue
            yield path


def read_metadata(device_dir: Path) -> dict[str, Any]:
    """The device's ``device.json`` as a dict (empty when there is none).

    Raises
    ------
    DataValidationError
        When the file is not a small, readable UTF-8 JSON object.
    """
    path = device_dir / METADATA
    if not os.path.lexists(path):
        return {}
    fix = 'Write it as UTF-8 JSON, e.g. {"machine_id": "pump-0007", "sampling_rate_hz": 12800}.'
    text = _read_small_text(path, "device metadata", fix)
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise DataValidationError(
            path, f"the device metadata is not valid JSON ({describe_error(err)}).", fix
        ) from None
    if not isinstance(meta, dict):
        raise DataValidationError(
            path,
            f"the device metadata must be a JSON object, found {type(meta).__name__}.",
            'Write it as {"machine_id": "...", "sampling_rate_hz": 12800}.',
        )
    return meta


#: Largest device.json read (it holds a few settings).
_MAX_METADATA_BYTES = 2**20


def _read_small_text(path: Path, what: str, fix: str) -> str:
    """The UTF-8 text of a small metadata file; DataValidationError if it is not a readable, small text file."""
    problem = regular_file(path)
    if problem is not None:
        raise DataValidationError(path, f"the {what} cannot be read: {problem.problem}", problem.fix)
    size = path.stat().st_size
    if size > _MAX_METADATA_BYTES:
        raise DataValidationError(
            path, f"the {what} is {format_bytes(size)}; expected a small file (at most 1 MiB).", fix
        )
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataValidationError(
            path, f"the {what} is not UTF-8 text (an undecodable byte at position {err.start}).", fix
        ) from None
    except OSError as err:
        raise DataValidationError(
            path, f"the {what} cannot be read ({describe_error(err)}).", "Check the file's permissions."
        ) from None


def load_recording(
    path: Path, rel: str, meta: dict[str, Any], device_dir: Path, limit: int, features: SpectralFeatures
) -> Recording | Problem:
    """Read one recording and its metadata; a Problem if it cannot be used.

    The size a file claims is checked before it is read (``limit`` bytes at most),
    and every failure to read it becomes a Problem naming the file.
    """
    rate: Any = meta.get(RATE_KEY)
    machine = str(meta.get(MACHINE_KEY, device_dir.name))
    too_large_fix = (
        "Split the recording into shorter files, or raise VibrationAdapter(max_recording_bytes=...) if the "
        "machine has the memory."
    )
    if path.suffix.lower() == ".npy":
        raw = load_npy(path, limit, too_large_fix=too_large_fix)
        if isinstance(raw, Problem):
            return raw
        samples = _one_axis(raw)
        if samples is None:
            return Problem(
                str(path),
                "no_signal",
                f"expected a 1-D numeric array of samples, found an array of shape {raw.shape} and dtype {raw.dtype}.",
                "Save one accelerometer axis per file as a 1-D numeric array (np.save).",
            )
    else:
        problem = preflight_table(path, limit, too_large_fix=too_large_fix)
        if problem is not None:
            return problem
        try:
            frame = pd.read_csv(path, low_memory=False) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
            frame.columns = [str(c).strip().lower() for c in frame.columns]
            found = signal_column(frame, path)
            if isinstance(found, Problem):
                return found
            samples = found
            for key in (RATE_KEY, MACHINE_KEY):
                if key in frame.columns:
                    column = frame[key].dropna().unique()  # TypeError for unhashable cells (lists)
                    if len(column) > 1:
                        return Problem(
                            str(path),
                            "bad_rate" if key == RATE_KEY else "machine_mismatch",
                            f"column '{key}' must hold one value per file, found {len(column)} different ones.",
                            "Split recordings with different settings into separate files.",
                            field=key,
                        )
                    if len(column):
                        if key == RATE_KEY:
                            rate = column[0]
                        else:
                            machine = str(column[0])
        except (*READ_ERRORS, TypeError) as err:
            return Problem(
                str(path),
                "too_large" if isinstance(err, MemoryError) else "unreadable",
                f"the file could not be read ({describe_error(err)}).",
                too_large_fix if isinstance(err, MemoryError) else "Re-export it from the data logger, or remove it.",
            )
    fs = _rate(rate)
    if fs is None:
        source = f"{METADATA} or a '{RATE_KEY}' column"
        return Problem(
            str(path),
            "bad_rate",
            f"the sampling rate must be a positive number of Hz; {source} gives "
            f"{'nothing' if rate is None else describe_value(rate)}.",
            f'Add "{RATE_KEY}": <Hz> to {device_dir / METADATA}.',
            field=RATE_KEY,
        )
    needed = features.min_sampling_rate()
    if fs < needed:
        return Problem(
            str(path),
            "bad_rate",
            f"the sampling rate is {fs:g} Hz, below the {needed:g} Hz the feature bands need "
            f"(they reach {max(features.max_hz, features.envelope_high_hz):g} Hz).",
            "Record at a higher rate (12.8 kHz or more is usual for bearing monitoring).",
            field=RATE_KEY,
        )
    scaled = _to_g(samples, meta, path, device_dir)
    if isinstance(scaled, Problem):
        return scaled
    return Recording(rel, scaled, fs, machine)


def signal_column(frame: pd.DataFrame, path: Path) -> np.ndarray | Problem:
    """The ``accel`` column of a table as numbers, or why it cannot be used."""
    names = list(frame.columns)
    if names.count(SIGNAL_COLUMN) > 1:
        return Problem(
            str(path),
            "no_signal",
            f"column '{SIGNAL_COLUMN}' appears {names.count(SIGNAL_COLUMN)} times (names are compared without "
            "case and spaces).",
            "Keep one acceleration column per file (one axis per file).",
            field=SIGNAL_COLUMN,
        )
    if SIGNAL_COLUMN not in names:
        return Problem(
            str(path),
            "no_signal",
            f"there is no '{SIGNAL_COLUMN}' column (columns found: {', '.join(names[:8]) or 'none'}).",
            f"Name the acceleration column '{SIGNAL_COLUMN}' (one axis, in g).",
            field=SIGNAL_COLUMN,
        )
    column = frame[SIGNAL_COLUMN]
    if column.dtype.kind in "bmM":
        return Problem(
            str(path),
            "no_signal",
            f"column '{SIGNAL_COLUMN}' must hold numbers, found {column.dtype} values.",
            "Export the acceleration samples as numbers.",
            field=SIGNAL_COLUMN,
        )
    values = pd.to_numeric(column, errors="coerce")
    text = values.isna() & column.notna()
    if text.any():
        row = int(np.flatnonzero(text.to_numpy())[0])
        return Problem(
            str(path),
            "no_signal",
            f"column '{SIGNAL_COLUMN}' must be numeric but row {row + 1} is not a number.",
            "Export the samples as numbers.",
            field=SIGNAL_COLUMN,
        )
    if values.dtype.kind in "iu":  # integers: raw converter counts, scaled by _to_g
        return values.to_numpy()
    return values.to_numpy(dtype=np.float64)


def _one_axis(raw: np.ndarray) -> np.ndarray | None:
    """A 1-D array of samples (integer counts kept as integers), or None."""
    if raw.dtype.kind not in "iuf":
        return None
    if raw.ndim == 1:
        out = raw
    elif raw.ndim == 2 and 1 in raw.shape:
        out = raw.reshape(-1)
    else:
        return None
    return out if out.dtype.kind in "iu" else out.astype(np.float64)


#: Units a device may declare in device.json, as the factor that turns them into g.
UNITS_TO_G = {"g": 1.0, "mg": 1e-3, "m/s^2": 1 / 9.80665, "m/s2": 1 / 9.80665, "m/s²": 1 / 9.80665}
COUNTS_KEY = "g_per_count"


def _to_g(samples: np.ndarray, meta: dict[str, Any], path: Path, device_dir: Path) -> np.ndarray | Problem:
    """Samples in g: integer converter counts scaled by ``g_per_count``, other units converted.

    Spectral features are logarithms of amplitudes: a device reporting m/s^2, or raw
    counts, among devices reporting g would look like a machine vibrating ten (or
    thousands of) times harder.
    """
    if samples.dtype.kind in "iu":
        per_count = _rate(meta.get(COUNTS_KEY))
        if per_count is None:
            return Problem(
                str(path),
                "units",
                f"the samples are integers ({samples.dtype}), which look like raw converter counts, and "
                f"{METADATA} gives no '{COUNTS_KEY}' to turn them into g.",
                f'Add "{COUNTS_KEY}": <sensor sensitivity in g per count> to {device_dir / METADATA}, or export '
                "the samples in g as floating-point numbers.",
                field=COUNTS_KEY,
            )
        return samples.astype(np.float64) * per_count
    unit = str(meta.get("units", "g")).strip().lower()
    if unit not in UNITS_TO_G:
        return Problem(
            str(path),
            "units",
            f"{METADATA} declares units that are none of {', '.join(UNITS_TO_G)} "
            f"(found {describe_value(meta.get('units'), number='a number')}).",
            "Declare the unit the samples are in (acceleration), or convert them to g.",
            field="units",
        )
    return samples * UNITS_TO_G[unit] if UNITS_TO_G[unit] != 1.0 else samples


def _rate(value: Any) -> float | None:
    """A positive finite sampling rate, or None."""
    if isinstance(value, bool):
        return None
    try:
        fs = float(value)
    except (TypeError, ValueError):
        return None
    return fs if np.isfinite(fs) and fs > 0 else None
