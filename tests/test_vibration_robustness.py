"""The vibration adapter never crashes on a bad file, never echoes a value, and sees clipping under noise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import signal as sps

from domains.iot import synthetic
from domains.iot.adapters.features import SpectralFeatures
from domains.iot.adapters.quality import clipping
from domains.iot.adapters.vibration import VibrationAdapter
from flcore.cli import main
from flcore.data import files
from flcore.exceptions import DataValidationError

FS = 12_800
ADAPTER = VibrationAdapter(SpectralFeatures())
PLANTED = "Zebediah Quux"


def vibration(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Two shaft harmonics and noise, as in test_vibration_adapter."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS)) / FS
    x = 0.3 * np.sin(2 * np.pi * 25 * t) + 0.1 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 0.05, t.size)
    return x.astype(np.float32)


def make_device(root: Path, unlabelled: int = 3) -> Path:
    """A valid device: ``unlabelled`` service recordings and one labelled normal one."""
    folder = root / "pump-1"
    (folder / "recordings").mkdir(parents=True)
    (folder / "device.json").write_text(json.dumps({"machine_id": "pump-1", "sampling_rate_hz": FS}))
    for i in range(unlabelled + 1):
        np.save(folder / f"recordings/rec-{i:02d}.npy", vibration(seed=i))
    pd.DataFrame({"file": [f"recordings/rec-{unlabelled:02d}.npy"], "label": ["normal"]}).to_csv(
        folder / "labels.csv", index=False
    )
    return folder


def write_npy_header(path: Path, shape: tuple[int, ...], data: bytes = b"") -> Path:
    """An .npy file whose header claims ``shape`` float64, followed by ``data``."""
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": shape})
        fh.write(data)
    return path


def assert_refused_and_skipped(folder: Path, bad: Path, kind: str, message: str) -> None:
    """Strict mode names the file; lenient mode skips it alone and counts it under ``kind``."""
    with pytest.raises(DataValidationError, match=message) as err:
        ADAPTER.read(folder)
    assert err.value.path == str(bad)
    assert "Traceback" not in str(err.value)
    site = ADAPTER.read(folder, strict=False)
    assert site.info["skipped"] == {kind: 1}
    assert bad.name in site.info["skipped_examples"][0]
    assert len(site.info["files"]) == 3  # the other recordings still load


# -- files that cannot be read ---------------------------------------------------------------------

BAD_FILES = {
    "0-byte npy": (lambda p: p.write_bytes(b""), "truncated", r"holds 0 bytes, too few for an \.npy header"),
    "cut in the header": (
        lambda p: p.write_bytes(p.read_bytes()[:40]),
        "truncated",
        r"ends inside its \.npy header",
    ),
    "cut in the data": (
        lambda p: p.write_bytes(p.read_bytes()[: 128 + 4000]),
        "truncated",
        r"shape \(12800,\) \(50\.0 KiB\) but only 3\.9 KiB follow the header: the file is truncated",
    ),
    "header claiming 8 TiB": (
        lambda p: write_npy_header(p, (2**40,), np.zeros(4).tobytes()),
        "truncated",
        r"shape \(1099511627776,\) \(8\.0 TiB\) but only 32 bytes follow",
    ),
    "bad header": (
        lambda p: p.write_bytes(np.lib.format.MAGIC_PREFIX + b"\x01\x00\x10\x00{'descr': 7}    \n"),
        "unreadable",
        r"\.npy header could not be read",
    ),
    "not npy at all": (
        lambda p: p.write_bytes(b"%PDF-1.4 " + PLANTED.encode()),
        "unreadable",
        r"not an \.npy array: it does not start with the \.npy signature",
    ),
    "object array": (
        lambda p: np.save(p, np.array([PLANTED, 1], dtype=object), allow_pickle=True),
        "unreadable",
        r"holds Python objects, which are never unpickled",
    ),
    "directory named rec.npy": (
        lambda p: (p.unlink(), p.mkdir(), np.save(p / "inner.npy", vibration())),
        "unreadable",
        r"expected a regular file, found a directory",
    ),
    "broken link": (
        lambda p: (p.unlink(), p.symlink_to(p.parent / "gone" / "x.npy")),
        "unreadable",
        r"could not be opened \(FileNotFoundError: No such file or directory\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_npy_is_a_data_error_not_a_crash(tmp_path: Path, case: str) -> None:
    folder = make_device(tmp_path)
    bad = folder / "recordings/rec-01.npy"
    damage, kind, message = BAD_FILES[case]
    damage(bad)
    assert_refused_and_skipped(folder, bad, kind, message)


def test_a_header_within_the_file_but_above_the_limit_is_refused_before_loading(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    bad = folder / "recordings/rec-01.npy"
    np.save(bad, np.zeros(10_000, dtype=np.float64))  # 78 KiB, all there
    small = VibrationAdapter(SpectralFeatures(), max_recording_bytes=60_000)
    with pytest.raises(DataValidationError, match=r"its \.npy header claims 78\.1 KiB once loaded, more than") as err:
        small.read(folder)
    assert err.value.path == str(bad)
    assert "max_recording_bytes" in err.value.fix
    assert small.read(folder, strict=False).info["skipped"] == {"too_large": 1}


def test_the_limit_is_never_more_than_half_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    class Memory:
        available = 100_000

    monkeypatch.setattr(files.psutil, "virtual_memory", lambda: Memory())
    assert files.memory_limit(512 * 2**20) == 50_000
    assert files.memory_limit(10_000) == 10_000
    assert files.memory_limit(None) == 50_000


def test_a_sparse_file_claiming_more_than_memory_is_too_large_not_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Memory:
        available = 2 * 2**20  # 1 MiB may be claimed

    monkeypatch.setattr(files.psutil, "virtual_memory", lambda: Memory())
    path = write_npy_header(tmp_path / "big.npy", (2**21,))  # 16 MiB claimed
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size + 2**24)  # the bytes are "there" (a sparse file)
    out = files.load_npy(path, files.memory_limit(), too_large_fix="Split it.")
    assert isinstance(out, files.Problem) and out.kind == "too_large"
    assert "16.0 MiB" in out.problem and "1.0 MiB" in out.problem


TABLE_CASES = {
    "corrupt parquet": ("rec-01.parquet", b"PAR1 this is not a parquet file PAR1", r"could not be read as Parquet"),
    "parquet cut short": ("rec-01.parquet", None, r"could not be read as Parquet"),
    "csv that is not text": ("rec-01.csv", b"accel\n" + bytes(range(128, 256)) * 40, r"\(UnicodeDecodeError: 'utf-8'"),
    "empty csv": ("rec-01.csv", b"", r"could not be read \(EmptyDataError"),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_a_bad_table_recording_is_a_data_error(tmp_path: Path, case: str) -> None:
    folder = make_device(tmp_path)
    (folder / "recordings/rec-01.npy").unlink()
    name, content, message = TABLE_CASES[case]
    bad = folder / "recordings" / name
    if content is None:
        pd.DataFrame({"accel": vibration()}).to_parquet(bad)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])
    else:
        bad.write_bytes(content)
    assert_refused_and_skipped(folder, bad, "unreadable", message)


def test_a_parquet_whose_metadata_claims_too_much_is_refused_before_reading(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    (folder / "recordings/rec-01.npy").unlink()
    bad = folder / "recordings/rec-01.parquet"
    pd.DataFrame({"accel": vibration().astype(np.float64)}).to_parquet(bad)
    small = VibrationAdapter(SpectralFeatures(), max_recording_bytes=60_000)  # the .npy recordings take 50 KiB
    with pytest.raises(DataValidationError, match=r"its Parquet metadata claims 1[0-9.]+ KiB once loaded") as err:
        small.read(folder)
    assert err.value.path == str(bad)


# -- metadata and labels that cannot be read ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("device.json", lambda p: (p.unlink(), p.mkdir()), r"device metadata cannot be read: expected a regular file"),
        ("device.json", lambda p: p.write_bytes(b'{"units": "\xff\xfe"}'), r"device metadata is not UTF-8 text"),
        ("device.json", lambda p: p.write_text("[" * 100_000), r"not valid JSON \(RecursionError"),
        ("device.json", lambda p: p.write_bytes(b" " * (2**20 + 1)), r"device metadata is 1\.0 MiB; expected a small"),
        ("labels.csv", lambda p: (p.unlink(), p.mkdir()), r"label file cannot be used: expected a regular file"),
        ("labels.csv", lambda p: p.write_bytes(b"file,label\n\xff\xfe,normal\n"), r"could not be read as CSV"),
    ],
)
def test_unreadable_metadata_or_labels_are_refused_in_both_modes(
    tmp_path: Path, name: str, damage: object, message: str
) -> None:
    folder = make_device(tmp_path)
    damage(folder / name)  # type: ignore[operator]
    for strict in (True, False):
        with pytest.raises(DataValidationError, match=message) as err:
            ADAPTER.read(folder, strict=strict)
        assert err.value.path == str(folder / name)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_a_device_json_without_read_permission(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    (folder / "device.json").chmod(0)
    with pytest.raises(DataValidationError, match=r"may not read it \(permission denied\)"):
        ADAPTER.read(folder)


# -- values are never echoed -------------------------------------------------------------------------


def test_no_value_from_the_files_appears_in_any_message(tmp_path: Path) -> None:
    folder = make_device(tmp_path, unlabelled=4)
    (folder / "device.json").write_text(json.dumps({"sampling_rate_hz": FS, "units": PLANTED}))
    (folder / "labels.csv").write_text(
        f"file,label\nrecordings/rec-04.npy,{PLANTED}\n/home/{PLANTED}/rec.npy,fault\n../{PLANTED}.npy,normal\n"
    )
    with pytest.raises(DataValidationError) as err:
        ADAPTER.read(folder)
    assert "units that are none of g, mg" in str(err.value) or "label must be" in str(err.value)
    messages = [str(err.value)]
    try:
        ADAPTER.read(folder, strict=False)
    except DataValidationError as lenient:  # every recording has the bad unit: nothing left to train on
        messages.append(str(lenient))
    (folder / "device.json").write_text(json.dumps({"sampling_rate_hz": PLANTED}))
    with pytest.raises(DataValidationError) as site_err:
        ADAPTER.read(folder)
    messages.append(str(site_err.value))
    (folder / "device.json").write_text(json.dumps({"sampling_rate_hz": FS}))
    site = ADAPTER.read(folder, strict=False)
    messages += site.info["skipped_examples"]
    assert site.info["skipped"] == {"invalid": 1, "missing_file": 2}
    for text in messages:
        assert PLANTED not in text, text
        assert "Zebediah" not in text, text


def test_machine_ids_are_not_echoed_when_two_machines_share_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    folder.mkdir()
    for name, machine in (("a.csv", "fan-1"), ("b.csv", "fan-1"), ("c.csv", PLANTED)):
        frame = pd.DataFrame({"accel": vibration(seed=len(name)), "machine_id": machine, "sampling_rate_hz": FS})
        frame.to_csv(folder / name, index=False)
    with pytest.raises(DataValidationError, match=r"machine_id differs from that of [ac]\.csv") as err:
        ADAPTER.read(folder)
    assert PLANTED not in str(err.value)


# -- the command line ------------------------------------------------------------------------------


def test_site_check_names_the_bad_files_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_device(tmp_path / "fleet")
    (folder / "recordings/rec-00.npy").write_bytes(b"")
    write_npy_header(folder / "recordings/rec-01.npy", (2**40,))
    code = main(["site", "check", "--domain", "iot", "--data", str(tmp_path / "fleet")])
    out = capsys.readouterr()
    assert code == 2
    assert "rec-00.npy" in out.out + out.err and "Traceback" not in out.out + out.err
    code = main(["site", "check", "--domain", "iot", "--data", str(tmp_path / "fleet"), "--lenient"])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "rec-00.npy" in out.out and "rec-01.npy" in out.out


# -- clipping under noise --------------------------------------------------------------------------


def gaussian(rng: np.random.Generator, n: int = FS) -> np.ndarray:
    return rng.normal(0.0, 0.2, n)


def sine(rng: np.random.Generator, noise: float, n: int = FS) -> np.ndarray:
    t = np.arange(n) / FS
    return np.sin(2 * np.pi * 25.0 * t + rng.uniform(0, 2 * np.pi)) + rng.normal(0.0, noise, n)


def bursts(rng: np.random.Generator, n: int = FS, period_s: float = 0.008) -> np.ndarray:
    """Bearing-fault-like impacts: periodic bursts ringing a 3 kHz resonance, decaying in 1 ms, with noise."""
    ring_t = np.arange(int(0.01 * FS)) / FS
    ring = np.exp(-ring_t / 0.001) * np.sin(2 * np.pi * 3000.0 * ring_t)
    train = np.zeros(n)
    hits = (np.arange(0.0, n / FS, period_s) * FS).astype(int)
    train[hits] = rng.uniform(0.8, 1.2, len(hits))
    return sps.fftconvolve(train, ring)[:n] + rng.normal(0.0, 0.05, n)


def clip(x: np.ndarray, share: float, noise: float, rng: np.random.Generator, sides: str = "both") -> np.ndarray:
    """Saturate ``x`` so that ``share`` of its samples exceed the limit, then add noise of ``noise`` x the limit."""
    centre = np.median(x)
    d = x - centre
    if sides == "both":
        level = np.quantile(np.abs(d), 1 - share)
        held = np.clip(d, -level, level)
    elif sides == "upper":
        level = np.quantile(d, 1 - share)
        held = np.minimum(d, level)
    else:
        level = -np.quantile(d, share)
        held = np.maximum(d, -level)
    return centre + held + rng.normal(0.0, noise * level, len(x))


NOT_CLIPPED = {
    "gaussian broadband": lambda rng: gaussian(rng),
    "gaussian, 10^5 samples": lambda rng: gaussian(rng, 100_000),
    "sine, 0.1% noise": lambda rng: sine(rng, 0.001),
    "sine, 1% noise": lambda rng: sine(rng, 0.01),
    "sine, 5% noise": lambda rng: sine(rng, 0.05),
    "sine, 20% noise": lambda rng: sine(rng, 0.2),
    "bearing-fault bursts": lambda rng: bursts(rng),
    "slow bursts": lambda rng: bursts(rng, period_s=0.03),
    "test harmonics": lambda rng: vibration(seed=int(rng.integers(1000))).astype(np.float64),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", list(NOT_CLIPPED))
def test_natural_signals_are_not_taken_for_clipped(case: str, seed: int) -> None:
    x = NOT_CLIPPED[case](np.random.default_rng([seed, 7]))
    assert clipping(x, 0.005) is None


def test_no_recording_of_the_synthetic_fleet_is_taken_for_clipped() -> None:
    machines = synthetic.make_fleet(60, seed=5, fault_share=0.5)
    flagged = []
    for i, machine in enumerate(machines):
        rng = np.random.default_rng([5, i])
        for faulty in (False, True) if machine.fault else (False,):
            for load in (0.3, 1.0):
                x = synthetic.simulate(machine, rng, faulty, load).astype(np.float64)
                if clipping(x, 0.005) is not None:
                    flagged.append((machine.machine_id, faulty, load))
    assert flagged == []


def test_a_written_fleet_reads_without_any_clipped_recording(tmp_path: Path) -> None:
    synthetic.write_fleet(tmp_path, n_devices=8, seed=3, recordings_scale=0.25)
    for device in sorted(p for p in tmp_path.iterdir() if p.is_dir()):
        site = ADAPTER.read(device)  # strict: any clipped recording would be refused
        assert site.info["skipped"] == {}


CLIPPED = {
    "gaussian, both sides, 2%, noise 1%": lambda rng: clip(gaussian(rng), 0.02, 0.01, rng),
    "gaussian, upper side, 2%, noise 1%": lambda rng: clip(gaussian(rng), 0.02, 0.01, rng, "upper"),
    "gaussian, lower side, 2%, noise 1%": lambda rng: clip(gaussian(rng), 0.02, 0.01, rng, "lower"),
    "bursts, upper side, 1%, noise 2%": lambda rng: clip(bursts(rng), 0.01, 0.02, rng, "upper"),
    "bursts, both sides, 2%, noise 2%": lambda rng: clip(bursts(rng), 0.02, 0.02, rng),
    "harmonics clipped hard, noise 1%": lambda rng: (
        np.clip(3 * vibration(seed=int(rng.integers(99))), -0.8, 0.8) + rng.normal(0, 0.008, FS)
    ),
    "harmonics clipped hard, noise 2%": lambda rng: (
        np.clip(3 * vibration(seed=int(rng.integers(99))), -0.8, 0.8) + rng.normal(0, 0.016, FS)
    ),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", list(CLIPPED))
def test_clipping_with_noise_on_top_is_seen(case: str, seed: int) -> None:
    x = CLIPPED[case](np.random.default_rng([seed, 11]))
    assert int((np.abs(x) >= np.abs(x).max() * (1 - 1e-6)).sum()) <= 3  # nothing sits exactly at the peak
    assert clipping(x, 0.005) is not None


def test_a_noisy_clipped_recording_is_refused_and_counted(tmp_path: Path) -> None:
    folder = make_device(tmp_path)
    rng = np.random.default_rng(3)
    np.save(folder / "recordings/rec-01.npy", np.clip(3 * vibration(seed=1), -0.8, 0.8) + rng.normal(0, 0.008, FS))
    bad = folder / "recordings/rec-01.npy"
    assert_refused_and_skipped(folder, bad, "clipped", r"sensor is clipped: .*quieter from sample to sample")
