"""A synthetic fleet of rotating machines whose vibration follows bearing physics.

Each device is a motor-driven machine (pump, fan, compressor) with one
accelerometer on a rolling-element bearing housing. What a recording contains:

* **Shaft harmonics**: 1x, 2x and 3x the shaft frequency (imbalance,
  misalignment), growing with load.
* **Structural resonance**: random forcing (flow, friction) excites the housing's
  resonance, a lightly damped mode between 2.2 and 4.2 kHz.
* **Bearing defects**: each time a rolling element passes a defect it strikes it,
  and the strike rings the resonance. Strikes repeat at the defect frequencies that
  the bearing's geometry gives (:meth:`Bearing.frequencies`):

  - outer race (BPFO): steady amplitude, the defect sits in the load zone;
  - inner race (BPFI): the defect turns with the shaft, so strikes are
    amplitude-modulated at the shaft frequency;
  - rolling element (BSF): the ball strikes both races, twice per spin, modulated
    at the cage frequency (FTF).

  Strike times jitter by about 1% (rolling elements slip), as on real bearings, so
  the defect shows as a peak in the *envelope* spectrum rather than in the plain one.
* **Sensor and device differences**: sampling rate (12.8 or 25.6 kHz), sensor
  gain (+-20%), noise floor and shaft speed differ per device; speed drifts
  slightly between recordings.

Most recordings are unlabelled and normal: what a device sees in service. Devices
hold very different amounts of it (2 to 24 one-second snapshots), and each has so
far run within a narrow band of loads. A minority of machines develop a fault;
every device holds a few labelled evaluation recordings taken later, at any load
(normal, and fault for the faulty machines), as a maintenance team labels after
an inspection. Fault severity is log-uniform from incipient (strikes near the
noise) to clear.

Why a fleet federates: a device alone knows its own history only. When its load
moves outside that band, its own model raises false alarms; the fleet has seen
every load on some machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal

from flcore.data.tables import write_table
from flcore.exceptions import FlsuiteError
from flcore.outputs import atomic_write, write_text_atomic

#: Seconds per recording (a condition-monitoring snapshot).
RECORDING_SECONDS = 1.0
#: Sampling rates a device may use.
SAMPLING_RATES = (12_800, 25_600)
#: Loads (share of rated) of the evaluation recordings; service history spans a narrow band of them.
EVALUATION_LOAD = (0.3, 1.0)
#: Fault kinds and the defect frequency each strikes at.
FAULT_KINDS = ("outer_race", "inner_race", "ball")


@dataclass(frozen=True)
class Bearing:
    """Rolling-element bearing geometry (deep-groove ball bearings by default).

    Parameters
    ----------
    name : str
        Catalogue designation.
    n_balls : int
        Number of rolling elements.
    ball_mm : float
        Rolling-element diameter d.
    pitch_mm : float
        Pitch diameter D.
    contact_deg : float
        Contact angle phi.
    """

    name: str
    n_balls: int
    ball_mm: float
    pitch_mm: float
    contact_deg: float = 0.0

    def frequencies(self, shaft_hz: float) -> dict[str, float]:
        """Defect frequencies in Hz at shaft frequency ``shaft_hz`` (stationary outer race).

        ``bpfo = n/2 fr (1 - d/D cos phi)``, ``bpfi = n/2 fr (1 + d/D cos phi)``,
        ``bsf = D/(2d) fr (1 - (d/D cos phi)^2)``, ``ftf = fr/2 (1 - d/D cos phi)``.
        """
        r = self.ball_mm / self.pitch_mm * math.cos(math.radians(self.contact_deg))
        return {
            "shaft": shaft_hz,
            "bpfo": self.n_balls / 2 * shaft_hz * (1 - r),
            "bpfi": self.n_balls / 2 * shaft_hz * (1 + r),
            "bsf": self.pitch_mm / (2 * self.ball_mm) * shaft_hz * (1 - r * r),
            "ftf": shaft_hz / 2 * (1 - r),
        }


#: Bearings fitted across the fleet (SKF deep-groove dimensions).
BEARINGS = (
    Bearing("6205", 9, 7.94, 39.04),
    Bearing("6206", 9, 9.53, 46.0),
    Bearing("6308", 8, 15.08, 65.0),
)

#: The defect frequency each fault strikes at.
FAULT_FREQUENCY = {"outer_race": "bpfo", "inner_race": "bpfi", "ball": "bsf"}


@dataclass(frozen=True)
class Machine:
    """One device: its machine, bearing, sensor and (maybe) fault."""

    machine_id: str
    sampling_rate_hz: int
    shaft_hz: float
    history_load: tuple[float, float]
    bearing: Bearing
    resonance_hz: float
    damping: float
    harmonics: tuple[float, float, float]
    noise: float
    gain: float
    n_unlabelled: int
    n_eval_normal: int
    n_eval_fault: int
    fault: str | None = None
    severity: float = 0.0

    def defect_hz(self) -> float | None:
        """The fault's strike frequency in Hz, or ``None`` for a healthy machine."""
        if self.fault is None:
            return None
        return self.bearing.frequencies(self.shaft_hz)[FAULT_FREQUENCY[self.fault]]


def make_fleet(n_devices: int, seed: int, fault_share: float = 0.3, recordings_scale: float = 1.0) -> list[Machine]:
    """Draw ``n_devices`` machines; about ``fault_share`` of them develop a fault.

    Devices hold very different amounts of history: most were installed recently and
    hold a handful of recordings, a few hold many (a log-uniform spread from 2 to 24
    recordings, scaled by ``recordings_scale``).
    """
    rng = np.random.default_rng([seed, 4242])
    machines = []
    kinds = ("pump", "fan", "compressor")
    for i in range(n_devices):
        faulty = rng.random() < fault_share
        n_unlab = max(2, round(math.exp(rng.uniform(math.log(2), math.log(24))) * recordings_scale))
        a1 = rng.uniform(0.15, 0.5)
        centre = rng.uniform(0.35, 0.95)
        machines.append(
            Machine(
                machine_id=f"{kinds[i % 3]}-{i:04d}",
                sampling_rate_hz=int(SAMPLING_RATES[int(rng.random() < 0.25)]),
                shaft_hz=float(rng.uniform(18.0, 30.0)),
                history_load=(float(max(0.3, centre - 0.06)), float(min(1.0, centre + 0.06))),
                bearing=BEARINGS[int(rng.integers(len(BEARINGS)))],
                resonance_hz=float(rng.uniform(2200.0, 4200.0)),
                damping=float(rng.uniform(0.03, 0.07)),
                harmonics=(a1, a1 * rng.uniform(0.2, 0.6), a1 * rng.uniform(0.05, 0.3)),
                noise=float(rng.uniform(0.01, 0.03)),
                gain=float(np.exp(rng.normal(0.0, 0.12))),
                n_unlabelled=int(n_unlab),
                n_eval_normal=2,
                n_eval_fault=2 if faulty else 0,
                fault=str(FAULT_KINDS[int(rng.integers(3))]) if faulty else None,
                severity=float(math.exp(rng.uniform(math.log(0.1), 0.0))) if faulty else 0.0,
            )
        )
    return machines


def _ringing(machine: Machine, fs: int) -> np.ndarray:
    """Impulse response of the housing's resonance (a damped sinusoid, unit peak)."""
    wn = 2 * math.pi * machine.resonance_hz
    t = np.arange(int(fs * 8 / (machine.damping * machine.resonance_hz))) / fs
    h = np.exp(-machine.damping * wn * t) * np.sin(wn * math.sqrt(1 - machine.damping**2) * t)
    return h / np.abs(h).max()


def simulate(
    machine: Machine, rng: np.random.Generator, faulty: bool, load: float, seconds: float = RECORDING_SECONDS
) -> np.ndarray:
    """One accelerometer recording (in g) of ``machine`` at ``load`` (0-1), healthy or with its fault.

    Load slows an induction motor slightly (slip), raises the shaft harmonics and,
    more steeply, the flow and friction forcing that rings the housing.

    Returns
    -------
    numpy.ndarray
        ``float32`` samples at ``machine.sampling_rate_hz``.
    """
    fs = machine.sampling_rate_hz
    n = round(seconds * fs)
    t = np.arange(n) / fs
    fr = machine.shaft_hz * (1 - 0.03 * (load - 0.5)) * (1 + rng.normal(0.0, 0.002))
    x = np.zeros(n)
    for k, amp in enumerate(machine.harmonics, start=1):
        x += (
            amp
            * (0.4 + 0.6 * load)
            * rng.uniform(0.9, 1.1)
            * np.sin(2 * np.pi * k * fr * t + rng.uniform(0, 2 * np.pi))
        )
    # Broadband forcing rings the housing's resonance. Noise levels are densities (per Hz):
    # white noise per sample scales with sqrt(fs), so the spectrum does not depend on the sampling rate.
    density = math.sqrt(fs / SAMPLING_RATES[0])
    b, a = signal.iirpeak(machine.resonance_hz, Q=1 / (2 * machine.damping), fs=fs)
    forcing = rng.normal(0.0, density, n)
    x += 0.06 * load**1.5 * signal.lfilter(b, a, forcing) / math.sqrt(machine.damping / 0.05)
    if faulty and machine.fault is not None:
        x += _strikes(machine, fr, rng, n, fs) * machine.severity * 0.35
    x += rng.normal(0.0, machine.noise * density, n)  # sensor noise
    return (machine.gain * x).astype(np.float32)


def _strikes(machine: Machine, fr: float, rng: np.random.Generator, n: int, fs: int) -> np.ndarray:
    """Defect strikes at the geometry's frequency, each ringing the resonance."""
    if machine.fault is None:
        raise FlsuiteError(f"_strikes: machine {machine.machine_id} has no fault to strike with (a generator bug).")
    freqs = machine.bearing.frequencies(fr)
    f_defect = freqs[FAULT_FREQUENCY[machine.fault]] * (2 if machine.fault == "ball" else 1)
    period = 1.0 / f_defect
    count = int(n / fs / period) + 2
    # Rolling elements slip: each interval jitters by ~1% around the nominal period.
    times = rng.uniform(0, period) + np.cumsum(period * (1 + rng.normal(0.0, 0.01, count)))
    times = times[times < n / fs]
    amps = rng.uniform(0.8, 1.2, len(times))
    if machine.fault == "inner_race":  # the defect turns in and out of the load zone
        amps *= 0.5 * (1 + np.cos(2 * np.pi * fr * times))
    elif machine.fault == "ball":  # the ball's defect turns with the cage
        amps *= 0.5 * (1 + np.cos(2 * np.pi * freqs["ftf"] * times))
    train = np.zeros(n)
    np.add.at(train, np.minimum((times * fs).astype(int), n - 1), amps)
    return signal.fftconvolve(train, _ringing(machine, fs))[:n]


def write_fleet(
    out: Path,
    n_devices: int = 200,
    seed: int = 0,
    file_format: str = "npy",
    recordings_scale: float = 1.0,
) -> list[Path]:
    """Write a fleet of device folders in the adapter's layout.

    Each device folder holds ``device.json`` (machine id, sampling rate, sensor),
    ``recordings/rec-NNNN.{npy,csv,parquet}`` and ``labels.csv`` naming the labelled
    evaluation recordings. Machine ground truth (bearing, fault kind, defect
    frequency) goes to ``fleet.json`` at the top level, for checking, never read by
    training.
    """
    if file_format not in ("npy", "csv", "parquet"):
        raise ValueError(f"file_format must be npy, csv or parquet, got {file_format!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machines = make_fleet(n_devices, seed, recordings_scale=recordings_scale)
    folders = []
    truth = []
    for index, m in enumerate(machines):
        rng = np.random.default_rng([seed, index, 17])
        folder = out / m.machine_id
        rec_dir = folder / "recordings"
        rec_dir.mkdir(parents=True, exist_ok=True)
        plan = (
            [(None, False)] * m.n_unlabelled
            + [("normal", False)] * m.n_eval_normal
            + [("fault", True)] * m.n_eval_fault
        )
        labels = []
        for r, (label, faulty) in enumerate(plan):
            # Service history covers the loads the machine has run at so far; the
            # evaluation recordings come later, at any load.
            load = rng.uniform(*m.history_load) if label is None else rng.uniform(*EVALUATION_LOAD)
            x = simulate(m, rng, faulty, load)
            name = f"rec-{r:04d}.{file_format}"
            _write_recording(rec_dir / name, x, file_format)
            if label is not None:
                labels.append({"file": f"recordings/{name}", "label": label})
        write_text_atomic(
            folder / "device.json",
            json.dumps(
                {
                    "machine_id": m.machine_id,
                    "sampling_rate_hz": m.sampling_rate_hz,
                    "sensor": "accelerometer",
                    "units": "g",
                    "location": "drive-end bearing housing, radial",
                },
                indent=2,
            )
            + "\n",
        )
        write_table(pd.DataFrame(labels, columns=["file", "label"]), folder / "labels.csv")
        truth.append(
            {
                "machine_id": m.machine_id,
                "bearing": m.bearing.name,
                "shaft_hz": round(m.shaft_hz, 4),
                "fault": m.fault,
                "severity": round(m.severity, 4),
                "defect_hz": None if m.defect_hz() is None else round(float(m.defect_hz() or 0.0), 4),
                "resonance_hz": round(m.resonance_hz, 1),
            }
        )
        folders.append(folder)
    write_text_atomic(out / "fleet.json", json.dumps({"seed": seed, "devices": truth}, indent=1) + "\n")
    return folders


def _write_recording(path: Path, x: np.ndarray, file_format: str) -> None:
    if file_format == "npy":
        with atomic_write(path, "wb") as fh:
            np.save(fh, x)
    else:
        write_table(pd.DataFrame({"accel": x}), path)
