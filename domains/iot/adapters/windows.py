"""A device's recordings loaded, checked and cut into feature windows: shared by training and scoring reads."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from domains.iot.adapters.features import SpectralFeatures
from domains.iot.adapters.quality import clipping, longest_constant_run
from domains.iot.adapters.recordings import (
    LABELS,
    MACHINE_KEY,
    METADATA,
    RECORDING_SUFFIXES,
    SIGNAL_COLUMN,
    Recording,
    load_recording,
    recording_files,
)
from flcore.data.files import memory_limit
from flcore.data.site import Problem, SiteData
from flcore.exceptions import DataValidationError


class WindowSettings(Protocol):
    """What the windowing needs from its adapter (:class:`~domains.iot.adapters.vibration.VibrationAdapter`)."""

    features: SpectralFeatures
    flatline_share: float
    clip_share: float
    max_recording_bytes: int | None


@dataclass
class Windowed:
    """One usable recording: its samples and metadata, its file, and its feature windows."""

    rec: Recording
    path: Path
    windows: np.ndarray


def device_files(device_dir: Path, labels: dict[str, int], named: set[str]) -> list[tuple[Path, str]]:
    """The device's recordings as (file, path relative to the folder), less those named by an unusable label row."""
    files = [(p, p.relative_to(device_dir).as_posix()) for p in recording_files(device_dir)]
    # A recording whose label row is unusable (counted by the label reader) is neither evaluated nor trained on.
    return [(p, rel) for p, rel in files if rel not in named or rel in labels]


def device_of(recording: Path) -> Path:
    """The device folder of one recording file: the nearest folder above it holding ``device.json``, else its own.

    Raises
    ------
    DataValidationError
        When the path is not a recording file (.npy, .csv or .parquet, other than ``labels.csv``).
    """
    if recording.suffix.lower() not in RECORDING_SUFFIXES or recording.name.lower() == LABELS:
        raise DataValidationError(
            recording,
            f"expected a device folder or one recording file ({', '.join(RECORDING_SUFFIXES)}).",
            "Pass the recording file, or the device folder that holds it.",
        )
    absolute = Path(os.path.abspath(recording))  # not resolved: a linked file belongs where it is linked
    return next((d for d in absolute.parents if (d / METADATA).is_file()), absolute.parent)


def check_signal(rec: Recording, path: Path, adapter: WindowSettings) -> Problem | None:
    """Length, finiteness, flat-lining and clipping of one recording (the adapter's thresholds)."""
    features = adapter.features
    x = rec.samples
    window = features.window_samples(rec.rate)
    if len(x) < window:
        return Problem(
            str(path),
            "too_short",
            f"it holds {len(x)} samples ({len(x) / rec.rate:.3f} s at {rec.rate:g} Hz); one window needs "
            f"{window} samples ({features.window_s:g} s).",
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
    longest = longest_constant_run(x)
    if np.ptp(x) == 0 or longest > adapter.flatline_share * len(x):
        return Problem(
            str(path),
            "flatline",
            f"the sensor is flat-lined: {longest} consecutive samples ({longest / rec.rate:.3f} s) hold the same "
            "value.",
            "Check the sensor and its cable; a stuck or disconnected sensor records no vibration.",
            field=SIGNAL_COLUMN,
        )
    why = clipping(x, adapter.clip_share)
    if why is not None:
        return Problem(
            str(path),
            "clipped",
            f"the sensor is clipped: {why}.",
            "Use a sensor or range setting with more headroom; clipped impacts distort the spectrum.",
            field=SIGNAL_COLUMN,
        )
    return None


def load_windows(
    adapter: WindowSettings,
    device_dir: Path,
    files: Iterable[tuple[Path, str]],
    meta: dict[str, Any],
    problems: list[Problem],
    strict: bool,
) -> tuple[list[Windowed], list[str]]:
    """Load, check and window every recording of one device.

    Parameters
    ----------
    adapter : WindowSettings
        Its features, thresholds and size limit apply.
    device_dir : Path
        The device folder (``device.json``'s; named in fixes).
    files : iterable of (Path, str)
        Each recording and the name it goes by (its path relative to the device folder).
    meta : dict
        The device's metadata.
    problems : list of Problem
        Problems found so far (e.g. in ``labels.csv``); each unusable recording is added.
    strict : bool
        Refuse at the first problem (True); otherwise skip, and keep the first machine's
        recordings when several machines share the folder.

    Returns
    -------
    recordings : list of Windowed
        The usable recordings, in file order.
    machines : list of str
        The machine ids found (sorted; several only in lenient mode).

    Raises
    ------
    DataValidationError
        In strict mode, for the first problem, with a count of the others.
    """
    limit = memory_limit(adapter.max_recording_bytes)
    recordings: list[Windowed] = []
    for path, rel in files:
        loaded = load_recording(path, rel, meta, device_dir, limit, adapter.features)
        if isinstance(loaded, Recording):
            loaded = check_signal(loaded, path, adapter) or loaded
        if isinstance(loaded, Recording):
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
                windows = adapter.features.extract(loaded.samples, loaded.rate)
            if not np.isfinite(windows).all():
                loaded = Problem(
                    str(path),
                    "non_finite",
                    f"its spectral features are not finite: the samples reach {np.abs(loaded.samples).max():.3g}"
                    " g, beyond any accelerometer's range.",
                    "Check the export's units and scaling.",
                    field=SIGNAL_COLUMN,
                )
        if isinstance(loaded, Problem):
            problems.append(loaded)
        else:
            recordings.append(Windowed(loaded, path, windows))
    machines = sorted({r.rec.machine_id for r in recordings})
    if len(machines) > 1:
        # Name files, not machine ids: an id is free text from the data.
        reference = next(r.rec.rel for r in recordings if r.rec.machine_id == machines[0])
        first = next(r.path for r in recordings if r.rec.machine_id == machines[1])
        problems.append(
            Problem(
                str(first),
                "machine_mismatch",
                f"recordings of {len(machines)} machines share one device folder: this file's machine_id "
                f"differs from that of {reference}.",
                "Keep one folder per machine (a device is one sensor on one machine).",
                field=MACHINE_KEY,
            )
        )
    if strict and problems:
        raise problems[0].error(len(problems) - 1, "iot")
    if len(machines) > 1:  # lenient: keep the first machine's recordings
        recordings = [r for r in recordings if r.rec.machine_id == machines[0]]
    return recordings, machines


def device_site(
    name: str,
    source: Path,
    recordings: list[Windowed],
    labels: dict[str, int],
    default: int,
    machines: list[str],
    problems: list[Problem],
    adapter: WindowSettings,
) -> SiteData:
    """One device's windows as a site: ``y`` from ``labels`` by recording, else ``default``.

    ``info["labelled"]`` marks the windows of labelled recordings, ``info["recording"]``
    the recording each window came from; ``ids`` are ``"recording#WINDOW"`` (0-based
    window index within the recording).
    """
    y: list[int] = []
    labelled: list[bool] = []
    recording: list[int] = []
    ids: list[str] = []
    for index, r in enumerate(recordings):
        label, n = labels.get(r.rec.rel), len(r.windows)
        y += [default if label is None else label] * n
        labelled += [label is not None] * n
        recording += [index] * n
        ids += [f"{r.rec.rel}#{i}" for i in range(n)]
    x = np.concatenate([r.windows for r in recordings]).astype(np.float32)
    features = adapter.features
    return SiteData(
        name,
        x,
        np.asarray(y, dtype=np.int64),
        str(source),
        {
            "feature_names": features.names(),
            "labelled": np.asarray(labelled, dtype=bool),
            "recording": np.asarray(recording, dtype=np.int64),
            "files": [r.rec.rel for r in recordings],
            "machine_id": machines[0] if machines else name,
            "sampling_rates_hz": sorted({r.rec.rate for r in recordings}),
            # Windows of one recording that overlap a given window (for gap-aware splits).
            "overlapping_windows": int(np.ceil(1.0 / (1.0 - features.overlap))) - 1,
            "skipped": dict(Counter(p.kind for p in problems)),
            "skipped_examples": [str(p) for p in problems],
        },
        ids=np.asarray(ids, dtype=object),
    )
