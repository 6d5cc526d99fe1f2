"""Strategy wrapper that compresses broadcasts and rebuilds each site's compressed update before aggregation."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from flcore import keys
from flcore.federation.codecs import (
    DECODE_ERRORS,
    PACKED,
    UPDATE_BLOCK,
    UPDATE_CODEC,
    check_codec,
    decode,
    encode,
    pack_content,
    packed_parts,
    unpack_content,
)
from flcore.federation.monitor import site_of
from flcore.federation.quantize import DEFAULT_BLOCK, check_block
from flcore.federation.strategies.screen import RejectFn
from flcore.federation.strategies.wrapper import StrategyWrapper


class CompressedUpdates(StrategyWrapper):
    """Strategy wrapper that compresses broadcasts and asks sites for compressed updates.

    Partner of the ClientApp mod
    :func:`~flcore.federation.mods.compression.compression_mod`, which every site must
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
        One of :data:`~flcore.federation.codecs.CODECS`; ``"none"`` changes nothing on the wire.
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
        self.block = check_block(block)
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
        return pack_content(out, self._arrays_key, packed, layout)

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
                packed, layout = packed_parts(reply.content)
                arrays = decode(packed, layout, reference=reference)
            except DECODE_ERRORS as err:  # corrupt data from one site must not end the run: a rejection
                site = site_of(reply.content, f"node {reply.metadata.src_node_id}")
                reason = f"its compressed update cannot be decoded ({type(err).__name__}: {err})"
                log(WARNING, "Round %d: rejected the update of %s: %s", server_round, site, reason)
                if self.on_reject is not None:
                    self.on_reject(server_round, site, reason)  # recorded: history, results.json, audit trail
                continue
            reply.content = unpack_content(reply.content, arrays, self._arrays_key)
            kept.append(reply)
        return self.strategy.aggregate_train(server_round, kept)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure evaluation with the inner strategy, packing the broadcast model."""
        return self._rewrite(self.strategy.configure_evaluate(server_round, arrays, config, grid), train=False)
