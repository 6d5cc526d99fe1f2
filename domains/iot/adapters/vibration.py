"""Reads a device's accelerometer recordings (NPY, CSV or Parquet) into windowed spectral features.

A device folder::

    pump-0007/
        device.json          {"machine_id": "pump-0007", "sampling_rate_hz": 12800}
        recordings/*.npy     one recording per file (1-D samples, in g)
        recordings/*.csv     or tables with an 'accel' column (optional constant
        recordings/*.parquet   'sampling_rate_hz' / 'machine_id' columns override device.json)
        labels.csv           optional: file,label (normal|fault) for evaluation recordings

Recordings that ``labels.csv`` does not name are unlabelled service data, taken as
normal and used for training; labelled recordings are held out for evaluation. When
scoring (:meth:`VibrationAdapter.read_unlabelled`: a device folder or one recording),
they are left unlabelled (``UNLABELLED``, -1) instead.

Every recording is checked before use (:mod:`domains.iot.adapters.recordings` reads it,
:mod:`domains.iot.adapters.quality` judges its signal, :mod:`domains.iot.adapters.windows`
applies both and cuts the windows): a readable file whose claimed size (the
.npy header, the CSV's size, the Parquet metadata) fits the memory limit and whose
data are all there; sampling rate present, positive and high enough for the
feature bands; at least one window long; no NaN or infinite values; not flat-lined
(a dead or disconnected sensor); not clipped (a saturated sensor, also with noise on
top). Strict mode refuses the device at the first problem, naming the file; lenient
mode skips the recording and counts it by reason. Messages never repeat a value
read from a file except numbers (a sampling rate, a sample count).
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from domains.iot.adapters.features import SpectralFeatures
from domains.iot.adapters.recordings import LABELS, METADATA, RECORDING_SUFFIXES, read_metadata
from domains.iot.adapters.windows import device_files, device_of, device_site, load_windows
from flcore.config import RunConfig
from flcore.data.files import DEFAULT_MAX_BYTES
from flcore.data.manifest import read_manifest
from flcore.data.site import UNLABELLED, Problem, SiteData, SiteSplit
from flcore.data.validation import describe_value
from flcore.exceptions import DataValidationError

_LABEL_VALUES = {"normal": 0, "0": 0, "fault": 1, "1": 1}

#: Problem kinds, as counted in ``SiteData.info["skipped"]`` in lenient mode.
KINDS = (
    "unreadable",
    "truncated",
    "too_large",
    "units",
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
        Least share of samples held at a saturation level for a recording to count as
        clipped: exactly at the peak magnitude, or, with noise on top, in a pile-up at
        the top of the distribution or a flat plateau (see :func:`clipping`).
    max_recording_bytes : int or None
        Largest recording loaded, as its .npy header, CSV size or Parquet metadata
        claims before anything is read; never more than half of the memory available.
        None leaves only that memory bound.
    """

    layout = (
        "each device folder holds device.json (machine_id, sampling_rate_hz), accelerometer recordings as .npy "
        "(1-D samples), .csv or .parquet (an 'accel' column) at any depth, and optionally labels.csv "
        "(file, label normal/fault) naming the labelled evaluation recordings"
    )

    def __init__(
        self,
        features: SpectralFeatures | None = None,
        flatline_share: float = 0.02,
        clip_share: float = 0.005,
        max_recording_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        self.features = features or SpectralFeatures()
        self.flatline_share = flatline_share
        self.clip_share = clip_share
        self.max_recording_bytes = max_recording_bytes

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

    def _labels(self, device_dir: Path, problems: list[Problem]) -> tuple[dict[str, int], set[str]]:
        """``labels.csv`` as relative path -> 0/1, and every recording it names; bad rows become problems.

        A recording named by a row that cannot be used (bad label, conflicting
        duplicate) is held out of the data altogether: taking it as unlabelled
        service data would train the model on what may be a fault.
        """
        path = device_dir / LABELS
        columns_fix = "Write columns file (recording path relative to the device folder) and label (normal or fault)."
        frame = read_manifest(
            path,
            what="label file",
            site="device",
            required={"file": columns_fix, "label": columns_fix},
            read_fix="Save it as comma-separated UTF-8 text with columns file,label.",
            max_bytes=self.max_recording_bytes,
        )
        if frame is None:  # optional: no labelled recordings
            return {}, set()
        values: dict[str, list[int | None]] = {}
        for row, (file, label) in enumerate(zip(frame["file"].str.strip(), frame["label"].str.strip(), strict=True)):
            where = f"{path} (row {row + 2})"
            rel = Path(file.replace("\\", "/")).as_posix()
            value = _LABEL_VALUES.get(label.lower())
            problem: tuple[str, str, str, str] | None = None
            if not file or Path(rel).is_absolute() or ".." in Path(rel).parts:
                if not file:
                    found = "an empty value"
                elif Path(rel).is_absolute():
                    found = "an absolute path"
                else:
                    found = "a path that leaves the device folder (..)"
                problem = (
                    "missing_file",
                    f"the file must be a path inside the device folder, found {found}.",
                    "Give the recording's path relative to the device folder.",
                    "file",
                )
            elif not (device_dir / rel).is_file():
                problem = (
                    "missing_file",
                    f"it names {rel!r}, which does not exist in the device folder.",
                    "Fix the path or remove the row.",
                    "file",
                )
            else:
                if rel in values:
                    problem = (
                        "duplicate",
                        f"recording {rel!r} is labelled more than once.",
                        "Keep one row per recording.",
                        "file",
                    )
                elif value is None:
                    problem = (
                        "invalid",
                        f"the label must be 'normal' or 'fault' (or 0/1), found "
                        f"{describe_value(label, number='a number other than 0 or 1')}.",
                        "Correct the label or remove the row.",
                        "label",
                    )
                values.setdefault(rel, []).append(value)
            if problem is not None:
                kind, text, fix, field_name = problem
                problems.append(Problem(where, kind, text, fix, field=field_name))
        # A recording is labelled only when every row naming it gives the same valid label.
        labels = {rel: v[0] for rel, v in values.items() if v[0] is not None and len(set(v)) == 1}
        return labels, set(values)

    # -- the device ------------------------------------------------------------------------

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load one device: windows of spectral features, labels and per-window bookkeeping.

        ``SiteData.y`` is 1 for windows of recordings labelled fault and 0 otherwise;
        ``info["labelled"]`` marks the evaluation windows and ``info["recording"]``
        the recording each window came from; ``ids`` name each window ``"recording#WINDOW"``
        (path relative to the device folder, 0-based window index within the recording).

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
        meta = read_metadata(device_dir)
        problems: list[Problem] = []
        labels, named = self._labels(device_dir, problems)
        files = device_files(device_dir, labels, named)
        recordings, machines = load_windows(self, device_dir, files, meta, problems, strict)
        n_unlabelled = sum(1 for r in recordings if r.rec.rel not in labels)
        if n_unlabelled == 0:
            kinds = Counter(p.kind for p in problems)
            why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in kinds.most_common())
            first_problem = f" First problem: {problems[0]}" if problems else ""
            raise DataValidationError(
                device_dir,
                f"no usable unlabelled recording remains to train on ({len(recordings)} labelled, "
                f"{len(problems)} unusable{': ' + why if why else ''}).{first_problem}",
                "A device needs service recordings that labels.csv does not name; those are its training data.",
            )
        return device_site(device_dir.name, device_dir, recordings, labels, 0, machines, problems, self)

    def read_unlabelled(self, path: Path, *, strict: bool = True) -> SiteData:
        """Load recordings to score: windows of spectral features exactly as :meth:`read` makes them.

        Parameters
        ----------
        path : Path
            A device folder (its ``labels.csv`` is optional and used where present), or one
            recording file, read with the ``device.json`` of the nearest folder above it that
            has one (none: a table's own ``sampling_rate_hz`` column must give the rate).
        strict : bool
            Refuse at the first unusable recording or label row (True), or skip it and count
            it in ``info["skipped"]`` by kind.

        Returns
        -------
        SiteData
            ``y`` is 0 or 1 for windows of recordings ``labels.csv`` labels, ``UNLABELLED``
            (-1) otherwise (and for a single file); ``ids`` are ``"recording#WINDOW"``, the
            recording's path relative to the device folder (the file name for a single file)
            and the 0-based window index within it.

        Raises
        ------
        DataValidationError
            As for :meth:`read`, or when no usable recording remains.
        """
        path = Path(path)
        problems: list[Problem] = []
        labels: dict[str, int] = {}
        if path.is_dir():
            device_dir = path
            labels, named = self._labels(device_dir, problems)
            files = device_files(device_dir, labels, named)
        else:
            device_dir, files = device_of(path), [(path, path.name)]
        recordings, machines = load_windows(self, device_dir, files, read_metadata(device_dir), problems, strict)
        if not recordings:
            raise DataValidationError(
                path,
                f"no usable recording to score ({len(problems)} unusable)."
                + (f" First problem: {problems[0]}" if problems else ""),
                f"Pass a device folder holding recordings ({', '.join(RECORDING_SUFFIXES)}) or one recording file.",
            )
        name = path.name if path.is_dir() else path.stem
        return device_site(name, path, recordings, labels, UNLABELLED, machines, problems, self)


def split_device(site: SiteData, cfg: RunConfig) -> SiteSplit:
    """Labelled windows are the test split; unlabelled ones split into train and validation by recording.

    Validation takes ``cfg.val_fraction`` of the unlabelled recordings (at least one
    when the device has two or more), chosen with a seed, so that overlapping windows
    of one recording never sit on both sides. A device with a single unlabelled
    recording gives its last windows to validation, leaving out the windows that
    overlap both parts (none is validated if too few would remain to train on).
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
            # One recording: its last windows validate; the windows overlapping both parts are left out.
            gap = int(site.info.get("overlapping_windows", 1))  # type: ignore[call-overload]
            n_val = max(1, round(cfg.val_fraction * len(unl)))
            n_train = len(unl) - n_val - gap
            if n_train >= 1:
                val_idx, train_idx = unl[len(unl) - n_val :], unl[:n_train]

    info = {k: v for k, v in site.info.items() if k not in ("labelled", "recording")}

    def part(ix: np.ndarray, suffix: str) -> SiteData:
        ids = site.ids[ix] if site.ids is not None else None
        return SiteData(site.name, site.x[ix], site.y[ix], site.source, {**info, "split": suffix}, ids)

    return SiteSplit(
        site.name,
        part(train_idx, "train"),
        part(np.flatnonzero(labelled), "test"),
        part(val_idx, "validation") if len(val_idx) else None,
    )
