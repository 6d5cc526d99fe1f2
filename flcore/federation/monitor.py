"""Per-round bookkeeping of a federation: bytes on the wire, replies, per-site metrics, timing.

:class:`~flcore.federation.grid.MonitoredGrid` wraps Flower's Grid and reports every exchange
here, each message measured as its serialised protobuf size (what travels between SuperLink and
SuperNodes).
:class:`FederationMonitor` also serves as the strategy's metric-aggregation
function, so per-site metrics are kept alongside Flower's weighted averages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import recorddict_to_proto

from flcore import keys


def message_bytes(content: RecordDict) -> int:
    """Serialised size in bytes of a message's content, as sent over gRPC."""
    return int(recorddict_to_proto(content).ByteSize())


@dataclass
class RoundRecord:
    """What happened in one round."""

    round: int
    sampled: int = 0
    replies: int = 0
    failures: int = 0
    dropouts: int = 0
    evaluate_sampled: int = 0
    evaluate_replies: int = 0
    bytes_sent_train: int = 0
    bytes_received_train: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    train: dict[str, float] = field(default_factory=dict)
    evaluate: dict[str, float] = field(default_factory=dict)
    per_site_train: dict[str, dict[str, float]] = field(default_factory=dict)
    per_site_evaluate: dict[str, dict[str, float]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    wall_time_s: float = 0.0
    epsilon: float | None = None
    aggregate_hash: str | None = None
    #: Sites sampled for training that did not answer (offline, timed out or failed), by name.
    missing: list[str] = field(default_factory=list)
    #: Sites whose update the server rejected before aggregation (non-finite, or not decodable), with the reason.
    rejected: dict[str, str] = field(default_factory=dict)
    #: Sites of the federation not connected when the round began (so not sampled), by name.
    absent: list[str] = field(default_factory=list)
    #: Sites absent or silent in the previous round that answered in this one.
    rejoined: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

        return {
            "round": self.round,
            "sites_sampled": self.sampled,
            "sites_replied": self.replies,
            "sites_failed": self.failures,
            "sites_dropped": self.dropouts,
            "evaluate_sampled": self.evaluate_sampled,
            "evaluate_replied": self.evaluate_replies,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "bytes_sent_train": self.bytes_sent_train,
            "bytes_received_train": self.bytes_received_train,
            "sites_trained": sorted(self.per_site_train),
            "sites_missing": sorted(self.missing),
            "sites_rejected": dict(sorted(self.rejected.items())),
            "sites_absent": sorted(self.absent),
            "sites_rejoined": sorted(self.rejoined),
            "wall_time_s": round(self.wall_time_s, 4),
            "epsilon": self.epsilon,
            "aggregate_hash": self.aggregate_hash,
            "train": clean(self.train),
            "evaluate": clean(self.evaluate),
            "per_site_evaluate": {s: clean(m) for s, m in sorted(self.per_site_evaluate.items())},
        }


def site_of(record: RecordDict, default: str = "?") -> str:
    """The site a reply's content names (``default`` if none)."""
    for cfg in record.config_records.values():
        if keys.SITE_NAME in cfg:
            return str(cfg[keys.SITE_NAME])
    return default


def nan_aware_average(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Weighted average of every numeric metric, skipping NaN (undefined) values."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        for metrics in record.metric_records.values():
            w = float(metrics.get(weight_key, 1.0))  # type: ignore[arg-type]
            for key, value in metrics.items():
                if key == weight_key or isinstance(value, list):
                    continue
                v = float(value)
                if math.isnan(v):
                    continue
                sums[key] = sums.get(key, 0.0) + w * v
                weights[key] = weights.get(key, 0.0) + w
    return MetricRecord({k: sums[k] / weights[k] for k in sums if weights[k] > 0})


class FederationMonitor:
    """Collects :class:`RoundRecord` objects while a strategy runs.

    Parameters
    ----------
    on_round : callable, optional
        Called with each finished :class:`RoundRecord` (progress display).
    """

    def __init__(self, on_round: Callable[[RoundRecord], None] | None = None) -> None:
        self.rounds: list[RoundRecord] = []
        self.setup_bytes_sent = 0
        self.setup_bytes_received = 0
        self.on_round = on_round
        self._current: RoundRecord | None = None
        #: Each site's epsilon so far in this run (sample-level DP, reported by the sites).
        self.site_epsilon: dict[str, float] = {}
        #: The client-level DP wrapper's accounting (``spent_epsilon()``), when on.
        self.client_privacy: Any = None

    # -- called by MonitoredGrid -------------------------------------------------
    def record_exchange(
        self,
        started: float,
        round_no: int | None,
        message_type: str,
        sent: int,
        bytes_out: int,
        replies: list[Message],
        bytes_in: int,
        missing: list[str] | None = None,
        absent: list[str] | None = None,
    ) -> None:
        if round_no is None:
            self.setup_bytes_sent += bytes_out
            self.setup_bytes_received += bytes_in
            return
        if self._current is None or self._current.round != round_no:
            self._current = RoundRecord(round=round_no, started=started)
            if absent is not None:
                self._current.absent = list(absent)
            self.rounds.append(self._current)
        rec = self._current
        rec.bytes_sent += bytes_out
        rec.bytes_received += bytes_in
        failed = [m for m in replies if m.has_error()]
        if message_type == "train":
            rec.sampled = sent
            rec.failures = len(failed) + max(0, sent - len(replies))  # no reply at all (timeout) fails too
            # Dropped: unreachable (Flower's NODE_UNAVAILABLE) or no answer within the reply timeout.
            unreachable = sum(1 for m in failed if m.error.code == ErrorCode.NODE_UNAVAILABLE)
            rec.dropouts = unreachable + max(0, sent - len(replies))
            rec.replies = len(replies) - len(failed)
            rec.missing = list(missing or [])
            if len(self.rounds) > 1:  # back: absent or silent in the previous round, answering in this one
                before = self.rounds[-2]
                answered = {site_of(m.content) for m in replies if not m.has_error()}
                rec.rejoined = sorted((set(before.absent) | set(before.missing)) & answered)
            rec.bytes_sent_train += bytes_out
            rec.bytes_received_train += bytes_in
        elif message_type == "train-secagg":
            rec.bytes_sent_train += bytes_out
            rec.bytes_received_train += bytes_in
        elif message_type == "evaluate":
            rec.evaluate_sampled = sent
            rec.evaluate_replies = len(replies) - len(failed)

    def record_rejection(self, server_round: int, site: str, reason: str) -> None:
        """The server dropped ``site``'s update in ``server_round``: not finite, or not decodable.

        Called through the screen (:mod:`flcore.federation.strategies.screen`), which the compression
        wrapper reports its decoding failures to.
        """
        rec = self._current
        if rec is None or rec.round != server_round:
            rec = RoundRecord(round=server_round)
            self._current = rec
            self.rounds.append(rec)
        rec.rejected[site] = reason

    # -- metric aggregation functions handed to the strategy -------------------------
    def aggregate_train(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        return self._aggregate(records, weight_key, "train")

    def aggregate_evaluate(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        return self._aggregate(records, weight_key, "evaluate")

    def _aggregate(self, records: list[RecordDict], weight_key: str, phase: str) -> MetricRecord:
        """NaN-aware weighted mean; keeps each site's own values in the round record."""
        agg = nan_aware_average(records, weight_key)
        rec = self._current
        if rec is not None:
            per_site = rec.per_site_train if phase == "train" else rec.per_site_evaluate
            per_site.update({site_of(r): _flat(r) for r in records})
            if phase == "train":
                for site, m in per_site.items():
                    if keys.DP_EPSILON in m:
                        self.site_epsilon[site] = max(self.site_epsilon.get(site, 0.0), m[keys.DP_EPSILON])
            setattr(rec, phase, _flat(RecordDict({keys.METRICS: agg})))
        return agg

    # -- evaluate_fn hook: runs after each round ----------------------------------------
    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 or self._current is None:
            return None
        self._current.wall_time_s = time.perf_counter() - self._current.started
        self._current.aggregate_hash = arrays_digest(arrays)
        if self.client_privacy is not None:
            self._current.epsilon = self.client_privacy.spent_epsilon()
        elif self.site_epsilon:
            self._current.epsilon = max(self.site_epsilon.values())
        if self.on_round is not None:
            self.on_round(self._current)
        return None

    # -- checkpoint -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the monitor: every round so far, setup bytes, the sites' epsilon."""
        return {
            "rounds": [{k: v for k, v in dataclasses.asdict(r).items() if k != "started"} for r in self.rounds],
            "setup_bytes_sent": self.setup_bytes_sent,
            "setup_bytes_received": self.setup_bytes_received,
            "site_epsilon": dict(self.site_epsilon),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (a resumed run's history starts with the checkpointed rounds)."""
        self.rounds = [RoundRecord(**r) for r in state.get("rounds", [])]
        self.setup_bytes_sent = int(state.get("setup_bytes_sent", 0))
        self.setup_bytes_received = int(state.get("setup_bytes_received", 0))
        self.site_epsilon = {k: float(v) for k, v in state.get("site_epsilon", {}).items()}
        self._current = None

    def rejected_per_site(self) -> dict[str, int]:
        """Rounds in which each site's update was rejected (sites never rejected left out)."""
        counts: dict[str, int] = {}
        for r in self.rounds:
            for site in r.rejected:
                counts[site] = counts.get(site, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def bytes_sent(self) -> int:
        return self.setup_bytes_sent + sum(r.bytes_sent for r in self.rounds)

    @property
    def bytes_received(self) -> int:
        return self.setup_bytes_received + sum(r.bytes_received for r in self.rounds)


def arrays_digest(arrays: ArrayRecord) -> str:
    """``sha256:...`` over a model's arrays (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr.numpy())  # type: ignore[union-attr]
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def _flat(record: RecordDict) -> dict[str, float]:
    out: dict[str, float] = {}
    for metrics in record.metric_records.values():
        for k, v in metrics.items():
            if not isinstance(v, list):
                out[k] = float(v)
    return out
