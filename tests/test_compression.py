"""Compression codecs, model packing, and the compression_mod / CompressedUpdates pair (no real run)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp.strategy import FedAvg

from flcore import keys
from flcore.federation.codecs import CODECS, LAYOUT, PACKED, UPDATE_CODEC, decode, encode
from flcore.federation.mods.compression import compression_mod
from flcore.federation.monitor import message_bytes
from flcore.federation.quantize import dequantize_int8, quantize_int8
from flcore.federation.strategies.compressed import CompressedUpdates

# --------------------------------------------------------------------------------------
# int8 and float16 on flat vectors
# --------------------------------------------------------------------------------------


def _bound(x: np.ndarray, scale: np.ndarray, block: int) -> np.ndarray:
    """Documented bound: half the block's step, plus float32 rounding of the result."""
    per_value = np.repeat(scale.astype(np.float64), block)[: x.size]
    return per_value / 2 + np.spacing(np.abs(x).astype(np.float32)).astype(np.float64)


def test_int8_hand_computed() -> None:
    # Block 1: lo=-1, scale=2/255; (x+1)*127.5 = 0, 63.75, 191.25, 255 -> 0, 64, 191, 255.
    # Block 2 (single value 7): constant, scale 0, q 0.
    x = np.array([-1.0, -0.5, 0.5, 1.0, 7.0], dtype=np.float32)
    q, lo, scale = quantize_int8(x, block=4)
    np.testing.assert_array_equal(q, [0, 64, 191, 255, 0])
    np.testing.assert_allclose(lo, [-1.0, 7.0])
    np.testing.assert_allclose(scale, [2 / 255, 0.0], rtol=1e-6)
    assert q.dtype == np.uint8 and lo.dtype == np.float32 and scale.dtype == np.float32
    out = dequantize_int8(q, lo, scale, 5, block=4)
    np.testing.assert_allclose(out, [-1.0, -1 + 64 * 2 / 255, -1 + 191 * 2 / 255, 1.0, 7.0], rtol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 1000, 4097])
@pytest.mark.parametrize("block", [1, 7, 256])
def test_int8_round_trip_within_bound(n: int, block: int) -> None:
    rng = np.random.default_rng(n + block)
    x = (rng.normal(size=n) * rng.uniform(0.01, 100)).astype(np.float32)
    if n > 2 * block:
        x[block : 2 * block] = 3.25  # a constant block comes back exactly
    q, lo, scale = quantize_int8(x, block)
    assert q.shape == (n,) and lo.shape == scale.shape == (-(-n // block),)
    out = dequantize_int8(q, lo, scale, n, block)
    assert out.dtype == np.float32 and out.shape == (n,)
    assert np.all(np.abs(out.astype(np.float64) - x) <= _bound(x, scale, block))
    if n > 2 * block:
        assert scale[1] == 0 and np.all(out[block : 2 * block] == 3.25)


def test_int8_single_value_and_extreme_range() -> None:
    q, lo, scale = quantize_int8(np.array([-2.5], np.float32))
    assert (q[0], lo[0], scale[0]) == (0, -2.5, 0.0)
    x = np.array([-3e38, 3e38, 0.0], dtype=np.float32)  # max - min overflows float32: computed in float64
    q, lo, scale = quantize_int8(x)
    out = dequantize_int8(q, lo, scale, 3)
    assert np.isfinite(scale).all() and np.all(np.abs(out.astype(np.float64) - x) <= _bound(x, scale, 256))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_int8_rejects_non_finite(bad: float) -> None:
    x = np.ones(10, np.float32)
    x[[3, 8]] = bad
    with pytest.raises(ValueError, match=r"found 2 non-finite \(NaN or Inf\) of 10 \(first at flat index 3"):
        quantize_int8(x)


def test_int8_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"expects a 1-D array, got shape \(2, 2\)"):
        quantize_int8(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="expects floating-point values, got dtype int64"):
        quantize_int8(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="block size must be a positive integer"):
        quantize_int8(np.zeros(3, np.float32), block=0)
    q, lo, scale = quantize_int8(np.zeros(10, np.float32), block=4)
    with pytest.raises(
        ValueError, match=r"expected 2 block offsets and scales \(10 values in blocks of 5\), found lo \(3,\)"
    ):
        dequantize_int8(q, lo, scale, 10, block=5)


def test_float16_overflow_and_nan_rejected() -> None:
    big = ArrayRecord({"w": Array(np.array([1.0, 7e4, -1e5], np.float32))})
    with pytest.raises(ValueError, match=r"float16 codec expected values within ±65504, but 2 of 3 are larger"):
        encode(big, "float16")
    nan = ArrayRecord({"w": Array(np.array([1.0, np.nan], np.float32))})
    with pytest.raises(ValueError, match="found 1 non-finite"):
        encode(nan, "float16")
    with pytest.raises(ValueError, match="found 1 non-finite"):
        encode(nan, "int8")
    assert decode(*encode(big, "int8"))["w"].numpy()[1] == pytest.approx(7e4, abs=1.7e5 / 255)


def test_unknown_codec_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown compression codec 'int4'. Valid codecs: none, float16, int8"):
        encode(ArrayRecord(), "int4")
    with pytest.raises(ValueError, match="Valid codecs: none, float16, int8"):
        CompressedUpdates(FedAvg(), codec="fp8")


# --------------------------------------------------------------------------------------
# Packing a whole model
# --------------------------------------------------------------------------------------


def _model(seed: int = 0, scale: float = 1.0) -> ArrayRecord:
    """A small torch-like state dict: float32 tensors of several ranks and an int64 buffer."""
    rng = np.random.default_rng(seed)
    arrays = {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)) * scale,
        "conv.bias": rng.normal(size=4) * scale,
        "bn.running_mean": rng.normal(size=4) * scale,
        "bn.num_batches_tracked": np.array(17, dtype=np.int64),
        "fc.weight": rng.normal(size=(2, 36)) * scale,
        "temperature": np.array(1.5),
        "fc.bias": np.zeros(2),
    }
    return ArrayRecord(
        {k: Array(np.asarray(v, dtype=np.int64 if v.dtype == np.int64 else np.float32)) for k, v in arrays.items()}
    )


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _tolerance(codec: str, packed: ArrayRecord, x: np.ndarray) -> np.ndarray | float:
    if codec == "none":
        return np.spacing(np.abs(x).astype(np.float32))
    if codec == "float16":
        return np.abs(x) * 2.0**-11 + 2.0**-24
    # Matrices in 8-bit blocks, vectors (biases, buffers) in float16.
    return np.maximum(
        float(packed["scale"].numpy().max()) / 2 + np.spacing(np.abs(x).astype(np.float32)),
        np.abs(x) * 2.0**-11 + 2.0**-24,
    )


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("with_reference", [False, True])
def test_encode_decode_preserves_keys_dtypes_shapes(codec: str, with_reference: bool) -> None:
    reference = _model(seed=1) if with_reference else None
    model = _model(seed=0)
    packed, layout = encode(model, codec, reference=reference)
    # Packed: one coded vector (three arrays for int8) plus the int64 buffer, under a prefix.
    coded = {"int8": ["q", "lo", "scale", "side"], "float16": ["values"], "none": ["values"]}[codec]
    assert list(packed.keys()) == [*coded, "raw/bn.num_batches_tracked"]
    assert layout["delta"] is with_reference and layout["codec"] == codec
    # Survives the wire (protobuf) unchanged.
    wire = recorddict_from_proto(recorddict_to_proto(RecordDict({PACKED: packed, LAYOUT: layout})))
    out = decode(wire[PACKED], wire[LAYOUT], reference=reference)  # type: ignore[arg-type]
    assert list(out.keys()) == list(model.keys())
    for key, original in _numpy(model).items():
        got = out[key].numpy()
        assert got.dtype == original.dtype and got.shape == original.shape, key
        if original.dtype == np.int64:
            assert got == original
            continue
        delta = original - (reference[key].numpy() if reference is not None else 0)
        assert np.all(np.abs(got.astype(np.float64) - original) <= _tolerance(codec, packed, delta) + 1e-7), key
    if codec == "none" and not with_reference:
        for key, original in _numpy(model).items():
            np.testing.assert_array_equal(out[key].numpy(), original)


def test_delta_is_what_is_coded() -> None:
    # Model = reference + 0.001: the int8 update has a tiny step, far below the model's own spread.
    reference = _model(seed=3)
    model = ArrayRecord(
        {k: Array(np.asarray(v + 0.001, v.dtype) if v.dtype != np.int64 else v) for k, v in _numpy(reference).items()}
    )
    packed, layout = encode(model, "int8", reference=reference)
    assert float(packed["scale"].numpy().max()) < 1e-6
    out = decode(packed, layout, reference=reference)
    for key, original in _numpy(model).items():
        np.testing.assert_allclose(out[key].numpy(), original, atol=1e-6)


def test_int8_blocks_follow_each_tensor_and_vectors_stay_precise() -> None:
    # A normalisation buffer (std of features, 0.05..3) next to a weight matrix of range +-50:
    # one shared block would give the buffer a step of 0.4; per-tensor blocks and float16 keep it.
    rng = np.random.default_rng(5)
    std = rng.uniform(0.05, 3.0, size=75).astype(np.float32)
    weight = rng.uniform(-50, 50, size=(100, 3)).astype(np.float32)
    small = rng.uniform(-0.01, 0.01, size=(40, 10)).astype(np.float32)
    model = ArrayRecord({"std": Array(std), "weight": Array(weight), "small": Array(small)})
    out = decode(*encode(model, "int8"))
    np.testing.assert_allclose(out["std"].numpy(), std, rtol=2.0**-11)
    assert np.abs(out["weight"].numpy() - weight).max() <= 100 / 255 / 2 + 1e-5
    assert np.abs(out["small"].numpy() - small).max() <= 0.02 / 255 / 2 + 1e-8  # its own step, not the weight's
    packed, _ = encode(model, "int8")
    assert packed["q"].numpy().size == 300 + 400 and packed["side"].numpy().dtype == np.float16
    assert packed["lo"].numpy().size == 2 + 2  # ceil(300/256) + ceil(400/256): no block spans two tensors


def test_decode_reference_mismatch_names_the_key() -> None:
    model = _model()
    packed, layout = encode(model, "int8", reference=model)
    with pytest.raises(ValueError, match="need the reference model"):
        decode(packed, layout)
    wrong_shape = ArrayRecord({**dict(model.items()), "fc.weight": Array(np.zeros((36, 2), np.float32))})
    with pytest.raises(ValueError, match=r"array 'fc.weight' is float32\(36, 2\) in the reference model"):
        decode(packed, layout, reference=wrong_shape)
    missing = ArrayRecord({k: v for k, v in model.items() if k != "conv.bias"})
    with pytest.raises(ValueError, match=r"the reference model has no array 'conv\.bias'"):
        decode(packed, layout, reference=missing)
    extra = ArrayRecord({**dict(model.items()), "head.weight": Array(np.zeros(3, np.float32))})
    with pytest.raises(ValueError, match=r"floating array 'head\.weight' that the update lacks"):
        decode(packed, layout, reference=extra)
    with pytest.raises(ValueError, match=r"the reference model has no array 'conv\.bias'"):
        encode(model, "int8", reference=missing)


def test_decode_rejects_inconsistent_packing() -> None:
    packed, layout = encode(_model(), "int8")
    short = ArrayRecord({**dict(packed.items()), "q": Array(packed["q"].numpy()[:-1])})
    with pytest.raises(ValueError, match="packed array 'q' should be 1-D uint8 of length 180"):
        decode(short, layout)
    no_raw = ArrayRecord({k: v for k, v in packed.items() if not k.startswith("raw/")})
    with pytest.raises(ValueError, match=r"non-floating array 'bn\.num_batches_tracked'"):
        decode(no_raw, layout)
    bad_layout = ConfigRecord({**dict(layout.items()), "count": 3})
    with pytest.raises(ValueError, match="shapes hold 191 floating values but its count says 3"):
        decode(packed, bad_layout)
    with pytest.raises(ValueError, match="layout record has no 'codec' entry"):
        decode(packed, ConfigRecord())


def test_empty_and_scalar_only_records() -> None:
    for record in (ArrayRecord(), ArrayRecord({"s": Array(np.array(2.0, np.float32))})):
        for codec in CODECS:
            packed, layout = encode(record, codec)
            out = decode(packed, layout)
            assert list(out.keys()) == list(record.keys())
            for key in record.keys():
                assert out[key].numpy().shape == () and out[key].numpy() == pytest.approx(2.0)


def test_serialised_size_ratios() -> None:
    rng = np.random.default_rng(0)
    shapes = {"fc1.weight": (128, 128), "fc1.bias": (128,), "fc2.weight": (28, 128), "fc2.bias": (28,)}
    model = ArrayRecord({k: Array(rng.normal(size=s).astype(np.float32)) for k, s in shapes.items()})
    assert sum(int(np.prod(s)) for s in shapes.values()) == 20_124
    full = message_bytes(RecordDict({keys.ARRAYS: model}))
    ratios = {}
    for codec in ("int8", "float16"):
        packed, layout = encode(model, codec, reference=model)
        ratios[codec] = message_bytes(RecordDict({PACKED: packed, LAYOUT: layout})) / full
    assert ratios["int8"] <= 0.27
    assert ratios["float16"] <= 0.52


# --------------------------------------------------------------------------------------
# compression_mod + CompressedUpdates, wired by hand
# --------------------------------------------------------------------------------------


class FakeGrid:
    """Just enough of a Grid for Flower's node sampling."""

    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def _global() -> ArrayRecord:
    return _model(seed=5)


def _delta(node: int) -> dict[str, np.ndarray]:
    """Known update of node ``node``: a seeded pattern scaled by the node id."""
    rng = np.random.default_rng(100 + node)
    return {
        k: (rng.normal(size=v.shape) * 0.01 * node).astype(np.float32)
        for k, v in _numpy(_global()).items()
        if v.dtype == np.float32
    }


def _trainer(seen: list[Message] | None = None):  # type: ignore[no-untyped-def]
    """A fake ClientApp train function: start model + the node's known delta, 10 examples."""

    def call_next(msg: Message, context: Context) -> Message:
        if seen is not None:
            seen.append(msg)
        node = msg.metadata.dst_node_id
        start = _numpy(msg.content[keys.ARRAYS])  # type: ignore[arg-type]
        delta = _delta(node)
        trained = {k: (np.asarray(v + delta[k]) if k in delta else v) for k, v in start.items()}
        content = RecordDict(
            {
                keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in trained.items()}),
                keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10}),
            }
        )
        return Message(content, reply_to=msg)

    return call_next


def _strategy(codec: str, compress_broadcast: bool = True) -> CompressedUpdates:
    inner = FedAvg(min_train_nodes=3, min_evaluate_nodes=3, min_available_nodes=3)
    return CompressedUpdates(inner, codec=codec, compress_broadcast=compress_broadcast)


def _configure(strategy: CompressedUpdates, global_arrays: ArrayRecord) -> list[Message]:
    return list(strategy.configure_train(1, global_arrays, ConfigRecord({"lr": 0.1}), FakeGrid()))  # type: ignore[arg-type]


def _round(strategy: CompressedUpdates, global_arrays: ArrayRecord) -> tuple[list[Message], list[Message]]:
    messages = _configure(strategy, global_arrays)
    # In a real run each node gets its own deserialised copy; the mod rewrites that copy's content.
    replies = [compression_mod(m, _context(), _trainer()) for m in messages]
    return messages, replies


def _expected_aggregate() -> dict[str, np.ndarray]:
    g = _numpy(_global())
    mean = {k: np.mean([_delta(n)[k].astype(np.float64) for n in (1, 2, 3)], axis=0) for k in _delta(1)}
    return {k: (v + mean[k] if k in mean else v) for k, v in g.items()}


@pytest.mark.usefixtures("flower_task")
@pytest.mark.parametrize("compress_broadcast", [True, False])
def test_round_trip_aggregate_is_global_plus_mean_update(compress_broadcast: bool) -> None:
    strategy = _strategy("int8", compress_broadcast)
    messages = _configure(strategy, _global())
    assert len({id(m.content) for m in messages}) == 1  # one shared content, packed once
    content = messages[0].content
    assert content[keys.CONFIG][UPDATE_CODEC] == "int8"  # type: ignore[index]
    assert content[keys.CONFIG]["lr"] == 0.1  # type: ignore[index]
    assert (PACKED in content) is compress_broadcast and (keys.ARRAYS in content) is not compress_broadcast
    replies = [compression_mod(m, _context(), _trainer()) for m in messages]
    for reply in replies:  # uplink: the packed update only
        assert not reply.has_error() and keys.ARRAYS not in reply.content
        assert reply.content[LAYOUT]["delta"] is True  # type: ignore[index]
    bound = max(float(r.content[PACKED]["scale"].numpy().max()) for r in replies) / 2  # type: ignore[index]

    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    expected = _expected_aggregate()
    assert list(arrays.keys()) == list(expected.keys())
    for key, value in expected.items():
        got = arrays[key].numpy()
        assert got.shape == value.shape, key
        np.testing.assert_allclose(got, value, atol=bound + 1e-6, rtol=0, err_msg=key)


@pytest.mark.usefixtures("flower_task")
def test_codec_none_is_untouched_and_exact() -> None:
    strategy = _strategy("none")
    global_arrays = _global()
    messages = list(strategy.configure_train(1, global_arrays, ConfigRecord(), FakeGrid()))  # type: ignore[arg-type]
    content = messages[0].content
    assert content[keys.ARRAYS] is global_arrays and PACKED not in content
    assert UPDATE_CODEC not in content[keys.CONFIG]  # type: ignore[operator]
    seen: list[Message] = []
    replies = [compression_mod(m, _context(), _trainer(seen)) for m in messages]
    assert all(s is m for s, m in zip(seen, messages, strict=True))  # the ClientApp got the message as sent
    assert all(keys.ARRAYS in r.content and PACKED not in r.content for r in replies)
    plain = [Message(RecordDict(dict(r.content.items())), reply_to=m) for r, m in zip(replies, messages, strict=True)]
    arrays, _ = strategy.aggregate_train(1, replies)
    reference, _ = FedAvg().aggregate_train(1, plain)
    for key in global_arrays.keys():
        np.testing.assert_array_equal(arrays[key].numpy(), reference[key].numpy())  # type: ignore[index]


@pytest.mark.usefixtures("flower_task")
def test_error_reply_ignored_and_corrupt_reply_dropped() -> None:
    strategy = _strategy("int8")
    messages, replies = _round(strategy, _global())
    assert _strategy("int8").aggregate_train(1, []) == (None, None)
    failed = Message(Error(code=2, reason="site crashed"), reply_to=messages[2])
    corrupt = replies[1]
    packed = corrupt.content[PACKED]
    corrupt.content[PACKED] = ArrayRecord({**dict(packed.items()), "q": Array(packed["q"].numpy()[:-5])})  # type: ignore[union-attr,index]
    survivor = replies[0].metadata.src_node_id
    bound = float(replies[0].content[PACKED]["scale"].numpy().max()) / 2  # type: ignore[index]
    arrays, metrics = strategy.aggregate_train(1, [replies[0], corrupt, failed])
    assert arrays is not None and metrics is not None
    # Only the first reply's update survives: global + its delta, within its int8 step.
    g = _numpy(_global())
    for key, delta in _delta(survivor).items():
        np.testing.assert_allclose(arrays[key].numpy(), g[key] + delta, atol=bound + 1e-6, rtol=0)


@pytest.mark.usefixtures("flower_task")
def test_reply_without_reference_round_is_dropped() -> None:
    strategy = _strategy("int8")
    _, replies = _round(strategy, _global())
    assert strategy.aggregate_train(2, replies) == (None, None)  # round 2 was never configured


@pytest.mark.usefixtures("flower_task")
def test_mod_turns_bad_updates_and_broadcasts_into_error_replies() -> None:
    strategy = _strategy("float16")
    messages = list(strategy.configure_train(1, _global(), ConfigRecord(), FakeGrid()))  # type: ignore[arg-type]

    def explode(msg: Message, context: Context) -> Message:
        start = _numpy(msg.content[keys.ARRAYS])  # type: ignore[arg-type]
        arrays = ArrayRecord({k: Array(np.asarray(v * 10**6, v.dtype)) for k, v in start.items()})
        return Message(RecordDict({keys.ARRAYS: arrays, keys.METRICS: MetricRecord({"num-examples": 1})}), reply_to=msg)

    reply = compression_mod(messages[0], _context(), explode)
    assert reply.has_error() and "float16 codec expected values within" in str(reply.error.reason)

    broken = Message(
        RecordDict({PACKED: ArrayRecord(), LAYOUT: ConfigRecord({"codec": "int8"})}),
        dst_node_id=1,
        message_type="train",
    )
    reply = compression_mod(broken, _context(), _trainer())
    assert reply.has_error() and "could not decode the compressed model" in str(reply.error.reason)


@pytest.mark.usefixtures("flower_task")
def test_query_and_evaluate_messages() -> None:
    query = Message(RecordDict({keys.CONFIG: ConfigRecord({"x": 1})}), dst_node_id=1, message_type="query.stats")
    answer = Message(RecordDict({keys.METRICS: MetricRecord({"n": 1})}), reply_to=query)
    original = query.content
    assert compression_mod(query, _context(), lambda m, c: answer) is answer
    assert query.content is original

    strategy = _strategy("int8")
    messages = list(strategy.configure_evaluate(1, _global(), ConfigRecord(), FakeGrid()))  # type: ignore[arg-type]
    assert PACKED in messages[0].content and UPDATE_CODEC not in messages[0].content[keys.CONFIG]  # type: ignore[operator]
    seen: list[Message] = []

    def evaluate(msg: Message, context: Context) -> Message:
        seen.append(msg)
        return Message(RecordDict({keys.METRICS: MetricRecord({"num-examples": 1, "loss": 0.5})}), reply_to=msg)

    replies = [compression_mod(m, _context(), evaluate) for m in messages]
    decoded = seen[0].content[keys.ARRAYS]
    assert PACKED not in seen[0].content and list(decoded.keys()) == list(_global().keys())  # type: ignore[union-attr]
    assert strategy.aggregate_evaluate(1, replies)["loss"] == pytest.approx(0.5)  # type: ignore[index]


@pytest.mark.usefixtures("flower_task")
def test_mod_inside_a_flower_clientapp() -> None:
    app = ClientApp(mods=[compression_mod])
    app.train()(_trainer())
    strategy = _strategy("int8")
    messages = list(strategy.configure_train(1, _global(), ConfigRecord(), FakeGrid()))  # type: ignore[arg-type]
    replies = [app(m, _context()) for m in messages]
    assert all(PACKED in r.content for r in replies)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    for key, value in _expected_aggregate().items():
        np.testing.assert_allclose(arrays[key].numpy(), value, atol=1e-3, rtol=0)


def test_wrapper_delegates_attributes_and_summary() -> None:
    strategy = _strategy("int8")
    assert strategy.weighted_by_key == "num-examples"
    assert strategy.min_train_nodes == 3
    strategy.summary()
    with pytest.raises(AttributeError):
        _ = strategy.no_such_attribute
