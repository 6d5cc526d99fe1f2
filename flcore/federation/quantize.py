"""Lossy coding of one flat float vector: block-wise affine int8 quantisation and float16."""

from __future__ import annotations

import numpy as np

DEFAULT_BLOCK = 256

_FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_block(block: object) -> int:
    """Return ``block`` as an int if it is a positive integer int8 block size, else raise a ValueError."""
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise ValueError(
            f"The int8 block size must be a positive integer (values sharing one scale), got {block!r}. "
            f"Use the default {DEFAULT_BLOCK}."
        )
    return int(block)


def _check_vector(flat: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(flat)
    if x.ndim != 1:
        raise ValueError(f"{what} expects a 1-D array, got shape {x.shape}. Flatten it first (x.ravel()).")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} expects floating-point values, got dtype {x.dtype}. Send such arrays unchanged.")
    return x


def check_finite(x: np.ndarray, what: str) -> None:
    """Raise a ValueError, counting the NaN and Inf values and naming ``what``, unless ``x`` is all finite."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - np.count_nonzero(finite))
        first = int(np.argmin(finite))
        raise ValueError(
            f"{what} expected finite values, but found {bad} non-finite (NaN or Inf) of {x.size} "
            f"(first at flat index {first}: {x[first]}). Refusing to compress garbage: the local training "
            "probably diverged; lower the learning rate or clip gradients."
        )


def quantize_int8(flat: np.ndarray, block: int = DEFAULT_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block-wise affine 8-bit quantisation of a 1-D float array.

    Each run of ``block`` consecutive values (the last one may be shorter) gets its
    own offset ``lo = min`` and step ``scale = (max - min) / 255``, and each value
    becomes ``q = round((x - lo) / scale)`` in 0..255. A constant block has
    ``scale = 0`` and ``q = 0``.

    Parameters
    ----------
    flat : numpy.ndarray
        1-D floating-point array of ``n`` finite values (``n`` may be 0).
    block : int, default 256
        Values per block. Smaller blocks mean smaller errors and more overhead
        (8 bytes per block).

    Returns
    -------
    q : numpy.ndarray
        ``uint8``, length ``n``.
    lo : numpy.ndarray
        ``float32``, one offset per block (``ceil(n / block)`` of them).
    scale : numpy.ndarray
        ``float32``, one step per block.

    Raises
    ------
    ValueError
        If ``flat`` is not 1-D floating point, holds NaN or Inf (the message gives
        their count), exceeds the float32 range, or ``block`` is not positive.

    Notes
    -----
    Round-trip error bound: for a value ``x`` in block ``b``,
    ``|x - dequantize_int8(...)| <= scale[b] / 2`` plus float32 rounding of the
    result (at most ``2**-24 * max(|lo[b]|, |max_b|)``). The stored ``scale`` is
    rounded *up* to float32, so ``q`` never needs clipping beyond that rounding.
    Vectorised over blocks (the last block is padded with its last value); 10
    million values take well under a second.
    """
    x = _check_vector(flat, "quantize_int8")
    block = check_block(block)
    n = x.size
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.float32), np.zeros(0, np.float32)
    check_finite(x, "quantize_int8")
    nblocks = -(-n // block)
    pad = nblocks * block - n
    padded = np.concatenate([x, np.full(pad, x[-1], dtype=x.dtype)]) if pad else x
    m = padded.reshape(nblocks, block)
    lo_native, hi_native = m.min(axis=1), m.max(axis=1)
    if x.dtype.itemsize > 4 and max(-float(lo_native.min()), float(hi_native.max())) > _FLOAT32_MAX:
        raise ValueError(
            "quantize_int8 expected values within the float32 range (|x| <= 3.4e38), found "
            f"{max(-float(lo_native.min()), float(hi_native.max())):.3g}. Use codec 'none' for such arrays."
        )
    lo = lo_native.astype(np.float32)
    lo64 = lo.astype(np.float64)
    step = np.maximum(hi_native.astype(np.float64) - lo64, 0.0) / 255.0
    scale = step.astype(np.float32)
    low = scale.astype(np.float64) < step  # rounded down: bump to the next float32 so q stays in 0..255
    scale[low] = np.nextafter(scale[low], np.float32(np.inf))
    inv = np.zeros(nblocks, np.float64)
    np.divide(1.0, scale, out=inv, where=scale > 0)
    work = m.astype(np.float64)  # float64: (x - lo) cannot overflow and rounds exactly to the nearest step
    work -= lo64[:, None]
    work *= inv[:, None]
    np.rint(work, out=work)
    np.clip(work, 0.0, 255.0, out=work)
    q = work.astype(np.uint8).ravel()[:n]
    return q, lo, scale


def dequantize_int8(q: np.ndarray, lo: np.ndarray, scale: np.ndarray, n: int, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Inverse of :func:`quantize_int8`: ``lo[b] + q * scale[b]`` as float32.

    Parameters
    ----------
    q, lo, scale : numpy.ndarray
        As returned by :func:`quantize_int8`.
    n : int
        Number of values.
    block : int, default 256
        The block size used to quantise.

    Returns
    -------
    numpy.ndarray
        ``float32``, length ``n``; within ``scale[b] / 2`` (+ float32 rounding) of
        the original values (see :func:`quantize_int8`).

    Raises
    ------
    ValueError
        If the lengths or dtypes do not fit ``n`` and ``block``.
    """
    block = check_block(block)
    q, lo, scale = np.asarray(q), np.asarray(lo), np.asarray(scale)
    nblocks = -(-int(n) // block)
    if q.ndim != 1 or q.dtype != np.uint8 or q.size != n:
        raise ValueError(
            f"dequantize_int8 expected q as 1-D uint8 of length {n}, found {q.dtype} of shape {q.shape}. "
            "Pass the arrays quantize_int8 returned, unchanged."
        )
    if lo.shape != (nblocks,) or scale.shape != (nblocks,):
        raise ValueError(
            f"dequantize_int8 expected {nblocks} block offsets and scales ({n} values in blocks of {block}), "
            f"found lo {lo.shape} and scale {scale.shape}. Use the block size the values were quantised with."
        )
    if n == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(nblocks * block, np.uint8)
    padded[:n] = q
    out = padded.reshape(nblocks, block).astype(np.float64)
    out *= scale.astype(np.float64)[:, None]
    out += lo.astype(np.float64)[:, None]
    return out.ravel()[:n].astype(np.float32)


def to_float16(flat: np.ndarray) -> np.ndarray:
    """Cast to float16, refusing values that float16 cannot hold (|x| > 65504) or NaN/Inf.

    Raises
    ------
    ValueError
        With the count of offending values and the largest magnitude found.
    """
    x = np.asarray(flat)
    check_finite(x, "The float16 codec")
    if x.size:
        big = np.abs(x) > _FLOAT16_MAX
        if big.any():
            raise ValueError(
                f"The float16 codec expected values within ±{_FLOAT16_MAX:.0f}, but {int(big.sum())} of {x.size} "
                f"are larger (largest |x| = {float(np.abs(x).max()):.6g}); they would become Inf. "
                "Use codec 'int8' (each block has its own scale) or 'none'."
            )
    return x.astype(np.float16)
