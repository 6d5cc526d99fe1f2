"""Signal quality of one recording: a stuck sensor (flat-lined) and a saturated one (clipped, noise or not)."""

from __future__ import annotations

import numpy as np


def longest_constant_run(x: np.ndarray) -> int:
    """Length of the longest run of identical consecutive values."""
    if len(x) < 2:
        return len(x)
    change = np.flatnonzero(np.diff(x) != 0)
    edges = np.concatenate([[-1], change, [len(x) - 1]])
    return int(np.diff(edges).max())


# -- clipping ----------------------------------------------------------------------------------
#
# A saturated sensor holds every sample beyond its range at the range's limit. Exactly at the
# limit is easy to see; with noise added after the limit (the converter's own noise) the held
# samples spread into a narrow band, and "exactly at the peak" misses them. Besides the exact
# test, two scale-free signatures are looked for on each side of the median (vectorised: one
# sort, a few medians):
#
# 1. A cut-off tail (broadband and impulsive signals, where clipping destroys the peaks that the
#    kurtosis, crest-factor and envelope features depend on). Halving the share of samples above
#    a level moves the level up by a width that follows a smooth trend along a natural tail:
#    about constant for an exponential tail, slowly narrowing for a Gaussian one, narrowing by a
#    steady factor towards a smooth peak (4x for a sine). Clipping cuts the tail off: the widths
#    collapse. At each level from 4% of the samples up to clip_share / 2, the trend of the four
#    widths below it is extrapolated (never as growing), and the recording is clipped when the
#    next three widths together are _TAIL_COLLAPSE times narrower than predicted.
# 2. A quiet plateau (smooth signals clipped hard). Samples held at the limit lose the signal's
#    own sample-to-sample noise: where the smoothed signal sits in its top 1-32%, the noise,
#    measured robustly (MAD) from second differences, which are blind to slow waveforms, is
#    _QUIET_PLATEAU times lower than over the whole recording. Recordings whose second
#    differences are not noise-like (smooth and noise-free) are not judged this way.
#
# Measured (tests/test_vibration_robustness.py, and 200 seeds each): caught are Gaussian or
# impulsive signals clipped on 1-2% of samples with noise up to 2% of the clip level, and smooth
# signals clipped hard with noise up to 2% of it. Not caught: noise near 5% of the clip level
# (it spreads the held samples over +-10% of it, as wide as the natural spread of impact
# heights), and a smooth waveform clipped on a few percent of samples (clipping 10% of a sine's
# samples shaves 1.2% off its peak: sample for sample an unclipped, smaller sine). Nothing of the
# suite's synthetic fleet (750 recordings), Gaussian noise, sines with noise or bursts of impacts
# (1,500) reaches 0.9x of either threshold.

_TAIL_COLLAPSE = 6.0
_QUIET_PLATEAU = 3.0
_TREND_LEVELS = 4
_AHEAD_LEVELS = 3
_TAIL_MAX_SHARE = 0.04
_SMOOTH = 8
_PLATEAU_SHARES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
_MIN_PLATEAU = 100


def clipping(x: np.ndarray, share: float) -> str | None:
    """Why a recording looks clipped (a saturated sensor), or None.

    Parameters
    ----------
    x : numpy.ndarray
        The samples (1-D, finite, not flat-lined).
    share : float
        Least share of samples held at the saturation level.

    Returns
    -------
    str or None
        A value-free description of the evidence (sample counts and levels in g), or
        None when the recording does not look clipped.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    magnitude = np.abs(x)
    peak = float(magnitude.max())
    at_peak = int((magnitude >= peak * (1 - 1e-6)).sum())
    if at_peak >= max(3, share * n):
        return f"{at_peak} samples ({at_peak / n:.1%}) sit at the peak magnitude {peak:g}"
    ordered = np.sort(x)
    centre = float(ordered[n // 2])
    for name, sign, desc in (("upper", 1.0, ordered[::-1] - centre), ("lower", -1.0, centre - ordered)):
        cut = _cut_tail(desc, n, share)
        if cut is not None and cut[0] >= _TAIL_COLLAPSE:
            _, top_share, level, spread, predicted = cut
            return (
                f"its {name} tail is cut short beyond {centre + sign * level:.3g}: the top {top_share:.1%} of samples "
                f"span {spread:.3g} where the trend of the rest of the tail predicts about {predicted:.3g} (a "
                "saturated sensor with noise on top)"
            )
    plateau = _quiet_plateau(x, share)
    if plateau is not None and plateau[0] >= _QUIET_PLATEAU:
        ratio, top_share, name, level = plateau
        return (
            f"where the signal sits in its {name} {top_share:.0%} (beyond {level:.3g}) it is {ratio:.1f}x quieter "
            "from sample to sample than the rest of the recording: a plateau held at the sensor's limit"
        )
    return None


def _cut_tail(desc: np.ndarray, n: int, share: float) -> tuple[float, float, float, float, float] | None:
    """The strongest collapse of one side's tail: (ratio, share above, level, width found, width predicted).

    ``desc`` holds one side's distances from the median, largest first. None when the
    tail is too short to judge, or quantised (repeated values make the widths artefacts).
    """
    levels = 0.5 ** np.arange(1, 64)
    ranks = np.round(levels * n).astype(np.int64)
    keep = ranks >= 8
    levels, ranks = levels[keep], ranks[keep]
    if len(ranks) < _TREND_LEVELS + 3:
        return None
    quantum = max(1e-9 * abs(float(desc[0])), float(np.finfo(np.float64).tiny))
    head = int(ranks[3])
    if np.unique(np.round(desc[:head] / quantum)).size * 2 < head:
        return None
    at = desc[ranks - 1]  # at[j]: the level with a share levels[j] of the samples at or above it
    widths = np.maximum(np.diff(at), quantum)  # widths[j]: from levels[j] up to levels[j + 1]
    best: tuple[float, float, float, float, float] | None = None
    for j in range(_TREND_LEVELS, len(widths) - 1):
        if not share / 2 <= levels[j] <= _TAIL_MAX_SHARE:
            continue
        before = widths[j - _TREND_LEVELS : j]
        trend = min(1.0, float(np.exp(np.mean(np.log(before[1:] / before[:-1])))))
        ahead = widths[j : j + _AHEAD_LEVELS]
        predicted = float(np.median(before)) * float(np.sum(trend ** np.arange(2, len(ahead) + 2)))
        found = float(ahead.sum())
        if best is None or predicted / found > best[0]:
            best = (predicted / found, float(levels[j]), float(at[j]), found, predicted)
    return best


def _quiet_plateau(x: np.ndarray, share: float) -> tuple[float, float, str, float] | None:
    """The quietest top band of a side: (noise ratio, share of the band, side, level); None if not judged."""
    d2 = np.diff(x, 2)
    noise1 = _mad(np.diff(x)) / np.sqrt(2)
    noise2 = _mad(d2) / np.sqrt(6)
    if noise2 == 0 or noise2 < 0.5 * noise1:
        return None  # second differences measure the waveform here, not noise
    total = np.concatenate(([0.0], np.cumsum(x)))
    smooth = (total[_SMOOTH:] - total[:-_SMOOTH]) / _SMOOTH  # smooth[i]: mean of x[i : i + _SMOOTH]
    centred = np.full(len(x), -np.inf)
    centred[_SMOOTH // 2 : _SMOOTH // 2 + len(smooth)] = smooth
    ordered = np.sort(smooth)
    centre = float(ordered[len(smooth) // 2])
    best: tuple[float, float, str, float] | None = None
    for name, sign in (("upper", 1.0), ("lower", -1.0)):
        side = sign * (centred[1:-1] - centre)  # aligned with d2, centred on x[1:-1]
        side[~np.isfinite(side)] = -np.inf  # the ends, where no smoothed value exists
        desc = ordered[::-1] - centre if sign > 0 else centre - ordered
        for top_share in _PLATEAU_SHARES:
            k = int(top_share * len(smooth))
            if k < 8 or top_share < share / 2:
                continue
            band = side >= desc[k - 1]
            if band.sum() < _MIN_PLATEAU:
                continue
            ratio = noise2 / max(_mad(d2[band]) / np.sqrt(6), noise2 * 1e-6)
            if best is None or ratio > best[0]:
                best = (ratio, top_share, name, centre + sign * float(desc[k - 1]))
    return best


def _mad(values: np.ndarray) -> float:
    """Median absolute deviation, scaled to a Gaussian's standard deviation."""
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else 0.0
