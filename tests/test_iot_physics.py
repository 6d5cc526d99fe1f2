"""The synthetic fleet follows bearing physics: defect frequencies from geometry show in the envelope spectrum."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from domains.iot.adapters.features import SpectralFeatures, envelope_spectrum
from domains.iot.synthetic import BEARINGS, FAULT_FREQUENCY, make_fleet, simulate, write_fleet


def test_defect_frequencies_of_the_6205_match_the_published_multipliers() -> None:
    # SKF 6205 (the CWRU test-rig bearing): BPFO 3.585, BPFI 5.415, BSF 2.357, FTF 0.3983 x shaft speed.
    f = BEARINGS[0].frequencies(1.0)
    assert f["bpfo"] == pytest.approx(3.585, abs=2e-3)
    assert f["bpfi"] == pytest.approx(5.415, abs=2e-3)
    assert f["bsf"] == pytest.approx(2.357, abs=2e-3)
    assert f["ftf"] == pytest.approx(0.3983, abs=1e-3)
    # BPFO + BPFI = number of balls x shaft speed, for every bearing.
    for b in BEARINGS:
        g = b.frequencies(25.0)
        assert g["bpfo"] + g["bpfi"] == pytest.approx(b.n_balls * 25.0)


def _machine(fault: str, seed: int = 3):
    base = next(m for m in make_fleet(40, seed) if m.fault is not None)
    return dataclasses.replace(base, fault=fault, severity=0.6)


@pytest.mark.parametrize("fault", ["outer_race", "inner_race", "ball"])
def test_fault_shows_in_the_envelope_spectrum_where_the_geometry_says(fault: str) -> None:
    m = _machine(fault)
    load = 0.7
    rng = np.random.default_rng(0)
    faulty = simulate(m, rng, True, load)
    healthy = simulate(m, rng, False, load)
    # The strike rate: the defect frequency at this load's speed (ball faults strike twice per spin).
    shaft = m.shaft_hz * (1 - 0.03 * (load - 0.5))
    expected = m.bearing.frequencies(shaft)[FAULT_FREQUENCY[fault]] * (2 if fault == "ball" else 1)
    f, amp = envelope_spectrum(faulty, m.sampling_rate_hz, 2000.0, 5000.0)
    _, amp_h = envelope_spectrum(healthy, m.sampling_rate_hz, 2000.0, 5000.0)
    band = (f > 8.0) & (f < 400.0)
    peak = f[band][np.argmax(amp[band])]
    near = np.abs(f - expected) <= 3.0
    # The strongest envelope line sits at the defect frequency or its second harmonic ...
    assert min(abs(peak - expected), abs(peak - 2 * expected)) <= 3.0, (peak, expected)
    # ... and the envelope at the defect frequency stands far above the healthy machine's.
    assert amp[near].max() > 5 * amp_h[near].max()


def test_a_healthy_envelope_has_no_line_at_the_defect_frequency() -> None:
    m = _machine("outer_race")
    x = simulate(m, np.random.default_rng(1), False, 0.6)
    f, amp = envelope_spectrum(x, m.sampling_rate_hz, 2000.0, 5000.0)
    expected = m.defect_hz()
    assert expected is not None
    near = np.abs(f - expected) <= 3.0
    background = np.median(amp[(f > 8.0) & (f < 400.0)])
    assert amp[near].max() < 6 * background


def test_faults_raise_kurtosis_of_the_resonance_band() -> None:
    m = _machine("outer_race")
    rng = np.random.default_rng(2)
    feats = SpectralFeatures()
    kurt = feats.names().index("kurtosis_bp")
    fault = feats.extract(simulate(m, rng, True, 0.5), m.sampling_rate_hz)[:, kurt]
    normal = feats.extract(simulate(m, rng, False, 0.5), m.sampling_rate_hz)[:, kurt]
    assert fault.min() > normal.max()


def test_fleet_is_heterogeneous_and_reproducible() -> None:
    a, b = make_fleet(200, 7), make_fleet(200, 7)
    assert a == b
    assert make_fleet(200, 8) != a
    faulty = sum(m.fault is not None for m in a)
    assert 0.2 * 200 < faulty < 0.4 * 200  # a minority develops faults
    sizes = [m.n_unlabelled for m in a]
    assert min(sizes) <= 3 and max(sizes) >= 20  # history from a few snapshots to many
    assert {m.sampling_rate_hz for m in a} == {12_800, 25_600}
    assert len({m.bearing.name for m in a}) == 3
    assert len({round(m.shaft_hz, 9) for m in a}) == 200


def test_written_fleet_has_the_documented_layout(tmp_path: Path) -> None:
    folders = write_fleet(tmp_path, n_devices=4, seed=1, file_format="csv")
    truth = json.loads((tmp_path / "fleet.json").read_text())["devices"]
    assert [f.name for f in folders] == [d["machine_id"] for d in truth]
    for folder, t in zip(folders, truth, strict=True):
        meta = json.loads((folder / "device.json").read_text())
        assert meta["machine_id"] == folder.name and meta["sampling_rate_hz"] in (12_800, 25_600)
        labels = (folder / "labels.csv").read_text().splitlines()
        assert labels[0] == "file,label"
        kinds = {line.split(",")[1] for line in labels[1:]}
        assert kinds == ({"normal", "fault"} if t["fault"] else {"normal"})
        recordings = sorted((folder / "recordings").iterdir())
        assert len(recordings) > len(labels) - 1  # unlabelled service recordings as well
        assert recordings[0].read_text().startswith("accel\n")


def test_kurtosis_and_filter_shortcuts_match_scipy() -> None:
    from scipy import signal, stats

    from domains.iot.adapters.features import _bandpass, _kurtosis

    rng = np.random.default_rng(3)
    frames = np.vstack([rng.standard_normal((4, 256)), rng.standard_t(3, (2, 256)), np.full((1, 256), 2.5)])
    np.testing.assert_allclose(_kurtosis(frames), stats.kurtosis(frames, axis=1, fisher=True), rtol=1e-12)
    assert np.isnan(_kurtosis(frames)[-1])  # a constant window, as scipy says
    first = _bandpass(2000.0, 5000.0, 12800.0)
    first[0, 0] = 99.0  # a caller's change must not reach the next caller
    np.testing.assert_array_equal(
        _bandpass(2000.0, 5000.0, 12800.0),
        signal.butter(4, [2000.0, 5000.0], btype="bandpass", fs=12800.0, output="sos"),
    )
