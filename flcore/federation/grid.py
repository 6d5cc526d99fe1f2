"""The ServerApp's Grid, watched: every exchange measured and recorded, sites named and ordered.

:class:`MonitoredGrid` wraps the Grid Flower hands the ServerApp (simulation or deployment)
and reports each exchange to a :class:`~flcore.federation.monitor.FederationMonitor`: bytes,
replies, the sites that were sampled and did not answer, those of the federation not even
connected. It names each node by its site (by the registration of its key in a deployment),
orders nodes and replies by that name so that a seed samples the same sites and
aggregation sums in a fixed order, and exchanges messages with short polls
(:func:`~flcore.federation.flowerwaits.exchange`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from flcore import keys
from flcore.federation.codecs import DECODE_ERRORS
from flcore.federation.flowerwaits import exchange, is_deployment
from flcore.federation.monitor import FederationMonitor, message_bytes
from flcore.federation.transport import pack_model, packed_for_transport, unpack_model


class MonitoredGrid(Grid):
    """A Grid that forwards everything to ``inner`` and reports each exchange."""

    def __init__(self, inner: Grid, monitor: FederationMonitor) -> None:
        self._inner = inner
        self._monitor = monitor
        #: Whether ``inner`` is Flower's deployment grid (SuperLink and SuperNodes), not a simulation's.
        self.deployed = is_deployment(inner)
        self._names: dict[int, str] = {}
        #: Node id -> site name registered with the node's key at the coordinator (deployments with site keys).
        self._registered: dict[int, str] = {}
        #: Registered site -> the other name it gave itself, for each site whose replies claimed one.
        self.misnamed: dict[str, str] = {}
        #: Send models packed as one array and unpack replies (:mod:`flcore.federation.transport`): set for a
        #: deployment, where each array is requests to move, unless a codec or SecAgg+ shapes the messages.
        self.pack_models = False
        #: Nodes that did not answer the latest training step at all (timed out or unreachable): they are
        #: not asked to evaluate that round or to close the run, so a dead site costs one reply timeout,
        #: not one per message. Every training step asks them again.
        self.unreachable: set[int] = set()

    def name_nodes(self, names: dict[int, str]) -> None:
        """Site name of each node id, so that node lists come in a reproducible order.

        Flower gives nodes random ids in every run and strategies sample positions of
        ``get_node_ids()``; ordering by site name makes a seed pick the same sites.
        """
        self._names = {**names, **self._registered}

    def bind_registry(self, registered: dict[int, str]) -> None:
        """Name each node by the site its key is registered for, whatever its replies say.

        In a deployment with site keys (:mod:`flcore.federation.registry`), the SuperLink
        admits a node only with a registered key, so the registration names the site;
        every reply's site name is set to it, and a different self-given name is kept in
        :attr:`misnamed` (results and audit trail).
        """
        self._registered = dict(registered)
        self._names.update(registered)

    def federation_sites(self) -> set[str]:
        """The sites that make up the federation: the registered ones, else those named by their replies."""
        return set(self._registered.values()) or set(self._names.values())

    def _bind_names(self, replies: list[Message]) -> None:
        for reply in replies:
            registered = self._registered.get(reply.metadata.src_node_id)
            if registered is None or reply.has_error():
                continue
            for cfg in reply.content.config_records.values():
                if keys.SITE_NAME in cfg:
                    claimed = str(cfg[keys.SITE_NAME])
                    if claimed != registered:
                        self.misnamed[registered] = claimed
                        cfg[keys.SITE_NAME] = registered

    def _unpacked(self, replies: list[Message], round_no: int | None) -> list[Message]:
        """Replies with their models unpacked (:mod:`flcore.federation.transport`); one that fails is rejected."""
        kept = []
        for r in replies:
            if not r.has_error() and r.has_content() and packed_for_transport(r.content):
                try:
                    r.content = unpack_model(r.content)
                except DECODE_ERRORS as err:  # damaged or forged on the way: not aggregated, and reported
                    reason = f"its model could not be unpacked: {err}"
                    self._monitor.record_rejection(round_no or 0, self.site_name(r.metadata.src_node_id), reason)
                    continue
            kept.append(r)
        return kept

    def site_name(self, node_id: int) -> str:
        """The site a node serves (``node N`` before the statistics round names it)."""
        return self._names.get(node_id, f"node {node_id}")

    def set_run(self, run: Any) -> None:  # pragma: no cover - set by Flower before wrapping
        self._inner.set_run(run)

    @property
    def run(self) -> Any:
        return self._inner.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        ids = list(self._inner.get_node_ids())
        return sorted(ids, key=lambda n: (self._names.get(n, ""), n)) if self._names else ids

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        training = any(m.metadata.message_type == "train" for m in messages)
        if not training and self.unreachable:
            messages = [m for m in messages if m.metadata.dst_node_id not in self.unreachable]
        if self.pack_models:
            packed: dict[int, RecordDict] = {}  # strategies send one RecordDict to many nodes: pack it once
            for m in messages:
                m.content = packed.setdefault(id(m.content), pack_model(m.content))
        sizes: dict[int, int] = {}
        bytes_out = 0
        round_no: int | None = None
        message_type = ""
        secagg_stage = False
        for m in messages:
            secagg_stage |= "secaggplus_configs" in m.content.config_records
            key = id(m.content)
            if key not in sizes:  # strategies send one RecordDict to many nodes
                sizes[key] = message_bytes(m.content)
            bytes_out += sizes[key]
            message_type = m.metadata.message_type
            for cfg in m.content.config_records.values():
                if keys.SERVER_ROUND in cfg:
                    round_no = int(cfg[keys.SERVER_ROUND])  # type: ignore[arg-type]
        if secagg_stage and round_no is None and messages and messages[0].metadata.group_id.isdigit():
            # SecAgg+'s key-exchange and unmasking stages: the round is the group id; only bytes count
            round_no, message_type = int(messages[0].metadata.group_id), "train-secagg"
        absent = None
        if training and round_no is not None and self._names:  # who of the federation is not even connected
            connected = {self.site_name(n) for n in self._inner.get_node_ids()}
            absent = sorted(self.federation_sites() - connected)
        started = time.perf_counter()
        replies = exchange(self._inner, messages, timeout)  # Flower's own waits 3 s between pulls
        self._bind_names(replies)
        # Replies in site order, not arrival order: aggregation sums in a fixed order, so a run (and a
        # resumed run) gives the same model to the last bit however the network delivers.
        replies.sort(key=lambda r: (self.site_name(r.metadata.src_node_id), r.metadata.src_node_id))
        bytes_in = sum(message_bytes(r.content) for r in replies if not r.has_error())
        replies = self._unpacked(replies, round_no)
        answered = {r.metadata.src_node_id for r in replies if not r.has_error()}
        if training and not secagg_stage:
            # NODE_UNAVAILABLE errors come from the SuperLink (or the simulated dropout), not from the node.
            heard = {
                r.metadata.src_node_id
                for r in replies
                if not (r.has_error() and r.error.code == ErrorCode.NODE_UNAVAILABLE)
            }
            self.unreachable = {m.metadata.dst_node_id for m in messages} - heard
        missing = [self.site_name(n) for n in {m.metadata.dst_node_id for m in messages} - answered]
        self._monitor.record_exchange(
            started, round_no, message_type, len(messages), bytes_out, replies, bytes_in, sorted(missing), absent
        )
        return replies
