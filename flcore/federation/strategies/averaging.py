"""Weighted averaging of site updates at memory speed: replies read in place, summed block by block.

Flower's ``aggregate_arrayrecords`` decodes every reply into a fresh array
(``Array.numpy`` copies the bytes), multiplies it into another temporary, adds that
to the running sum and serialises the result through ``np.save`` into a growing
buffer: four or five passes over memory per update. Here each reply's ``.npy``
bytes are viewed, not copied (:func:`array_view`), and the average is built one
block of parameters at a time, small enough to stay in the CPU cache, so each
update is read from memory once and the result written once
(``benchmarks/aggregation.py`` measures both).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from io import BytesIO
from typing import TypeVar, cast

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from scipy.linalg.blas import get_blas_funcs

S = TypeVar("S", bound=FlowerFedAvg)

#: Parameters summed at a time: 64 Ki values of the accumulator and its temporary fit in a core's L2 cache.
BLOCK = 1 << 16


def array_view(array: Array) -> np.ndarray:
    """A read-only NumPy view of ``array``'s ``.npy`` bytes, without copying them.

    Falls back to :meth:`flwr.app.Array.numpy` (a copy) for anything but a plain
    C-ordered NumPy payload.
    """
    data = array.data
    if array.stype != "numpy.ndarray" or data[:6] != np.lib.format.MAGIC_PREFIX or len(data) < 12:
        return array.numpy()
    # Version 1.0 headers give their length in 2 bytes, later versions in 4.
    length, start = (
        (int.from_bytes(data[8:10], "little"), 10) if data[6] == 1 else (int.from_bytes(data[8:12], "little"), 12)
    )
    parsed = _header(bytes(data[: start + length]))
    if parsed is None:
        return array.numpy()  # let Flower's own decoder say what is wrong
    shape, dtype = parsed
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(data, dtype=dtype, count=count, offset=start + length).reshape(shape)


@lru_cache(maxsize=256)
def _header(head: bytes) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of a C-ordered, object-free ``.npy`` header; ``None`` otherwise.

    Cached: a round's replies share a handful of headers, and parsing one costs more
    than averaging a small array.
    """
    stream = BytesIO(head)
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(stream)
    except ValueError:
        return None
    if fortran or dtype.hasobject:
        return None
    return tuple(shape), dtype


def to_array(values: np.ndarray) -> Array:
    """``Array(values)`` with one copy: the ``.npy`` header joined to the raw bytes.

    ``Array(ndarray)`` writes through ``np.save`` into a ``BytesIO`` and copies the
    result out again. The bytes are the same (``array_view`` reads either).
    """
    if not values.flags.c_contiguous:
        values = np.ascontiguousarray(values)  # (not for all: it makes a 0-d array 1-d)
    head = BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(values))
    data = b"".join((head.getvalue(), values.data.cast("B")))
    return Array(dtype=str(values.dtype), shape=tuple(values.shape), stype="numpy.ndarray", data=data)


def size_weights(sizes: list[float], beta: float) -> np.ndarray:
    """Normalised weights n_k^(1+beta) / sum_j n_j^(1+beta).

    ``beta = 0`` is sample-weighted FedAvg (McMahan et al. 2017); ``beta = -1`` weighs
    every site equally; ``beta < 0`` favours small sites, ``beta > 0`` large ones.
    """
    n = np.asarray(sizes, dtype=np.float64)
    if n.size == 0:
        raise ValueError("no site sizes given")
    if np.any(n <= 0) or not np.all(np.isfinite(n)):
        raise ValueError(f"site sizes must be positive and finite, got {sizes}")
    # Scale first so n^(1+beta) cannot overflow for large n and beta.
    w = np.power(n / n.max(), 1.0 + beta)
    return w / w.sum()


def _accumulator_dtype(dtype: np.dtype) -> np.dtype:
    """Floating arrays are summed in their own precision (at least float32), like Flower's FedAvg; others in float64."""
    if np.issubdtype(dtype, np.floating):
        return np.promote_types(dtype, np.float32)
    return np.dtype(np.float64)


def weighted_average(records: list[ArrayRecord], weights: np.ndarray) -> ArrayRecord:
    """Weighted average of ArrayRecords holding the same keys and shapes.

    Each array comes back in the sites' own dtype. Floating arrays are accumulated
    in their own precision (float16 in float32), as Flower's FedAvg does: over 100
    float32 updates the rounding error stays below 1e-5 relative, far under the
    noise of SGD. Integer arrays (e.g. a batch counter) are averaged in float64 and
    truncated.

    Raises
    ------
    ValueError
        If the records do not hold the same keys, shapes and dtypes, or the weights
        do not match the records.
    """
    if len(records) != len(weights) or not records:
        raise ValueError(f"{len(records)} records but {len(weights)} weights")
    names = list(records[0].keys())
    out: dict[str, Array] = {}
    for name in names:
        try:
            views = [array_view(cast(Array, record[name])) for record in records]
        except KeyError:
            raise ValueError(f"not every record holds the array '{name}'") from None
        first = views[0]
        for view in views[1:]:
            if view.shape != first.shape or view.dtype != first.dtype:
                raise ValueError(
                    f"array '{name}' differs between records: {first.shape} {first.dtype} against "
                    f"{view.shape} {view.dtype}"
                )
        out[name] = to_array(_average(views, weights))
    if any(len(record) != len(names) for record in records):
        raise ValueError("the records hold different arrays")
    return ArrayRecord(out)


def _average(views: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    first = views[0]
    acc_dtype = _accumulator_dtype(first.dtype)
    w = [acc_dtype.type(x) for x in np.asarray(weights, dtype=np.float64)]
    flat = [v.reshape(-1) for v in views]
    size = first.size
    result = np.empty(size, dtype=first.dtype)
    acc = np.empty(min(BLOCK, size), dtype=acc_dtype)
    tmp = np.empty_like(acc)
    # BLAS axpy (acc += w * x) reads x once, with no temporary; other dtypes are cast through ``tmp``.
    axpy = get_blas_funcs("axpy", dtype=acc_dtype) if first.dtype == acc_dtype else None
    for start in range(0, size, BLOCK):
        stop = min(start + BLOCK, size)
        a, t = acc[: stop - start], tmp[: stop - start]
        np.multiply(flat[0][start:stop], w[0], out=a)
        for values, weight in zip(flat[1:], w[1:], strict=True):
            if axpy is not None:
                a = axpy(values[start:stop], a, a=weight)
            else:
                np.multiply(values[start:stop], weight, out=t)
                a += t
        result[start:stop] = a
    return result.reshape(first.shape)


class FedAvg(FlowerFedAvg):
    """Flower's :class:`~flwr.serverapp.strategy.FedAvg` whose average is :func:`weighted_average`.

    Same weights (n_k / sum n_j), same replies accepted, same metrics; only the
    arithmetic reads the replies in place. Listed after a Flower strategy that
    builds on FedAvg (``class X(FedProx, FedAvg)``), it also speeds up that
    strategy's inner average (FedProx, FedAdam, FedYogi call ``FedAvg.aggregate_train``).
    """

    def site_weights(self, sizes: list[float]) -> np.ndarray:
        """Normalised weights of the replies, from their ``weighted_by_key`` values."""
        return size_weights(sizes, 0.0)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies' arrays with :meth:`site_weights` and their metrics as Flower does."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [msg.content for msg in valid]
        sizes = [float(cast(float, next(iter(c.metric_records.values()))[self.weighted_by_key])) for c in contents]
        arrays = [next(iter(c.array_records.values())) for c in contents]
        aggregated = weighted_average(arrays, self.site_weights(sizes))
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return aggregated, metrics


def with_fast_average(cls: type[S]) -> type[S]:
    """``cls`` (a Flower strategy built on FedAvg) with its inner FedAvg average done by :class:`FedAvg`.

    The subclass keeps ``cls``'s name; its method order puts this module's :class:`FedAvg` between
    ``cls`` and Flower's FedAvg, so ``cls``'s own steps (the proximal term, the
    server optimiser) stay as Flower wrote them.
    """
    return cast(type[S], type(cls.__name__, (cls, FedAvg), {"__doc__": cls.__doc__}))
