"""Compression of model broadcasts and updates (float16, block-wise int8), selectable by a codec name.

Two halves work together, as Flower's differential-privacy wrappers do:

* :class:`CompressedUpdates` wraps the ServerApp's strategy. It packs the global
  model it broadcasts and asks every site, through the train config
  (``"update-codec"``), to send back its *update* compressed.
* :func:`compression_mod` is the matching ClientApp mod. It unpacks the broadcast
  into the usual ``"arrays"`` record before the ClientApp runs, and replaces the
  trained model in the reply by the packed difference to the model it started from.

The server rebuilds each site's model as *exact global model + dequantised update*,
so quantisation error never accumulates in the global model across rounds.

Packing (:func:`encode` / :func:`decode`) flattens all floating-point arrays of an
ArrayRecord, in key order, into at most four coded arrays, however many tensors the
model has, plus the non-floating arrays (integer buffers) unchanged and a small
ConfigRecord with the layout.

Codecs
------
``"none"``
    The float values as they are (exact, no compression).
``"float16"``
    Half precision: half the bytes, relative error at most 2^-11 per value.
``"int8"``
    Block-wise affine 8-bit quantisation (:func:`quantize_int8`) of every matrix
    (2-D or more), in blocks that never straddle two tensors: about a quarter of
    the bytes; per value the error is at most half its block's step. Vectors
    (biases, normalisation statistics) are few bytes and sensitive: they travel in
    float16.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from flcore import keys
from flcore.federation.monitor import site_of
from flcore.federation.strategies.screen import RejectFn
from flcore.federation.strategies.wrapper import StrategyWrapper

CODECS = ("none", "float16", "int8")
DEFAULT_BLOCK = 256

# Record names inside a Message's RecordDict.
PACKED = "arrays-packed"  # ArrayRecord: the coded vector (+ non-floating arrays under RAW_PREFIX)
LAYOUT = "packing"  # ConfigRecord: how to rebuild the original ArrayRecord

# Keys in the train message's config record (set by CompressedUpdates, read by compression_mod).
UPDATE_CODEC = "update-codec"
UPDATE_BLOCK = "update-block"

# Array names inside the packed ArrayRecord.
Q_ARRAY, LO_ARRAY, SCALE_ARRAY, VALUES_ARRAY, SIDE_ARRAY = "q", "lo", "scale", "values", "side"
RAW_PREFIX = "raw/"  # non-floating arrays travel as RAW_PREFIX + their own name

#: What decoding damaged or forged packed data can raise: ValueError from :func:`decode`'s own checks,
#: from NumPy's reading of an array's bytes and from reshaping; TypeError from an Array of another
#: serialisation type or a layout list of the wrong element type; KeyError and IndexError from names and
#: shapes that do not match; EOFError from NumPy reading truncated bytes.
DECODE_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError, EOFError)

# Keys in the layout ConfigRecord.
_CODEC, _BLOCK, _DELTA, _COUNT = "codec", "block", "delta", "count"
_NAMES, _DTYPES, _NDIMS, _SHAPES = "names", "dtypes", "ndims", "shapes"
_RECORD = "record"  # name of the ArrayRecord the packed one replaced (set by the mod and the wrapper)

_FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def check_codec(codec: object) -> str:
    """Return ``codec`` if it is a known codec name, else raise a ValueError listing the valid ones."""
    if codec not in CODECS:
        raise ValueError(
            f"Unknown compression codec {codec!r}. Valid codecs: {', '.join(CODECS)} "
            "('none' sends the model as is, 'float16' halves it, 'int8' quarters it)."
        )
    return str(codec)


def _check_block(block: object) -> int:
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


def _check_finite(x: np.ndarray, what: str) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - np.count_nonzero(finite))
        first = int(np.argmin(finite))
        raise ValueError(
            f"{what} expected finite values, but found {bad} non-finite (NaN or Inf) of {x.size} "
            f"(first at flat index {first}: {x[first]}). Refusing to compress garbage: the local training "
            "probably diverged; lower the learning rate or clip gradients."
        )


# --------------------------------------------------------------------------------------
# Codecs on one flat vector
# --------------------------------------------------------------------------------------


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
    block = _check_block(block)
    n = x.size
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.float32), np.zeros(0, np.float32)
    _check_finite(x, "quantize_int8")
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
    block = _check_block(block)
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
    _check_finite(x, "The float16 codec")
    if x.size:
        big = np.abs(x) > _FLOAT16_MAX
        if big.any():
            raise ValueError(
                f"The float16 codec expected values within ±{_FLOAT16_MAX:.0f}, but {int(big.sum())} of {x.size} "
                f"are larger (largest |x| = {float(np.abs(x).max()):.6g}); they would become Inf. "
                "Use codec 'int8' (each block has its own scale) or 'none'."
            )
    return x.astype(np.float16)


# --------------------------------------------------------------------------------------
# Packing a whole ArrayRecord
# --------------------------------------------------------------------------------------


def _dtype(name: object) -> np.dtype:
    try:
        return np.dtype(name)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"{name!r} is not a NumPy dtype name (expected e.g. 'float32', 'int64').") from None


def _is_float(dtype: object) -> bool:
    return bool(np.issubdtype(_dtype(dtype), np.floating))


def _check_reference(reference: ArrayRecord, float_shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """Raise a ValueError naming the first key where ``reference`` does not match ``float_shapes``."""
    for name, shape in float_shapes.items():
        if name not in reference:
            raise ValueError(
                f"{what}: the reference model has no array '{name}', which the update holds "
                f"(reference keys: {list(reference.keys())[:8]}). Use the model the update was computed from."
            )
        ref = reference[name]
        if not _is_float(ref.dtype) or tuple(ref.shape) != shape:
            raise ValueError(
                f"{what}: array '{name}' is {ref.dtype}{tuple(ref.shape)} in the reference model but a floating "
                f"array of shape {shape} in the update. Use the model the update was computed from."
            )
    for name, ref in reference.items():
        if name not in float_shapes and _is_float(ref.dtype):
            raise ValueError(
                f"{what}: the reference model has a floating array '{name}' that the update lacks. "
                "Use the model the update was computed from."
            )


def encode(
    arrays: ArrayRecord, codec: str, reference: ArrayRecord | None = None, block: int = DEFAULT_BLOCK
) -> tuple[ArrayRecord, ConfigRecord]:
    """Pack an ArrayRecord into a few coded arrays plus its layout.

    Parameters
    ----------
    arrays : ArrayRecord
        The model (or any arrays). Floating-point arrays are flattened and
        concatenated in key order; other arrays (integer buffers) are kept
        unchanged under ``RAW_PREFIX + name``.
    codec : str
        One of :data:`CODECS`.
    reference : ArrayRecord, optional
        When given, the vector is ``arrays - reference`` (an update): must hold the
        same floating keys with the same shapes.
    block : int, default 256
        Block size of the int8 codec.

    Returns
    -------
    packed : ArrayRecord
        ``q`` (uint8), ``lo``, ``scale`` (float32) for the int8-coded matrices and
        ``side`` (float16, or float32 beyond its range) for vectors; ``values`` (float16)
        for float16; ``values`` (float32, or float64 if any array is float64) for
        none; plus the raw non-floating arrays.
    layout : ConfigRecord
        Codec, block, delta flag, value count, and the names, dtypes, ndims and
        flattened shapes of all arrays, for :func:`decode`.

    Raises
    ------
    ValueError
        Unknown codec, reference mismatch (naming the key), NaN/Inf values for a
        lossy codec, or values beyond float16 range for the float16 codec.
    """
    check_codec(codec)
    block = _check_block(block)
    names: list[str] = []
    dtypes: list[str] = []
    ndims: list[int] = []
    shapes: list[int] = []
    float_arrays: dict[str, np.ndarray] = {}
    raw: dict[str, Array] = {}
    for name, array in arrays.items():
        names.append(name)
        dtypes.append(str(_dtype(array.dtype)))
        ndims.append(len(array.shape))
        shapes.extend(int(s) for s in array.shape)
        if _is_float(array.dtype):
            float_arrays[name] = array.numpy()
        else:
            raw[RAW_PREFIX + name] = array
    if reference is not None:
        _check_reference(reference, {k: tuple(v.shape) for k, v in float_arrays.items()}, "encode")
    vec_dtype = np.result_type(np.float32, *[a.dtype for a in float_arrays.values()])
    parts = []
    for name, value in float_arrays.items():
        flat = value.ravel().astype(vec_dtype, copy=False)
        if reference is not None:
            flat = flat - reference[name].numpy().ravel().astype(vec_dtype, copy=False)
        parts.append(flat)
    count = sum(part.size for part in parts)

    packed = ArrayRecord()
    if codec == "int8":
        # Matrices (and larger) in 8 bits, in blocks that never straddle two tensors, so a
        # tensor's step follows its own range. Vectors (biases, normalisation statistics)
        # are few bytes and sensitive: they travel in float16 (float32 beyond its range).
        qs, los, scales, side = [], [], [], []
        for value, flat in zip(float_arrays.values(), parts, strict=True):
            if value.ndim >= 2:
                q, lo, scale = quantize_int8(flat, block)
                qs.append(q)
                los.append(lo)
                scales.append(scale)
            else:
                side.append(flat)
        packed[Q_ARRAY] = Array(np.concatenate(qs) if qs else np.zeros(0, np.uint8))
        packed[LO_ARRAY] = Array(np.concatenate(los) if los else np.zeros(0, np.float32))
        packed[SCALE_ARRAY] = Array(np.concatenate(scales) if scales else np.zeros(0, np.float32))
        side_vector = np.concatenate(side) if side else np.zeros(0, np.float32)
        _check_finite(side_vector, "encode")
        try:
            packed[SIDE_ARRAY] = Array(to_float16(side_vector))
        except ValueError:
            packed[SIDE_ARRAY] = Array(side_vector.astype(np.float32))
    else:  # one vector for the whole model (int8 above codes per tensor and needs none)
        vector = np.concatenate(parts) if parts else np.zeros(0, vec_dtype)
        packed[VALUES_ARRAY] = Array(to_float16(vector) if codec == "float16" else vector)
    for name, array in raw.items():
        packed[name] = array
    layout = ConfigRecord(
        {
            _CODEC: codec,
            _BLOCK: block,
            _DELTA: reference is not None,
            _COUNT: int(count),
            _NAMES: names,
            _DTYPES: dtypes,
            _NDIMS: ndims,
            _SHAPES: shapes,
        }
    )
    return packed, layout


def _layout_field(layout: ConfigRecord, key: str, kind: type) -> Any:
    if key not in layout:
        raise ValueError(
            f"decode: the layout record has no '{key}' entry (found {sorted(layout.keys())}). "
            "Pass the ConfigRecord that encode returned together with the packed arrays."
        )
    value = layout[key]
    if kind is list:
        if not isinstance(value, list):
            raise ValueError(f"decode: layout '{key}' must be a list, found {type(value).__name__}.")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"decode: layout '{key}' must be an integer, found {value!r}.")
    elif not isinstance(value, kind):
        raise ValueError(f"decode: layout '{key}' must be {kind.__name__}, found {value!r}.")
    return value


def _packed_array(packed: ArrayRecord, name: str, dtype: str, size: int, codec: str) -> np.ndarray:
    if name not in packed:
        raise ValueError(
            f"decode: the packed record lacks array '{name}' that codec '{codec}' needs "
            f"(found {list(packed.keys())[:8]}). The packed arrays and the layout do not belong together."
        )
    value = packed[name].numpy()
    if value.ndim != 1 or str(value.dtype) != dtype or value.size != size:
        raise ValueError(
            f"decode: packed array '{name}' should be 1-D {dtype} of length {size}, found {value.dtype} of shape "
            f"{value.shape}. The packed arrays and the layout do not belong together (truncated or altered?)."
        )
    return value


def _dequantize_tensors(
    packed: ArrayRecord, dtypes: list[str], shapes: list[tuple[int, ...]], count: int, block: int
) -> np.ndarray:
    """The int8 codec's vector: per-tensor blocks for matrices, the side array for vectors."""
    floats = [(int(np.prod(s)), len(s)) for d, s in zip(dtypes, shapes, strict=True) if _is_float(d)]
    n_q = sum(n for n, nd in floats if nd >= 2)
    n_blocks = sum(-(-n // block) for n, nd in floats if nd >= 2)
    q = _packed_array(packed, Q_ARRAY, "uint8", n_q, "int8")
    lo = _packed_array(packed, LO_ARRAY, "float32", n_blocks, "int8")
    scale = _packed_array(packed, SCALE_ARRAY, "float32", n_blocks, "int8")
    stored = packed.get(SIDE_ARRAY)
    side_dtype = str(stored.dtype) if stored is not None and str(stored.dtype) in ("float16", "float32") else "float16"
    side = _packed_array(packed, SIDE_ARRAY, side_dtype, count - n_q, "int8").astype(np.float32)
    out, qi, bi, si = [], 0, 0, 0
    for n, nd in floats:
        if nd >= 2:
            nb = -(-n // block)
            out.append(dequantize_int8(q[qi : qi + n], lo[bi : bi + nb], scale[bi : bi + nb], n, block))
            qi, bi = qi + n, bi + nb
        else:
            out.append(side[si : si + n])
            si += n
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def decode(packed: ArrayRecord, layout: ConfigRecord, reference: ArrayRecord | None = None) -> ArrayRecord:
    """Rebuild the ArrayRecord that :func:`encode` packed: same keys, order, dtypes and shapes.

    Parameters
    ----------
    packed, layout : ArrayRecord, ConfigRecord
        As returned by :func:`encode`.
    reference : ArrayRecord, optional
        Required when the layout says the vector is an update (``delta``): it is
        added back. Ignored otherwise.

    Returns
    -------
    ArrayRecord
        The decoded arrays (lossy codecs within their error bounds).

    Raises
    ------
    ValueError
        If layout and packed arrays are inconsistent, or the reference is missing
        or does not match the layout (naming the first mismatching key).

    Notes
    -----
    Packed data from a site is untrusted: besides the checks above, damage that
    they do not anticipate surfaces as one of :data:`DECODE_ERRORS` (NumPy refusing
    a truncated array, a mistyped layout list), which callers catch.
    """
    codec = check_codec(_layout_field(layout, _CODEC, str))
    block = _check_block(_layout_field(layout, _BLOCK, int))
    delta = bool(_layout_field(layout, _DELTA, bool))
    count = int(_layout_field(layout, _COUNT, int))
    names: list[str] = _layout_field(layout, _NAMES, list)
    dtypes: list[str] = _layout_field(layout, _DTYPES, list)
    ndims: list[int] = _layout_field(layout, _NDIMS, list)
    shapes_flat: list[int] = _layout_field(layout, _SHAPES, list)
    if not len(names) == len(dtypes) == len(ndims) or sum(ndims) != len(shapes_flat):
        raise ValueError(
            f"decode: inconsistent layout: {len(names)} names, {len(dtypes)} dtypes, {len(ndims)} ndims "
            f"and {len(shapes_flat)} shape entries for sum(ndims)={sum(ndims)}. The layout was altered."
        )
    shapes: list[tuple[int, ...]] = []
    pos = 0
    for nd in ndims:
        shapes.append(tuple(int(s) for s in shapes_flat[pos : pos + nd]))
        pos += nd
    float_shapes = {n: s for n, d, s in zip(names, dtypes, shapes, strict=True) if _is_float(d)}
    expected = sum(int(np.prod(s)) for s in float_shapes.values())
    if expected != count:
        raise ValueError(
            f"decode: the layout's shapes hold {expected} floating values but its count says {count}. "
            "The layout was altered."
        )
    base: ArrayRecord | None = None  # the model an update (delta) is added to
    if delta:
        if reference is None:
            raise ValueError(
                "decode: these packed arrays are an update (delta) and need the reference model they were "
                "computed from. Pass reference=<that ArrayRecord>."
            )
        _check_reference(reference, float_shapes, "decode")
        base = reference

    if codec == "int8":
        vector = _dequantize_tensors(packed, dtypes, shapes, count, block)
    else:
        stored = packed.get(VALUES_ARRAY)
        dtype = "float16" if codec == "float16" or stored is None else str(stored.dtype)
        if not _is_float(dtype):
            raise ValueError(f"decode: packed array '{VALUES_ARRAY}' should be floating point, found {dtype}.")
        vector = _packed_array(packed, VALUES_ARRAY, dtype, count, codec)

    out = ArrayRecord()
    offset = 0
    for name, dtype, shape in zip(names, dtypes, shapes, strict=True):
        if name not in float_shapes:
            raw = packed.get(RAW_PREFIX + name)
            if raw is None or str(_dtype(raw.dtype)) != dtype or tuple(raw.shape) != shape:
                found = "nothing" if raw is None else f"{raw.dtype}{tuple(raw.shape)}"
                raise ValueError(
                    f"decode: non-floating array '{name}' ({dtype}{shape}) should travel as "
                    f"'{RAW_PREFIX}{name}', found {found}. The packed arrays and the layout do not belong together."
                )
            out[name] = raw
            continue
        size = int(np.prod(shape))
        piece = vector[offset : offset + size]
        offset += size
        if base is not None:
            # float64 sum of two float32 values is exact: one rounding, to the original dtype.
            piece = piece.astype(np.float64) + base[name].numpy().ravel().astype(np.float64)
        out[name] = Array(np.asarray(piece.reshape(shape).astype(dtype)))
    return out


# --------------------------------------------------------------------------------------
# Message helpers
# --------------------------------------------------------------------------------------


def _pack_content(content: RecordDict, record: str, packed: ArrayRecord, layout: ConfigRecord) -> RecordDict:
    """A new RecordDict: ``content`` with ``record`` replaced by the packed arrays and their layout."""
    layout[_RECORD] = record
    out = RecordDict({k: v for k, v in content.items() if k != record})
    out[PACKED] = packed
    out[LAYOUT] = layout
    return out


def _unpack_content(content: RecordDict, arrays: ArrayRecord, default_record: str = keys.ARRAYS) -> RecordDict:
    """A new RecordDict: ``content`` without the packed records, with ``arrays`` under their original name."""
    layout = content[LAYOUT]
    record = str(layout.get(_RECORD, default_record)) if isinstance(layout, ConfigRecord) else default_record
    out = RecordDict({k: v for k, v in content.items() if k not in (PACKED, LAYOUT)})
    out[record] = arrays
    return out


def _packed_parts(content: RecordDict) -> tuple[ArrayRecord, ConfigRecord]:
    packed, layout = content.get(PACKED), content.get(LAYOUT)
    if not isinstance(packed, ArrayRecord) or not isinstance(layout, ConfigRecord):
        raise ValueError(
            f"expected an ArrayRecord '{PACKED}' and a ConfigRecord '{LAYOUT}', found "
            f"{type(packed).__name__} and {type(layout).__name__}."
        )
    return packed, layout


def _config_value(content: RecordDict, key: str) -> Any:
    """``key`` from the ``"config"`` record, else from any config record; None if absent."""
    config = content.get(keys.CONFIG)
    if isinstance(config, ConfigRecord) and key in config:
        return config[key]
    for record in content.config_records.values():
        if key in record:
            return record[key]
    return None


def _mod_error(msg: Message, reason: str) -> Message:
    log(ERROR, "compression_mod: %s", reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"compression_mod: {reason}"), reply_to=msg)


# --------------------------------------------------------------------------------------
# ClientApp side
# --------------------------------------------------------------------------------------


def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: unpack compressed broadcasts and compress the model update in train replies.

    Partner of the :class:`CompressedUpdates` strategy wrapper. Register it with
    ``ClientApp(mods=[compression_mod, ...])``: first in the list is outermost, so
    the other mods (e.g. ``fixedclipping_mod``) see the plain model and what they
    change in the reply is what gets compressed.

    * If the message holds ``"arrays-packed"``, the full model is decoded into the
      ``"arrays"`` record the ClientApp expects (packed record and layout removed).
    * If its config says ``"update-codec"`` other than ``"none"`` and the reply
      carries ``"arrays"`` without error, those arrays are replaced by the packed
      update *reply - model the ClientApp started from*, with that codec.
    * Anything else passes through untouched. A broadcast that cannot be decoded,
      or an update that cannot be encoded (NaN/Inf, float16 overflow), becomes an
      error reply, which the server counts as a failed site.
    """
    if not msg.has_content():
        return call_next(msg, context)
    record = keys.ARRAYS
    start: ArrayRecord | None = None
    if PACKED in msg.content:
        try:
            packed, layout = _packed_parts(msg.content)
            record = str(layout.get(_RECORD, keys.ARRAYS))
            start = decode(packed, layout)
        except DECODE_ERRORS as err:  # a bad broadcast must not crash the node: the error reply tells the server
            return _mod_error(msg, f"could not decode the compressed model from the server: {err}")
        # The ClientApp gets its own record: it may replace entries, and ``start`` is the reference.
        msg.content = _unpack_content(msg.content, ArrayRecord(dict(start.items())))
    codec = _config_value(msg.content, UPDATE_CODEC)
    if codec is None or codec == "none":
        return call_next(msg, context)
    if start is None and isinstance(msg.content.get(record), ArrayRecord):
        # Copy: the ClientApp may replace arrays in the record it received.
        start = ArrayRecord(dict(msg.content[record].items()))  # type: ignore[union-attr]
    block = _config_value(msg.content, UPDATE_BLOCK) or DEFAULT_BLOCK

    reply = call_next(msg, context)
    if reply.has_error() or not reply.has_content() or not isinstance(reply.content.get(record), ArrayRecord):
        return reply
    try:
        packed, layout = encode(reply.content[record], str(codec), reference=start, block=block)  # type: ignore[arg-type]
    except (ValueError, TypeError) as err:  # what encode refuses (NaN, float16 overflow, another model's shape)
        return _mod_error(msg, f"could not compress the model update with codec {codec!r}: {err}")
    reply.content = _pack_content(reply.content, record, packed, layout)
    return reply


# --------------------------------------------------------------------------------------
# ServerApp side
# --------------------------------------------------------------------------------------


class CompressedUpdates(StrategyWrapper):
    """Strategy wrapper that compresses broadcasts and asks sites for compressed updates.

    Partner of the ClientApp mod :func:`compression_mod`, which every site must
    use (``ClientApp(mods=[compression_mod])``); a site without it receives a
    packed model it cannot read.

    Each round the wrapper remembers the exact global model, tells the sites the
    codec (``"update-codec"`` in the train config), and rebuilds each reply as
    *exact global model + dequantised update* before the inner strategy
    aggregates; quantisation error of the broadcast therefore does not accumulate.
    A reply whose packed data cannot be decoded is dropped and rejected exactly
    like a non-finite update: logged and reported through ``on_reject`` with the
    site and the reason, never crashing the run. The remaining replies, even
    none, go to the inner strategy, which decides what the round makes of them:
    the screen (:class:`flcore.federation.strategies.screen.ScreenedUpdates`) counts them
    against the round's quorum, and it, like Flower's strategies, leaves the
    global model unchanged (``(None, None)``) when no usable reply remains.

    Parameters
    ----------
    strategy : Strategy
        The Flower strategy doing the sampling and the aggregation.
    codec : str
        One of :data:`CODECS`; ``"none"`` changes nothing on the wire.
    compress_broadcast : bool, default True
        Also pack the global model sent for training and evaluation (with the same
        codec, as a full model).
    block : int, default 256
        Block size of the int8 codec.
    on_reject : callable, optional
        ``on_reject(server_round, site, reason)`` for each reply that cannot be decoded.
        :func:`flcore.federation.strategies.build_strategy` passes the screen's
        :meth:`~flcore.federation.strategies.screen.ScreenedUpdates.reject`, which records it
        with the screen's own rejections (history, results.json, audit trail).

    Examples
    --------
    Server::

        strategy = CompressedUpdates(FedAvg(...), codec="int8")

    Client::

        app = ClientApp(mods=[compression_mod])
    """

    def __init__(
        self,
        strategy: Strategy,
        codec: str,
        compress_broadcast: bool = True,
        block: int = DEFAULT_BLOCK,
        on_reject: RejectFn | None = None,
    ) -> None:
        super().__init__(strategy)
        self.codec = check_codec(codec)
        self.compress_broadcast = bool(compress_broadcast)
        self.block = _check_block(block)
        self.on_reject = on_reject
        self._global: dict[int, ArrayRecord] = {}

    def __repr__(self) -> str:
        return f"CompressedUpdates({self.strategy!r}, codec={self.codec!r})"

    @property
    def _arrays_key(self) -> str:
        return str(getattr(self.strategy, "arrayrecord_key", keys.ARRAYS))

    @property
    def _config_key(self) -> str:
        return str(getattr(self.strategy, "configrecord_key", keys.CONFIG))

    def summary(self) -> None:
        """Log the compression settings, then the inner strategy's."""
        log(INFO, "\t├──> Compression: update codec '%s' (block %d)", self.codec, self.block)
        log(INFO, "\t│\t└── Broadcast compressed: %s", self.compress_broadcast and self.codec != "none")
        self.strategy.summary()

    def _rewrite(self, messages: Iterable[Message], train: bool) -> list[Message]:
        """Pack the model (and set the codec for training) once per distinct content object."""
        messages = list(messages)
        if self.codec == "none":  # nothing to do: messages go out exactly as the inner strategy made them
            return messages
        done: dict[int, RecordDict] = {}
        for message in messages:
            if not message.has_content():
                continue
            key = id(message.content)
            if key not in done:
                done[key] = self._rewrite_content(message.content, train)
            message.content = done[key]
        return messages

    def _rewrite_content(self, content: RecordDict, train: bool) -> RecordDict:
        out = RecordDict(dict(content.items()))
        if train:
            old = out.get(self._config_key)
            config = ConfigRecord(dict(old.items())) if isinstance(old, ConfigRecord) else ConfigRecord()
            config[UPDATE_CODEC] = self.codec
            config[UPDATE_BLOCK] = self.block
            out[self._config_key] = config
        arrays = out.get(self._arrays_key)
        if not self.compress_broadcast or not isinstance(arrays, ArrayRecord):
            return out
        try:
            packed, layout = encode(arrays, self.codec, block=self.block)
        except ValueError as err:
            log(WARNING, "CompressedUpdates: sending the global model uncompressed this round: %s", err)
            return out
        return _pack_content(out, self._arrays_key, packed, layout)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure training with the inner strategy, then set the codec and pack the broadcast."""
        self._global = {server_round: arrays}  # the exact global model; updates are added to it
        return self._rewrite(self.strategy.configure_train(server_round, arrays, config, grid), train=True)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Rebuild packed replies as global model + update, reject undecodable ones, and aggregate the rest."""
        reference = self._global.get(server_round)
        kept: list[Message] = []
        for reply in replies:
            if reply.has_error() or not reply.has_content() or PACKED not in reply.content:
                kept.append(reply)
                continue
            try:
                packed, layout = _packed_parts(reply.content)
                arrays = decode(packed, layout, reference=reference)
            except DECODE_ERRORS as err:  # corrupt data from one site must not end the run: a rejection
                site = site_of(reply.content, f"node {reply.metadata.src_node_id}")
                reason = f"its compressed update cannot be decoded ({type(err).__name__}: {err})"
                log(WARNING, "Round %d: rejected the update of %s: %s", server_round, site, reason)
                if self.on_reject is not None:
                    self.on_reject(server_round, site, reason)  # recorded: history, results.json, audit trail
                continue
            reply.content = _unpack_content(reply.content, arrays, self._arrays_key)
            kept.append(reply)
        return self.strategy.aggregate_train(server_round, kept)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure evaluation with the inner strategy, packing the broadcast model."""
        return self._rewrite(self.strategy.configure_evaluate(server_round, arrays, config, grid), train=False)
