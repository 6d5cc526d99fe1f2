"""The vibration adapter: formats, windows, and every bad input in strict and lenient mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.iot.adapters.features import SpectralFeatures
from domains.iot.adapters.vibration import VibrationAdapter, split_device
from flcore.config import RunConfig
from flcore.exceptions import DataValidationError

FS = 12_800
FEATURES = SpectralFeatures()


def signal(seconds: float = 1.0, seed: int = 0, fs: int = FS) -> np.ndarray:
    """A plausible vibration: two shaft harmonics and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    return (0.3 * np.sin(2 * np.pi * 25 * t) + 0.1 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 0.05, t.size)).astype(
        np.float32
    )


def write_recording(path: Path, x: np.ndarray, **columns: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, x)
    else:
        frame = pd.DataFrame({"accel": x, **{k: [v] * len(x) for k, v in columns.items()}})
        frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def make_device(
    root: Path,
    name: str = "pump-1",
    *,
    unlabelled: int = 3,
    normal: int = 1,
    fault: int = 1,
    meta: dict[str, object] | None = None,
    fmt: str = "npy",
) -> Path:
    """A valid device folder: ``unlabelled`` service recordings and labelled evaluation ones."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "device.json").write_text(
        json.dumps(meta if meta is not None else {"machine_id": name, "sampling_rate_hz": FS})
    )
    rows = []
    for i in range(unlabelled + normal + fault):
        rel = f"recordings/rec-{i:02d}.{fmt}"
        x = signal(seed=i)
        if i >= unlabelled + normal:  # fault: add periodic strikes
            x = x.copy()
            x[::150] += 2.0
        write_recording(folder / rel, x)
        if i >= unlabelled:
            rows.append({"file": rel, "label": "normal" if i < unlabelled + normal else "fault"})
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(folder / "labels.csv", index=False)
    return folder


ADAPTER = VibrationAdapter(FEATURES)


@pytest.mark.parametrize("fmt", ["npy", "csv", "parquet"])
def test_a_valid_device_reads_into_windows(tmp_path: Path, fmt: str) -> None:
    folder = make_device(tmp_path, fmt=fmt)
    site = ADAPTER.read(folder)
    per_recording = FEATURES.count(FS, FS)  # 1 s at 0.25 s windows, half overlap: 7
    assert per_recording == 7
    assert site.x.shape == (5 * per_recording, FEATURES.size) and site.x.dtype == np.float32
    assert np.isfinite(site.x).all()
    labelled = site.info["labelled"]
    assert labelled.sum() == 2 * per_recording
    assert site.y.sum() == per_recording and site.y[~labelled].sum() == 0
    assert site.info["machine_id"] == "pump-1" and site.info["skipped"] == {}
    assert site.info["feature_names"] == FEATURES.names()


def test_formats_give_the_same_features(tmp_path: Path) -> None:
    a = ADAPTER.read(make_device(tmp_path / "a", fmt="npy"))
    b = ADAPTER.read(make_device(tmp_path / "b", fmt="parquet"))
    np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-5)


def test_columns_may_carry_rate_and_machine_instead_of_device_json(tmp_path: Path) -> None:
    folder = tmp_path / "fan-9"
    write_recording(folder / "a.csv", signal(seed=1), sampling_rate_hz=FS, machine_id="fan-9")
    write_recording(folder / "b.csv", signal(seed=2), sampling_rate_hz=FS, machine_id="fan-9")
    site = ADAPTER.read(folder)
    assert len(site) == 14 and site.info["machine_id"] == "fan-9" and not site.info["labelled"].any()


def test_features_do_not_depend_on_the_sampling_rate(tmp_path: Path) -> None:
    # The same vibration recorded at 12.8 and 25.6 kHz lands on the same frequency grid.
    t_lo, t_hi = np.arange(FS) / FS, np.arange(2 * FS) / (2 * FS)

    def vib(t: np.ndarray) -> np.ndarray:
        return 0.3 * np.sin(2 * np.pi * 25 * t) + 0.05 * np.sin(2 * np.pi * 3000 * t) * (1 + np.cos(2 * np.pi * 90 * t))

    lo, hi = FEATURES.extract(vib(t_lo), FS), FEATURES.extract(vib(t_hi), 2 * FS)
    assert lo.shape == hi.shape
    names = FEATURES.names()
    env90 = next(i for i, n in enumerate(names) if n.startswith("env_") and 85 <= float(n.split("_")[1]) < 96)
    assert abs(lo[:, env90].mean() - hi[:, env90].mean()) < 0.05
    # Every feature that carries energy agrees (bands with no content sit at the log floor either way).
    live = lo.mean(axis=0) > -6
    assert live.sum() > 20
    diff = np.abs(lo.mean(axis=0) - hi.mean(axis=0))[live]
    assert diff.max() < 0.25, [n for n, d in zip(np.array(names)[live], diff, strict=True) if d >= 0.25]


# -- bad inputs -------------------------------------------------------------------------------


def _bad(tmp_path: Path, mutate) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    folder = make_device(tmp_path)
    target = mutate(folder)
    return folder, target


def replace_with_csv(folder: Path, frame: pd.DataFrame) -> Path:
    """Swap the first service recording for a CSV file holding ``frame``."""
    (folder / "recordings/rec-00.npy").unlink()
    frame.to_csv(folder / "recordings/rec-00.csv", index=False)
    return folder / "recordings/rec-00.csv"


def set_meta(folder: Path, meta: dict[str, object]) -> Path:
    """Replace device.json; the first recording is the first to be refused."""
    (folder / "device.json").write_text(json.dumps(meta))
    return folder / "recordings/rec-00.npy"


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:100])
    return path


CASES = {
    "missing rate": (
        lambda f: set_meta(f, {"machine_id": "pump-1"}),
        "bad_rate",
        r"sampling rate must be a positive number of Hz; device\.json or a 'sampling_rate_hz' column gives nothing",
    ),
    "zero rate": (
        lambda f: set_meta(f, {"sampling_rate_hz": 0}),
        "bad_rate",
        r"gives 0\b",
    ),
    "negative rate": (
        lambda f: set_meta(f, {"sampling_rate_hz": -12800}),
        "bad_rate",
        r"gives -12800",
    ),
    "text rate": (
        lambda f: set_meta(f, {"sampling_rate_hz": "fast"}),
        "bad_rate",
        r"gives a text value\.",
    ),
    "rate too low": (
        lambda f: set_meta(f, {"sampling_rate_hz": 4000}),
        "bad_rate",
        r"4000 Hz, below the 10500 Hz",
    ),
    "too short": (
        lambda f: write_recording(f / "recordings/rec-00.npy", signal(0.1)),
        "too_short",
        r"holds 1280 samples \(0\.100 s at 12800 Hz\); one window needs 3200 samples",
    ),
    "nan": (
        lambda f: write_recording(f / "recordings/rec-00.npy", np.where(np.arange(FS) == 500, np.nan, signal())),
        "non_finite",
        r"1 sample\(s\) are NaN or infinite \(the first at sample 500\)",
    ),
    "flat-lined": (
        lambda f: write_recording(f / "recordings/rec-00.npy", np.full(FS, 0.012, dtype=np.float32)),
        "flatline",
        r"flat-lined: 12800 consecutive samples",
    ),
    "stuck mid-way": (
        lambda f: write_recording(
            f / "recordings/rec-00.npy", np.where((np.arange(FS) > 4000) & (np.arange(FS) < 5000), 0.2, signal())
        ),
        "flatline",
        r"flat-lined: 999 consecutive samples \(0\.078 s\)",
    ),
    "clipped": (
        lambda f: write_recording(f / "recordings/rec-00.npy", np.clip(signal() * 3, -0.8, 0.8)),
        "clipped",
        r"clipped: \d+ samples \(\d+\.\d%\) sit at the peak magnitude 0\.8",
    ),
    "no accel column": (
        lambda f: replace_with_csv(f, pd.DataFrame({"acc_x": signal()})),
        "no_signal",
        r"no 'accel' column \(columns found: acc_x\)",
    ),
    "text in accel": (
        lambda f: replace_with_csv(f, pd.DataFrame({"accel": ["0.1", "loose"] + ["0.2"] * 5000})),
        "no_signal",
        r"row 2 is not a number",
    ),
    "3-axis npy": (
        lambda f: write_recording(f / "recordings/rec-00.npy", np.stack([signal()] * 3, axis=1)),
        "no_signal",
        r"expected a 1-D numeric array of samples, found an array of shape \(12800, 3\)",
    ),
    "truncated npy": (
        lambda f: truncate(f / "recordings/rec-00.npy"),
        "truncated",
        r"could not be read: it ends inside its \.npy header",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recording_is_refused_in_strict_mode_naming_file_and_field(tmp_path: Path, case: str) -> None:
    mutate, _, message = CASES[case]
    folder, target = _bad(tmp_path, mutate)
    with pytest.raises(DataValidationError, match=message) as err:
        ADAPTER.read(folder)
    assert err.value.path.endswith(target.name), err.value.path
    assert err.value.fix


RATE_CASES = ("missing rate", "zero rate", "negative rate", "text rate", "rate too low")


@pytest.mark.parametrize("case", [c for c in CASES if c not in RATE_CASES])
def test_bad_recording_is_skipped_and_counted_in_lenient_mode(tmp_path: Path, case: str) -> None:
    mutate, kind, _ = CASES[case]
    folder, target = _bad(tmp_path, mutate)
    site = ADAPTER.read(folder, strict=False)
    assert site.info["skipped"] == {kind: 1}
    assert len(site) == 4 * 7  # the other four recordings
    assert target.name in site.info["skipped_examples"][0]


def test_lenient_mode_cannot_train_without_any_usable_recording(tmp_path: Path) -> None:
    folder = make_device(tmp_path, meta={"machine_id": "pump-1", "sampling_rate_hz": -1})
    with pytest.raises(DataValidationError, match=r"no usable unlabelled recording remains .*5 unusable"):
        ADAPTER.read(folder, strict=False)


def test_strict_error_counts_the_other_problems(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    write_recording(folder / "recordings/rec-00.npy", signal(0.1))
    write_recording(folder / "recordings/rec-01.npy", np.full(FS, np.nan))
    more = r"1 more problem\(s\) in this folder; `flsuite site check --domain iot"
    with pytest.raises(DataValidationError, match=more):
        ADAPTER.read(folder)


def test_label_rows_are_checked(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    (folder / "labels.csv").write_text(
        "file,label\nrecordings/rec-03.npy,normal\nrecordings/rec-04.npy,broken\n"
        "recordings/rec-03.npy,fault\nrecordings/nope.npy,fault\n../x.npy,fault\n"
    )
    with pytest.raises(DataValidationError, match=r"row 3\).*'normal' or 'fault' .*found a text value\.") as err:
        ADAPTER.read(folder)
    assert err.value.field == "label"
    site = ADAPTER.read(folder, strict=False)
    assert site.info["skipped"] == {"invalid": 1, "duplicate": 1, "missing_file": 2}
    # rec-03 is labelled twice, differently, and rec-04 has no valid label: both are held out of
    # the data altogether (a recording of unknown label must not train a model of normal data).
    assert site.info["labelled"].sum() == 0 and len(site) == 3 * 7
    assert site.info["files"] == [f"recordings/rec-{i:02d}.npy" for i in range(3)]


def test_agreeing_duplicate_label_rows_keep_the_label_in_lenient_mode(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    (folder / "labels.csv").write_text(
        "\ufefffile,label\nrecordings\\rec-03.npy,normal\nrecordings/rec-03.npy,normal\nrecordings/rec-04.npy,FAULT\n"
    )
    site = ADAPTER.read(folder, strict=False)
    assert site.info["skipped"] == {"duplicate": 1}
    assert site.info["labelled"].sum() == 14 and site.y.sum() == 7  # rec-03 normal, rec-04 fault


def test_label_file_needs_its_columns(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    (folder / "labels.csv").write_text("path,label\nrecordings/rec-03.npy,normal\n")
    with pytest.raises(DataValidationError, match=r"no 'file' column \(columns found: path, label\)"):
        ADAPTER.read(folder, strict=False)


def test_malformed_device_json_is_refused_in_both_modes(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    (folder / "device.json").write_text("{sampling_rate_hz: 12800")
    for strict in (True, False):
        with pytest.raises(DataValidationError, match=r"device\.json.*not valid JSON"):
            ADAPTER.read(folder, strict=strict)


def test_recordings_of_two_machines_in_one_folder(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    write_recording(folder / "a.csv", signal(seed=1), sampling_rate_hz=FS, machine_id="fan-1")
    write_recording(folder / "b.csv", signal(seed=2), sampling_rate_hz=FS, machine_id="fan-1")
    write_recording(folder / "c.csv", signal(seed=3), sampling_rate_hz=FS, machine_id="fan-2")
    with pytest.raises(
        DataValidationError, match=r"recordings of 2 machines share one device folder: .*differs from .*a\.csv"
    ):
        ADAPTER.read(folder)
    site = ADAPTER.read(folder, strict=False)
    assert site.info["machine_id"] == "fan-1" and len(site) == 14


def test_a_device_without_service_data_cannot_train(tmp_path: Path) -> None:
    folder = make_device(tmp_path, unlabelled=0)
    with pytest.raises(DataValidationError, match=r"no usable unlabelled recording remains to train on \(2 labelled"):
        ADAPTER.read(folder)


def test_an_empty_device_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "device.json").write_text(json.dumps({"sampling_rate_hz": FS}))
    with pytest.raises(DataValidationError, match=r"no usable unlabelled recording remains to train on \(0 labelled"):
        ADAPTER.read(folder)


# -- splits ---------------------------------------------------------------------------------------


def test_split_holds_out_labelled_windows_and_validates_on_whole_recordings(tmp_path: Path) -> None:
    site = ADAPTER.read(make_device(tmp_path, unlabelled=5))
    split = split_device(site, RunConfig(val_fraction=0.2, seed=3))
    assert len(split.test) == 14 and split.test.y.sum() == 7
    assert split.val is not None and len(split.val) == 7  # one whole recording of five
    assert len(split.train) == 28 and split.train.y.sum() == 0
    # No recording (whose windows overlap) feeds two parts: match rows back to their recording.
    recording = site.info["recording"]

    def recordings_of(x: np.ndarray) -> set[int]:
        return {int(recording[np.flatnonzero((site.x == row).all(axis=1))[0]]) for row in x}

    train, val, test = recordings_of(split.train.x), recordings_of(split.val.x), recordings_of(split.test.x)
    assert len(train) == 4 and len(val) == 1 and len(test) == 2
    assert not (train & val) and not (train & test) and not (val & test)


def test_split_of_a_single_recording_leaves_a_gap(tmp_path: Path) -> None:
    site = ADAPTER.read(make_device(tmp_path, unlabelled=1, normal=0, fault=0))
    split = split_device(site, RunConfig(val_fraction=0.2))
    assert split.val is not None and len(split.val) == 1 and len(split.train) == 5  # window 5 overlaps both
    assert len(split.test) == 0


def test_split_of_a_single_recording_never_validates_on_overlapping_windows(tmp_path: Path) -> None:
    site = ADAPTER.read(make_device(tmp_path, unlabelled=1, normal=0, fault=0))
    split = split_device(site, RunConfig(val_fraction=0.45))  # 3 of 7 windows: train 0-2, gap 3, val 4-6
    assert split.val is not None and len(split.val) == 3 and len(split.train) == 3
    heavy = split_device(site, RunConfig(val_fraction=0.45, seed=1))
    assert heavy.val is not None and len(heavy.val) + len(heavy.train) == 6


def test_split_without_validation(tmp_path: Path) -> None:
    site = ADAPTER.read(make_device(tmp_path))
    split = split_device(site, RunConfig(val_fraction=0.0))
    assert split.val is None and len(split.train) == 21


def test_can_read_tells_a_device_from_a_fleet(tmp_path: Path) -> None:
    device = make_device(tmp_path / "fleet")
    bare = tmp_path / "fleet" / "bare"
    write_recording(bare / "a.csv", signal(), sampling_rate_hz=FS)
    assert ADAPTER.can_read(device) and ADAPTER.can_read(bare)
    assert not ADAPTER.can_read(tmp_path / "fleet")  # a folder of devices
    assert not ADAPTER.can_read(tmp_path / "missing")


# -- units and odd inputs -----------------------------------------------------------------------


def test_units_are_converted_to_g(tmp_path: Path) -> None:
    g = ADAPTER.read(make_device(tmp_path / "g"))
    ms2 = make_device(tmp_path / "ms2", meta={"sampling_rate_hz": FS, "units": "m/s^2"})
    for f in (ms2 / "recordings").iterdir():
        np.save(f, np.load(f) * 9.80665)
    np.testing.assert_allclose(ADAPTER.read(ms2).x, g.x, rtol=1e-4, atol=1e-4)
    bad = make_device(tmp_path / "bad", meta={"sampling_rate_hz": FS, "units": "inch/s"})
    with pytest.raises(DataValidationError, match=r"declares units that are none of g, mg, m/s\^2.*found a text value"):
        ADAPTER.read(bad)


def test_integer_counts_need_a_sensitivity(tmp_path: Path) -> None:
    folder = make_device(tmp_path, meta={"sampling_rate_hz": FS})
    counts = (signal() / 1e-4).astype(np.int16)
    write_recording(folder / "recordings/rec-00.npy", counts)
    with pytest.raises(DataValidationError, match=r"integers \(int16\).*raw converter counts.*'g_per_count'") as err:
        ADAPTER.read(folder)
    assert err.value.field == "g_per_count"
    (folder / "device.json").write_text(json.dumps({"sampling_rate_hz": FS, "g_per_count": 1e-4}))
    site = ADAPTER.read(folder)
    reference = FEATURES.extract(counts.astype(np.float64) * 1e-4, FS)
    np.testing.assert_allclose(site.x[:7], reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"accel": [True, False] * 4000}), r"must hold numbers, found bool values"),
        (pd.DataFrame([[0.1, 0.2]] * 8000, columns=["accel", "Accel "]), r"'accel' appears 2 times"),
        (
            pd.DataFrame({"accel": signal().astype(np.float64) * 1e200}),
            r"spectral features are not finite: the samples reach [0-9.]+e\+199 g",
        ),
    ],
)
def test_odd_signal_columns_are_reported_not_crashed_on(tmp_path: Path, frame: pd.DataFrame, message: str) -> None:
    folder = make_device(tmp_path)
    replace_with_csv(folder, frame)
    with pytest.raises(DataValidationError, match=message):
        ADAPTER.read(folder)
    assert ADAPTER.read(folder, strict=False).info["skipped"] in ({"no_signal": 1}, {"non_finite": 1})


def test_unhashable_metadata_column_is_reported(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    (folder / "recordings/rec-00.npy").unlink()
    pd.DataFrame({"accel": signal(), "machine_id": [["a"]] * FS}).to_parquet(folder / "recordings/rec-00.parquet")
    with pytest.raises(DataValidationError, match=r"could not be read \(TypeError"):
        ADAPTER.read(folder)


def test_lenient_error_says_why_nothing_is_usable(tmp_path: Path) -> None:
    folder = make_device(tmp_path, meta={"sampling_rate_hz": 0})
    with pytest.raises(DataValidationError, match=r"5 unusable: 5 bad rate\)\. First problem: .*rec-00\.npy"):
        ADAPTER.read(folder, strict=False)
