"""Reads a device's accelerometer recordings (NPY, CSV or Parquet) into windowed spectral features.

A device folder::

    pump-0007/
        device.json          {"machine_id": "pump-0007", "sampling_rate_hz": 12800}
        recordings/*.npy     one recording per file (1-D samples, in g)
        recordings/*.csv     or tables with an 'accel' column (optional constant
        recordings/*.parquet   'sampling_rate_hz' / 'machine_id' columns override device.json)
        labels.csv           optional: file,label (normal|fault) for evaluation recordings

Recordings that ``labels.csv`` does not name are unlabelled service data, taken as
normal and used for training; labelled recordings are held out for evaluation.

Every recording is checked before use: sampling rate present, positive and high
enough for the feature bands; at least one window long; no NaN or infinite
values; not flat-lined (a dead or disconnected sensor); not clipped (a saturated
sensor). Strict mode refuses the device at the first problem, naming the file;
lenient mode skips the recording and counts it by reason.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains.iot.features import SpectralFeatures
from flcore.config import RunConfig
from flcore.data import Problem, SiteData, SiteSplit
from flcore.exceptions import DataValidationError

METADATA = "device.json"
LABELS = "labels.csv"
RECORDING_SUFFIXES = (".npy", ".csv", ".parquet")
SIGNAL_COLUMN = "accel"
RATE_KEY = "sampling_rate_hz"
MACHINE_KEY = "machine_id"
_LABEL_VALUES = {"normal": 0, "0": 0, "fault": 1, "1": 1}

#: Problem kinds, as counted in ``SiteData.info["skipped"]`` in lenient mode.
KINDS = (
    "unreadable",
    "no_signal",
    "bad_rate",
    "too_short",
    "non_finite",
    "flatline",
    "clipped",
    "machine_mismatch",
    "missing_file",
    "duplicate",
    "invalid",
)


@dataclass
class Recording:
    """One recording's samples and the metadata that applies to it."""

    rel: str
    samples: np.ndarray
    rate: float
    machine_id: str


@dataclass
class _Collected:
    windows: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    labelled: list[bool] = field(default_factory=list)
    recording: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def recording_files(device_dir: Path) -> Iterator[Path]:
    """Every recording file under ``device_dir`` (any depth), sorted, skipping hidden files and ``labels.csv``."""
    for root, dirs, files in os.walk(device_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or path.suffix.lower() not in RECORDING_SUFFIXES:
                continue
            if path.parent == device_dir and name.lower() == LABELS:
                continue
            yield path


class VibrationAdapter:
    """Device folders of accelerometer recordings -> windowed spectral features.

    Parameters
    ----------
    features : SpectralFeatures
        Windowing and feature settings (the same at every device).
    flatline_share : float
        A run of identical consecutive samples longer than this share of a
        recording marks the sensor as flat-lined (stuck or disconnected).
    clip_share : float
        At least this share of samples sitting exactly at the recording's peak
        magnitude marks it as clipped (the sensor saturated).
    """

    layout = (
        "each device folder holds device.json (machine_id, sampling_rate_hz), accelerometer recordings as .npy "
        "(1-D samples), .csv or .parquet (an 'accel' column) at any depth, and optionally labels.csv "
        "(file, label normal/fault) naming the labelled evaluation recordings"
    )

    def __init__(
        self, features: SpectralFeatures | None = None, flatline_share: float = 0.02, clip_share: float = 0.005
    ) -> None:
        self.features = features or SpectralFeatures()
        self.flatline_share = flatline_share
        self.clip_share = clip_share

    def can_read(self, site_dir: Path) -> bool:
        """Whether the folder is a device: ``device.json``, ``labels.csv``, ``recordings/`` or top-level recordings.

        A folder of device folders (a fleet) is not a device, even though recordings
        lie below it.
        """
        site_dir = Path(site_dir)
        if not site_dir.is_dir():
            return False
        if (site_dir / METADATA).is_file() or (site_dir / LABELS).is_file() or (site_dir / "recordings").is_dir():
            return True
        return any(p.is_file() and p.suffix.lower() in RECORDING_SUFFIXES for p in site_dir.iterdir())

    # -- metadata and labels -------------------------------------------------------------

    def _metadata(self, device_dir: Path) -> dict[str, Any]:
        path = device_dir / METADATA
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataValidationError(
                path,
                f"the device metadata is not valid JSON ({str(err).splitlines()[0]}).",
                'Write it as JSON, e.g. {"machine_id": "pump-0007", "sampling_rate_hz": 12800}.',
            ) from None
        if not isinstance(meta, dict):
            raise DataValidationError(
                path,
                f"the device metadata must be a JSON object, found {type(meta).__name__}.",
                'Write it as {"machine_id": "...", "sampling_rate_hz": 12800}.',
            )
        return meta

    def _labels(self, device_dir: Path, collected: _Collected) -> dict[str, int]:
        """``labels.csv`` as relative path -> 0/1; bad rows become problems."""
        path = device_dir / LABELS
        if not path.is_file():
            return {}
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            return {}
        except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
            raise DataValidationError(
                path,
                f"the label file could not be read as CSV ({type(err).__name__}: {str(err).splitlines()[0]}).",
                "Save it as comma-separated UTF-8 text with columns file,label.",
            ) from None
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        for column in ("file", "label"):
            if column not in frame.columns:
                raise DataValidationError(
                    path,
                    f"there is no '{column}' column (columns found: {', '.join(frame.columns) or 'none'}).",
                    "Write columns file (recording path relative to the device folder) and label (normal or fault).",
                    field=column,
                )
        labels: dict[str, int] = {}
        for row, (file, label) in enumerate(zip(frame["file"].str.strip(), frame["label"].str.strip(), strict=True)):
            where = f"{path} (row {row + 2})"
            rel = Path(file).as_posix()
            value = _LABEL_VALUES.get(label.lower())
            if value is None:
                collected.problems.append(
                    Problem(
                        where,
                        "invalid",
                        f"the label must be 'normal' or 'fault' (or 0/1), found {label!r}.",
                        "Correct the label or remove the row.",
                        field="label",
                    )
                )
            elif not file or Path(file).is_absolute() or ".." in Path(file).parts:
                collected.problems.append(
                    Problem(
                        where,
                        "missing_file",
                        f"the file must be a path inside the device folder, found {file!r}.",
                        "Give the recording's path relative to the device folder.",
                        field="file",
                    )
                )
            elif rel in labels:
                collected.problems.append(
                    Problem(
                        where,
                        "duplicate",
                        f"recording {rel!r} is labelled more than once.",
                        "Keep one row per recording.",
                        field="file",
                    )
                )
            elif not (device_dir / rel).is_file():
                collected.problems.append(
                    Problem(
                        where,
                        "missing_file",
                        f"it names {rel!r}, which does not exist in the device folder.",
                        "Fix the path or remove the row.",
                        field="file",
                    )
                )
            else:
                labels[rel] = value
        return labels

    # -- one recording ---------------------------------------------------------------------

    def _load(self, path: Path, rel: str, meta: dict[str, Any], device_dir: Path) -> Recording | Problem:
        """Read one recording and its metadata; a Problem if it cannot be used."""
        rate: Any = meta.get(RATE_KEY)
        machine = str(meta.get(MACHINE_KEY, device_dir.name))
        try:
            if path.suffix.lower() == ".npy":
                raw = np.load(path, allow_pickle=False)
                samples = _one_axis(raw)
                if samples is None:
                    return Problem(
                        str(path),
                        "no_signal",
                        f"expected a 1-D array of samples, found an array of shape {raw.shape} and dtype {raw.dtype}.",
                        "Save one accelerometer axis per file as a 1-D numeric array (np.save).",
                    )
            else:
                frame = pd.read_csv(path, low_memory=False) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
                frame.columns = [str(c).strip().lower() for c in frame.columns]
                if SIGNAL_COLUMN not in frame.columns:
                    return Problem(
                        str(path),
                        "no_signal",
                        f"there is no '{SIGNAL_COLUMN}' column (columns found: "
                        f"{', '.join(list(frame.columns)[:8]) or 'none'}).",
                        f"Name the acceleration column '{SIGNAL_COLUMN}' (one axis, in g).",
                        field=SIGNAL_COLUMN,
                    )
                values = pd.to_numeric(frame[SIGNAL_COLUMN], errors="coerce")
                text = values.isna() & frame[SIGNAL_COLUMN].notna()
                if text.any():
                    row = int(np.flatnonzero(text.to_numpy())[0])
                    return Problem(
                        str(path),
                        "no_signal",
                        f"column '{SIGNAL_COLUMN}' must be numeric but row {row + 1} is not a number.",
                        "Export the samples as numbers.",
                        field=SIGNAL_COLUMN,
                    )
                samples = values.to_numpy(dtype=np.float64)
                for key in (RATE_KEY, MACHINE_KEY):
                    if key in frame.columns:
                        column = frame[key].dropna().unique()
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
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            return Problem(
                str(path),
                "unreadable",
                f"the file could not be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).",
                "Re-export it from the data logger, or remove it.",
            )
        fs = _rate(rate)
        if fs is None:
            source = f"{METADATA} or a '{RATE_KEY}' column"
            found = "nothing" if rate is None else repr(rate)
            return Problem(
                str(path),
                "bad_rate",
                f"the sampling rate must be a positive number of Hz; {source} gives {found}.",
                f'Add "{RATE_KEY}": <Hz> to {device_dir / METADATA}.',
                field=RATE_KEY,
            )
        needed = self.features.min_sampling_rate()
        if fs < needed:
            return Problem(
                str(path),
                "bad_rate",
                f"the sampling rate is {fs:g} Hz, below the {needed:g} Hz the feature bands need "
                f"(they reach {max(self.features.max_hz, self.features.envelope_high_hz):g} Hz).",
                "Record at a higher rate (12.8 kHz or more is usual for bearing monitoring).",
                field=RATE_KEY,
            )
        return Recording(rel, samples, fs, machine)

    def _check_signal(self, rec: Recording, path: Path) -> Problem | None:
        """Length, finiteness, flat-lining and clipping of one recording."""
        x = rec.samples
        window = self.features.window_samples(rec.rate)
        if len(x) < window:
            return Problem(
                str(path),
                "too_short",
                f"it holds {len(x)} samples ({len(x) / rec.rate:.3f} s at {rec.rate:g} Hz); one window needs "
                f"{window} samples ({self.features.window_s:g} s).",
                "Record longer snapshots, or remove the file.",
            )
        bad = ~np.isfinite(x)
        if bad.any():
            return Problem(
                str(path),
                "non_finite",
                f"{int(bad.sum())} sample(s) are NaN or infinite (the first at sample {int(np.flatnonzero(bad)[0])}).",
                "Check the data logger's export (gaps are often written as NaN); cut the gap out or drop the file.",
                field=SIGNAL_COLUMN,
            )
        longest = _longest_constant_run(x)
        if np.ptp(x) == 0 or longest > self.flatline_share * len(x):
            return Problem(
                str(path),
                "flatline",
                f"the sensor is flat-lined: {longest} consecutive samples ({longest / rec.rate:.3f} s) hold the same "
                "value.",
                "Check the sensor and its cable; a stuck or disconnected sensor records no vibration.",
                field=SIGNAL_COLUMN,
            )
        peak = float(np.abs(x).max())
        at_peak = int((np.abs(x) >= peak * (1 - 1e-6)).sum())
        if at_peak >= max(3, self.clip_share * len(x)):
            return Problem(
                str(path),
                "clipped",
                f"the sensor is clipped: {at_peak} samples ({at_peak / len(x):.1%}) sit at the peak magnitude "
                f"{peak:g}.",
                "Use a sensor or range setting with more headroom; clipped impacts distort the spectrum.",
                field=SIGNAL_COLUMN,
            )
        return None

    # -- the device ------------------------------------------------------------------------

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load one device: windows of spectral features, labels and per-window bookkeeping.

        ``SiteData.y`` is 1 for windows of recordings labelled fault and 0 otherwise;
        ``info["labelled"]`` marks the evaluation windows and ``info["recording"]``
        the recording each window came from.

        Raises
        ------
        DataValidationError
            In strict mode for the first unusable recording or label row (with a
            count of the others); in both modes for unreadable metadata or labels,
            or when no usable unlabelled recording remains to train on.
        """
        device_dir = Path(site_dir)
        if not device_dir.is_dir():
            raise DataValidationError(device_dir, "the device folder does not exist.", "Pass an existing folder.")
        meta = self._metadata(device_dir)
        collected = _Collected()
        labels = self._labels(device_dir, collected)
        recordings: list[tuple[Recording, Path]] = []
        for path in recording_files(device_dir):
            rel = path.relative_to(device_dir).as_posix()
            loaded = self._load(path, rel, meta, device_dir)
            if isinstance(loaded, Recording):
                loaded = self._check_signal(loaded, path) or loaded
            if isinstance(loaded, Problem):
                collected.problems.append(loaded)
            else:
                recordings.append((loaded, path))
        machines = sorted({r.machine_id for r, _ in recordings})
        if len(machines) > 1:
            first = next(p for r, p in recordings if r.machine_id == machines[1])
            collected.problems.append(
                Problem(
                    str(first),
                    "machine_mismatch",
                    f"recordings of {len(machines)} machines ({', '.join(machines[:3])}) share one device folder.",
                    "Keep one folder per machine (a device is one sensor on one machine).",
                    field=MACHINE_KEY,
                )
            )
        if strict and collected.problems:
            raise collected.problems[0].error(len(collected.problems) - 1, "iot")
        if len(machines) > 1:  # lenient: keep the first machine's recordings
            recordings = [(r, p) for r, p in recordings if r.machine_id == machines[0]]
        for index, (rec, _) in enumerate(recordings):
            windows = self.features.extract(rec.samples, rec.rate)
            label = labels.get(rec.rel)
            collected.windows.append(windows)
            collected.labels += [0 if label is None else label] * len(windows)
            collected.labelled += [label is not None] * len(windows)
            collected.recording += [index] * len(windows)
            collected.files.append(rec.rel)
        n_unlabelled = sum(1 for rec, _ in recordings if rec.rel not in labels)
        if n_unlabelled == 0:
            raise DataValidationError(
                device_dir,
                f"no usable unlabelled recording remains to train on ({len(recordings)} labelled, "
                f"{len(collected.problems)} unusable).",
                "A device needs service recordings that labels.csv does not name; those are its training data.",
            )
        x = np.concatenate(collected.windows).astype(np.float32)
        counts = Counter(p.kind for p in collected.problems)
        return SiteData(
            device_dir.name,
            x,
            np.asarray(collected.labels, dtype=np.int64),
            str(device_dir),
            {
                "feature_names": self.features.names(),
                "labelled": np.asarray(collected.labelled, dtype=bool),
                "recording": np.asarray(collected.recording, dtype=np.int64),
                "files": collected.files,
                "machine_id": machines[0] if machines else device_dir.name,
                "sampling_rates_hz": sorted({r.rate for r, _ in recordings}),
                "skipped": dict(counts),
                "skipped_examples": [str(p) for p in collected.problems],
            },
        )


def split_device(site: SiteData, cfg: RunConfig) -> SiteSplit:
    """Labelled windows are the test split; unlabelled ones split into train and validation by recording.

    Validation takes ``cfg.val_fraction`` of the unlabelled recordings (at least one
    when the device has two or more), chosen with a seed, so that overlapping windows
    of one recording never sit on both sides. A device with a single unlabelled
    recording gives its last windows to validation, leaving out the one window that
    overlaps both parts.
    """
    labelled = np.asarray(site.info.get("labelled", np.zeros(len(site), dtype=bool)), dtype=bool)
    recording = np.asarray(site.info.get("recording", np.zeros(len(site), dtype=np.int64)))
    unl = np.flatnonzero(~labelled)
    recs = np.unique(recording[unl])
    val_idx = np.zeros(0, dtype=np.int64)
    train_idx = unl
    if cfg.val_fraction > 0 and len(unl) >= 3:
        if len(recs) >= 2:
            rng = np.random.default_rng([cfg.seed, zlib.crc32(site.name.encode())])
            n_val = min(len(recs) - 1, max(1, round(cfg.val_fraction * len(recs))))
            chosen = rng.choice(recs, n_val, replace=False)
            in_val = np.isin(recording[unl], chosen)
            val_idx, train_idx = unl[in_val], unl[~in_val]
        else:
            n_val = max(1, round(cfg.val_fraction * len(unl)))
            val_idx, train_idx = unl[len(unl) - n_val :], unl[: max(1, len(unl) - n_val - 1)]

    info = {k: v for k, v in site.info.items() if k not in ("labelled", "recording")}

    def part(ix: np.ndarray, suffix: str) -> SiteData:
        return SiteData(site.name, site.x[ix], site.y[ix], site.source, {**info, "split": suffix})

    return SiteSplit(
        site.name,
        part(train_idx, "train"),
        part(np.flatnonzero(labelled), "test"),
        part(val_idx, "validation") if len(val_idx) else None,
    )


def _one_axis(raw: np.ndarray) -> np.ndarray | None:
    if raw.dtype.kind not in "iuf":
        return None
    if raw.ndim == 1:
        return raw.astype(np.float64)
    if raw.ndim == 2 and 1 in raw.shape:
        return raw.reshape(-1).astype(np.float64)
    return None


def _rate(value: Any) -> float | None:
    """A positive finite sampling rate, or None."""
    if isinstance(value, bool):
        return None
    try:
        fs = float(value)
    except (TypeError, ValueError):
        return None
    return fs if np.isfinite(fs) and fs > 0 else None


def _longest_constant_run(x: np.ndarray) -> int:
    """Length of the longest run of identical consecutive values."""
    if len(x) < 2:
        return len(x)
    change = np.flatnonzero(np.diff(x) != 0)
    edges = np.concatenate([[-1], change, [len(x) - 1]])
    return int(np.diff(edges).max())
