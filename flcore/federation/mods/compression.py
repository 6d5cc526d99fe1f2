"""ClientApp mod of update compression: unpacks compressed broadcasts and packs the model update of train replies."""

from __future__ import annotations

from logging import ERROR
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.supercore import log

from flcore import keys
from flcore.federation.codecs import (
    DECODE_ERRORS,
    PACKED,
    RECORD,
    UPDATE_BLOCK,
    UPDATE_CODEC,
    decode,
    encode,
    pack_content,
    packed_parts,
    unpack_content,
)
from flcore.federation.quantize import DEFAULT_BLOCK
from flcore.federation.transport import pack_model, packed_for_transport


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


def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: unpack compressed broadcasts and compress the model update in train replies.

    Partner of the strategy wrapper
    :class:`~flcore.federation.strategies.compressed.CompressedUpdates`. Register it with
    ``ClientApp(mods=[compression_mod, ...])``: first in the list is outermost, so
    the other mods (e.g. ``fixedclipping_mod``) see the plain model and what they
    change in the reply is what gets compressed.

    * If the message holds ``"arrays-packed"``, the full model is decoded into the
      ``"arrays"`` record the ClientApp expects (packed record and layout removed).
    * If its config says ``"update-codec"`` other than ``"none"`` and the reply
      carries ``"arrays"`` without error, those arrays are replaced by the packed
      update *reply - model the ClientApp started from*, with that codec.
    * A model a deployed ServerApp packed for the wire (:mod:`flcore.federation.transport`) is
      unpacked the same way, and the reply's model packed back, exactly.
    * Anything else passes through untouched. A broadcast that cannot be decoded,
      or an update that cannot be encoded (NaN/Inf, float16 overflow), becomes an
      error reply, which the server counts as a failed site.
    """
    if not msg.has_content():
        return call_next(msg, context)
    record = keys.ARRAYS
    start: ArrayRecord | None = None
    transport = packed_for_transport(msg.content)  # a deployment's exact packing: the reply travels so too
    if PACKED in msg.content:
        try:
            packed, layout = packed_parts(msg.content)
            record = str(layout.get(RECORD, keys.ARRAYS))
            start = decode(packed, layout)
        except DECODE_ERRORS as err:  # a bad broadcast must not crash the node: the error reply tells the server
            return _mod_error(msg, f"could not decode the compressed model from the server: {err}")
        # The ClientApp gets its own record: it may replace entries, and ``start`` is the reference.
        msg.content = unpack_content(msg.content, ArrayRecord(dict(start.items())))
    codec = _config_value(msg.content, UPDATE_CODEC)
    if codec is None or codec == "none":
        reply = call_next(msg, context)
        if transport and not reply.has_error() and reply.has_content():
            reply.content = pack_model(reply.content, record)
        return reply
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
    reply.content = pack_content(reply.content, record, packed, layout)
    return reply
