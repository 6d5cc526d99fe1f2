"""A deployment's models travel as one packed array (flcore.federation.transport): exactly the same values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from flcore import keys
from flcore.federation.codecs import PACKED, UPDATE_CODEC
from flcore.federation.grid import MonitoredGrid
from flcore.federation.mods.compression import compression_mod
from flcore.federation.monitor import FederationMonitor
from flcore.federation.transport import pack_model, packed_for_transport, unpack_model

pytestmark = pytest.mark.usefixtures("flower_task")


def _model() -> ArrayRecord:
    rng = np.random.default_rng(3)
    return ArrayRecord(
        {
            "w": Array(rng.normal(size=(16, 30)).astype(np.float32)),
            "b": Array(rng.normal(size=16).astype(np.float32)),
            "scale": Array(rng.normal(size=4)),  # float64
            "steps": Array(np.array([7, 9], dtype=np.int64)),
            "odd": Array(np.array([np.nan, np.inf], dtype=np.float32)),  # carried as they are: the screen judges
        }
    )


def _same(a: ArrayRecord, b: ArrayRecord) -> None:
    assert list(a.keys()) == list(b.keys())
    for k in a:
        x, y = a[k].numpy(), b[k].numpy()
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), k  # bit for bit, NaN and infinities included


def test_a_packed_model_comes_back_bit_for_bit_in_its_own_record() -> None:
    content = RecordDict({keys.ARRAYS: _model(), keys.CONFIG: ConfigRecord({"server-round": 2})})
    packed = pack_model(content)
    assert PACKED in packed and keys.ARRAYS not in packed and packed_for_transport(packed)
    assert len(packed[PACKED]) < len(content[keys.ARRAYS])  # type: ignore[arg-type]
    back = unpack_model(packed)
    _same(back[keys.ARRAYS], _model())  # type: ignore[arg-type]
    assert back[keys.CONFIG]["server-round"] == 2  # type: ignore[index]


def test_what_is_not_a_model_of_several_arrays_is_left_alone() -> None:
    one = RecordDict({keys.ARRAYS: ArrayRecord({"booster": Array(np.arange(5, dtype=np.uint8))})})
    query = RecordDict({keys.CONFIG: ConfigRecord({"x": 1})})
    for content in (one, query):
        assert pack_model(content) is content and unpack_model(content) is content


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_the_site_unpacks_the_model_and_packs_its_reply_the_same_way() -> None:
    msg = Message(pack_model(RecordDict({keys.ARRAYS: _model()})), dst_node_id=1, message_type="train")
    seen: list[ArrayRecord] = []

    def train(m: Message, context: Context) -> Message:
        seen.append(m.content[keys.ARRAYS])  # type: ignore[arg-type]
        out = RecordDict({keys.ARRAYS: _model(), keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3})})
        return Message(out, reply_to=m)

    reply = compression_mod(msg, _context(), train)
    _same(seen[0], _model())  # the ClientApp saw the plain model
    assert packed_for_transport(reply.content)
    _same(unpack_model(reply.content)[keys.ARRAYS], _model())  # type: ignore[arg-type]


def test_a_plain_message_gets_a_plain_reply() -> None:
    msg = Message(RecordDict({keys.ARRAYS: _model()}), dst_node_id=1, message_type="train")

    def train(m: Message, context: Context) -> Message:
        return Message(RecordDict({keys.ARRAYS: _model()}), reply_to=m)

    reply = compression_mod(msg, _context(), train)
    assert keys.ARRAYS in reply.content and not packed_for_transport(reply.content)
    assert UPDATE_CODEC not in msg.content.config_records.get(keys.CONFIG, {})


class _Echo:
    """A grid that answers each message with its own content, as a site that returns the model it got."""

    def __init__(self) -> None:
        self.sent: list[RecordDict] = []

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def push_messages(self, messages: Any) -> list[str]:
        raise NotImplementedError

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        out = []
        for m in messages:
            self.sent.append(m.content)
            reply = Message(RecordDict(dict(m.content.items())), reply_to=m)
            reply.metadata.__dict__["_src_node_id"] = m.metadata.dst_node_id
            out.append(reply)
        return out


def test_a_deployed_grid_sends_packed_models_and_hands_strategies_plain_ones() -> None:
    inner = _Echo()
    grid = MonitoredGrid(inner, FederationMonitor())  # type: ignore[arg-type]
    grid.pack_models = True
    content = RecordDict({keys.ARRAYS: _model(), keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 1})})
    messages = [Message(content, dst_node_id=n, message_type="train") for n in (1, 2)]
    replies = list(grid.send_and_receive(messages))
    assert all(packed_for_transport(c) for c in inner.sent)
    assert inner.sent[0] is inner.sent[1]  # one content for many nodes is packed once
    assert len(replies) == 2
    for r in replies:
        _same(r.content[keys.ARRAYS], _model())  # type: ignore[arg-type]
