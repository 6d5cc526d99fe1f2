"""A deployment's models on the wire as one array: fewer objects for Flower to move, the very same values.

Flower 1.41 moves a message as a tree of objects (the RecordDict, each record, each array
and its chunks), one HTTP request per object between ServerApp, SuperLink and SuperNode;
a model of six tensors is about 13 objects, and on loopback their requests were most of a
deployed round (benchmarks/deployment.py). So a deployed ServerApp
(:class:`~flcore.federation.grid.MonitoredGrid`) sends the model as one vector with its
layout (:func:`~flcore.federation.codecs.encode`, codec ``"none"``: the values exactly,
no delta), the ClientApp's :func:`~flcore.federation.mods.compression.compression_mod`
unpacks it and packs its reply the same way, and the ServerApp unpacks the reply before
any strategy sees it. A layout marked :data:`TRANSPORT` is that packing, never a codec a
run chose (update compression, whose wrapper packs with its own codec).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from flcore import keys
from flcore.federation.codecs import LAYOUT, PACKED, decode, encode, pack_content, packed_parts, unpack_content

#: Layout key that marks a model packed for the wire only, values unchanged.
TRANSPORT = "transport-packed"


def pack_model(content: RecordDict, record: str = keys.ARRAYS) -> RecordDict:
    """``content`` with its model (``record``, of two arrays or more) as one packed vector; else as it is."""
    arrays = content.get(record)
    if not isinstance(arrays, ArrayRecord) or len(arrays) < 2 or PACKED in content:
        return content
    packed, layout = encode(arrays, "none")
    layout[TRANSPORT] = True
    return pack_content(content, record, packed, layout)


def packed_for_transport(content: RecordDict) -> bool:
    """Whether ``content`` holds a model :func:`pack_model` packed."""
    layout = content.get(LAYOUT)
    return PACKED in content and isinstance(layout, ConfigRecord) and bool(layout.get(TRANSPORT, False))


def unpack_model(content: RecordDict) -> RecordDict:
    """``content`` with a model :func:`pack_model` packed back in its own record; other content as it is.

    Raises what :func:`~flcore.federation.codecs.decode` raises on damaged data
    (:data:`~flcore.federation.codecs.DECODE_ERRORS`).
    """
    if not packed_for_transport(content):
        return content
    packed, layout = packed_parts(content)
    return unpack_content(content, decode(packed, layout))
