"""Compression codecs ("none", "float16", "int8") that pack an ArrayRecord into a few coded arrays and back."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from flcore import keys
from flcore.federation.quantize import (
    DEFAULT_BLOCK,
    check_block,
    check_finite,
    dequantize_int8,
    quantize_int8,
    to_float16,
)

CODECS = ("none", "float16", "int8")

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
#: Layout key: name of the ArrayRecord the packed one replaced (set by the mod and the wrapper).
RECORD = "record"


def check_codec(codec: object) -> str:
    """Return ``codec`` if it is a known codec name, else raise a ValueError listing the valid ones."""
    if codec not in CODECS:
        raise ValueError(
            f"Unknown compression codec {codec!r}. Valid codecs: {', '.join(CODECS)} "
            "('none' sends the model as is, 'float16' halves it, 'int8' quarters it)."
        )
    return str(codec)


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

    All floating-point arrays, in key order, become at most four coded arrays,
    however many tensors the model has; non-floating arrays (integer buffers)
    travel unchanged, and a small ConfigRecord holds the layout.

    Parameters
    ----------
    arrays : ArrayRecord
        The model (or any arrays). Floating-point arrays are flattened and
        concatenated in key order; other arrays (integer buffers) are kept
        unchanged under ``RAW_PREFIX + name``.
    codec : str
        One of :data:`CODECS`: ``"none"`` keeps the float values as they are (exact);
        ``"float16"`` halves the bytes, relative error at most 2^-11 per value;
        ``"int8"`` quantises every matrix (2-D or more) block-wise
        (:func:`~flcore.federation.quantize.quantize_int8`), in blocks that never
        straddle two tensors: about a quarter of the bytes, per value an error of at
        most half its block's step. Vectors (biases, normalisation statistics) are
        few bytes and sensitive: they travel in float16.
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
    block = check_block(block)
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
        check_finite(side_vector, "encode")
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
    block = check_block(_layout_field(layout, _BLOCK, int))
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


def pack_content(content: RecordDict, record: str, packed: ArrayRecord, layout: ConfigRecord) -> RecordDict:
    """A new RecordDict: ``content`` with ``record`` replaced by the packed arrays and their layout."""
    layout[RECORD] = record
    out = RecordDict({k: v for k, v in content.items() if k != record})
    out[PACKED] = packed
    out[LAYOUT] = layout
    return out


def unpack_content(content: RecordDict, arrays: ArrayRecord, default_record: str = keys.ARRAYS) -> RecordDict:
    """A new RecordDict: ``content`` without the packed records, with ``arrays`` under their original name."""
    layout = content[LAYOUT]
    record = str(layout.get(RECORD, default_record)) if isinstance(layout, ConfigRecord) else default_record
    out = RecordDict({k: v for k, v in content.items() if k not in (PACKED, LAYOUT)})
    out[record] = arrays
    return out


def packed_parts(content: RecordDict) -> tuple[ArrayRecord, ConfigRecord]:
    """The packed ArrayRecord and its layout in ``content``; a ValueError if either is missing or mistyped."""
    packed, layout = content.get(PACKED), content.get(LAYOUT)
    if not isinstance(packed, ArrayRecord) or not isinstance(layout, ConfigRecord):
        raise ValueError(
            f"expected an ArrayRecord '{PACKED}' and a ConfigRecord '{LAYOUT}', found "
            f"{type(packed).__name__} and {type(layout).__name__}."
        )
    return packed, layout
