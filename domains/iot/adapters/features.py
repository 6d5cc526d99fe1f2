"""Windowing and spectral features of vibration recordings (numpy/scipy).

Every window becomes one fixed-length feature vector on a fixed frequency grid, so
devices sampling at different rates produce comparable features:

* **Spectrum**: energy in log-spaced bands of the Hann-windowed FFT (shaft
  harmonics at the low end, the housing resonance at the high end), as log10.
* **Envelope spectrum**: the classic bearing diagnostic. The recording is
  band-passed around the structural resonances, its envelope taken with the
  Hilbert transform, and the envelope's spectrum computed per window. Defect
  strikes that ring the resonance show as peaks at the defect frequency and its
  harmonics. Amplitudes are divided by the mean envelope (a modulation depth), so
  sensor gain cancels, then taken as log10.
* **Condition indicators**: log10 RMS between ``min_hz`` and ``max_hz``, kurtosis
  and crest factor of the band-passed signal (impulsive faults raise both).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

_EPS = 1e-12


@dataclass(frozen=True)
class SpectralFeatures:
    """Feature extraction settings (identical at every device of a federation).

    Parameters
    ----------
    window_s : float
        Window length in seconds (frequency resolution is ``1 / window_s``).
    overlap : float
        Share of a window that overlaps the next, in [0, 1).
    bands : int
        Log-spaced spectrum bands between ``min_hz`` and ``max_hz``.
    min_hz, max_hz : float
        Range of the spectrum bands; ``max_hz`` must be below the Nyquist frequency.
    envelope_low_hz, envelope_high_hz : float
        Pass band demodulated for the envelope spectrum (around the resonances).
    envelope_max_hz : float
        Highest envelope frequency kept (defect frequencies and a few harmonics).
    envelope_bins : int
        Linear bins between 0 and ``envelope_max_hz``.
    """

    window_s: float = 0.25
    overlap: float = 0.5
    bands: int = 48
    min_hz: float = 10.0
    max_hz: float = 5000.0
    envelope_low_hz: float = 2000.0
    envelope_high_hz: float = 5000.0
    envelope_max_hz: float = 500.0
    envelope_bins: int = 100

    @property
    def size(self) -> int:
        """Length of one feature vector."""
        return self.bands + self.envelope_bins + 3

    def names(self) -> list[str]:
        """One name per feature, in order."""
        edges = self.band_edges()
        env = np.linspace(0.0, self.envelope_max_hz, self.envelope_bins + 1)
        return (
            [f"spec_{lo:.0f}_{hi:.0f}hz" for lo, hi in itertools.pairwise(edges)]
            + [f"env_{lo:.0f}_{hi:.0f}hz" for lo, hi in itertools.pairwise(env)]
            + ["log_rms", "kurtosis_bp", "crest_bp"]
        )

    def band_edges(self) -> np.ndarray:
        """Edges (Hz) of the log-spaced spectrum bands."""
        return np.geomspace(self.min_hz, self.max_hz, self.bands + 1)

    def min_sampling_rate(self) -> float:
        """Lowest sampling rate (Hz) whose Nyquist frequency covers every band used."""
        return 2.0 * max(self.max_hz, self.envelope_high_hz) * 1.05

    def window_samples(self, fs: float) -> int:
        """Samples per window at sampling rate ``fs``."""
        return round(self.window_s * fs)

    def hop_samples(self, fs: float) -> int:
        """Samples between the starts of consecutive windows."""
        return max(1, round(self.window_samples(fs) * (1.0 - self.overlap)))

    def count(self, n_samples: int, fs: float) -> int:
        """Windows a recording of ``n_samples`` yields (0 if shorter than a window)."""
        w = self.window_samples(fs)
        return 0 if n_samples < w else 1 + (n_samples - w) // self.hop_samples(fs)

    def extract(self, x: np.ndarray, fs: float) -> np.ndarray:
        """Feature vectors of every window of recording ``x`` sampled at ``fs`` Hz.

        Returns
        -------
        numpy.ndarray
            ``float32`` array of shape ``(windows, size)``.
        """
        x = np.asarray(x, dtype=np.float64)
        w, hop = self.window_samples(fs), self.hop_samples(fs)
        if self.count(len(x), fs) == 0:
            raise ValueError(f"recording of {len(x)} samples is shorter than one window ({w} samples)")
        frames = sliding_window_view(x, w)[::hop]
        band = signal.sosfiltfilt(_bandpass(self.envelope_low_hz, self.envelope_high_hz, float(fs)), x)
        env_full = np.abs(signal.hilbert(band))
        band_frames = sliding_window_view(band, w)[::hop]
        env_frames = sliding_window_view(env_full, w)[::hop]

        hann = np.hanning(w)
        freqs = np.fft.rfftfreq(w, 1.0 / fs)
        # Plain spectrum: band energies by interpolating the cumulative power.
        power = np.abs(np.fft.rfft((frames - frames.mean(axis=1, keepdims=True)) * hann, axis=1)) ** 2
        spec = _band_sums(power, freqs, self.band_edges())
        spec_feat = np.log10(spec / (w * hann.sum()) + _EPS)
        # Envelope spectrum as modulation depth (amplitude over mean envelope).
        env_mean = env_frames.mean(axis=1, keepdims=True)
        env_power = np.abs(np.fft.rfft((env_frames - env_mean) * hann, axis=1)) ** 2
        env_edges = np.linspace(0.0, self.envelope_max_hz, self.envelope_bins + 1)
        env_amp = np.sqrt(_band_sums(env_power, freqs, env_edges)) * 2.0 / hann.sum()
        env_feat = np.log10(env_amp / (env_mean + _EPS) + 1e-4)
        # Condition indicators. RMS over the spectrum bands only (Parseval), so that noise
        # above max_hz, which a higher sampling rate would add, does not count.
        mean_square = 2.0 * spec.sum(axis=1) / (w * np.square(hann).sum())
        band_rms = np.sqrt(np.mean(np.square(band_frames), axis=1)) + _EPS
        kurt = _kurtosis(band_frames)
        crest = env_frames.max(axis=1) / band_rms  # the envelope peak: no sampling-rate bias
        indicators = np.stack([0.5 * np.log10(mean_square + _EPS), kurt, crest], axis=1)
        return np.concatenate([spec_feat, env_feat, indicators], axis=1).astype(np.float32)


def _bandpass(low_hz: float, high_hz: float, fs: float) -> np.ndarray:
    """4th-order Butterworth band-pass as second-order sections (a copy the caller may change)."""
    return _bandpass_design(low_hz, high_hz, fs).copy()


@lru_cache(maxsize=64)
def _bandpass_design(low_hz: float, high_hz: float, fs: float) -> np.ndarray:
    # Designed once per sampling rate: designing costs more than filtering a recording, and a fleet has few rates.
    return signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")


def _kurtosis(frames: np.ndarray) -> np.ndarray:
    """Excess kurtosis of each row (Fisher, biased: ``scipy.stats.kurtosis``'s defaults), NaN for a constant row.

    Written out because scipy's axis and NaN-policy handling costs more than the sums on short windows.
    """
    mean = frames.mean(axis=1, keepdims=True)
    sq = np.square(frames - mean)
    m2 = sq.mean(axis=1)
    m4 = np.square(sq).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = m4 / np.square(m2) - 3.0
    # scipy's test for a constant row: variance within float resolution of the mean.
    return np.where(m2 <= np.square(np.finfo(np.float64).resolution * mean[:, 0]), np.nan, out)


def _band_sums(power: np.ndarray, freqs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum of ``power`` (rows of FFT bins at ``freqs``) between consecutive ``edges``.

    Uses linear interpolation of the cumulative sum, so bands narrower than one FFT
    bin get their share of it instead of nothing.
    """
    df = freqs[1] - freqs[0]
    cum = np.concatenate([np.zeros((len(power), 1)), np.cumsum(power, axis=1)], axis=1)
    grid = np.concatenate([[freqs[0] - df / 2], freqs + df / 2])  # bin boundaries
    at = np.stack([np.interp(edges, grid, row) for row in cum])
    return np.diff(at, axis=1)


def envelope_spectrum(x: np.ndarray, fs: float, low_hz: float, high_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Envelope spectrum of a whole recording (frequencies in Hz, amplitudes), for diagnosis.

    Band-pass ``[low_hz, high_hz]``, Hilbert envelope, mean removed, Hann-windowed FFT.
    """
    sos = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")
    env = np.abs(signal.hilbert(signal.sosfiltfilt(sos, np.asarray(x, dtype=np.float64))))
    hann = np.hanning(len(env))
    amp = np.abs(np.fft.rfft((env - env.mean()) * hann)) * 2.0 / hann.sum()
    return np.fft.rfftfreq(len(env), 1.0 / fs), amp
