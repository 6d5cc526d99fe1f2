"""Cross-device participation: simulated dropouts, their bookkeeping, and rounds that go on without them."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from flcore import keys
from flcore.config import RunConfig, to_json
from flcore.experiment.scoring import participation
from flcore.federation.mods.dropout import dropout_draw, dropout_mod
from flcore.federation.monitor import FederationMonitor, RoundRecord
from flcore.keys import RUN_JSON

pytestmark = pytest.mark.usefixtures("flower_task")


def message(kind: str, rate: float, server_round: int = 3, seed: int = 0) -> Message:
    cfg = RunConfig(dropout_rate=rate, seed=seed)
    config = ConfigRecord({RUN_JSON: to_json(cfg), keys.SERVER_ROUND: server_round})
    return Message(
        content=RecordDict({keys.CONFIG: config, keys.ARRAYS: ArrayRecord()}), dst_node_id=0, message_type=kind
    )


def context(node: int) -> Context:
    return Context(run_id=1, node_id=node, node_config={"partition-id": node}, state=RecordDict(), run_config={})


def answer(msg: Message, ctx: Context) -> Message:
    return Message(content=RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1})}), reply_to=msg)


def test_dropout_rate_zero_lets_every_node_answer() -> None:
    replies = [dropout_mod(message("train", 0.0), context(n), answer) for n in range(200)]
    assert not any(r.has_error() for r in replies)


def test_dropout_share_matches_the_rate_and_is_reproducible() -> None:
    def dropped(rate: float, server_round: int) -> list[int]:
        out = []
        for n in range(1000):
            reply = dropout_mod(message("train", rate, server_round), context(n), answer)
            if reply.has_error():
                assert reply.error.code == ErrorCode.NODE_UNAVAILABLE
                assert f"node {n} offline in round {server_round}" in reply.error.reason
                out.append(n)
        return out

    first = dropped(0.2, 3)
    assert 150 <= len(first) <= 250  # 1000 draws at p=0.2: mean 200, sd 12.6
    assert dropped(0.2, 3) == first  # same seed, round, node: same decision
    assert dropped(0.2, 4) != first  # a new round draws anew
    assert set(dropped(0.1, 3)) <= set(first)  # a lower rate drops a subset of the same devices


def test_an_offline_device_misses_that_rounds_evaluation_too() -> None:
    for n in range(100):
        train = dropout_mod(message("train", 0.3), context(n), answer).has_error()
        evaluate = dropout_mod(message("evaluate", 0.3), context(n), answer).has_error()
        assert train == evaluate


def test_queries_are_never_dropped() -> None:
    msg = message("query.feature_stats", 0.99)
    assert not any(dropout_mod(msg, context(n), answer).has_error() for n in range(50))


def test_rounds_drop_independent_sets_of_devices() -> None:
    # Independent draws at p = 0.2 over 1000 devices: two rounds share about p^2 x 1000 = 40
    # dropped devices (sd ~6); a linear hash such as CRC32 gives 0 or far more for some pairs.
    dropped = [{n for n in range(1000) if dropout_draw(0, r, str(n)) < 0.2} for r in range(1, 9)]
    for i in range(len(dropped)):
        for j in range(i + 1, len(dropped)):
            assert 15 <= len(dropped[i] & dropped[j]) <= 70, (i + 1, j + 1, len(dropped[i] & dropped[j]))


def test_draw_is_uniform() -> None:
    draws = np.array([dropout_draw(0, 1, str(n)) for n in range(5000)])
    assert 0.0 <= draws.min() and draws.max() < 1.0
    assert abs(draws.mean() - 0.5) < 0.02


def test_monitor_counts_dropouts_and_failures_apart() -> None:
    monitor = FederationMonitor()
    sent = message("train", 0.5)
    ok = answer(sent, context(0))
    offline = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="offline"), reply_to=sent)
    crashed = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="boom"), reply_to=sent)
    # Six sampled, five messages came back: one never answered at all (timed out).
    monitor.record_exchange(time.perf_counter(), 1, "train", 6, 600, [ok, ok, ok, offline, crashed], 300)
    rec = monitor.rounds[0]
    assert (rec.sampled, rec.replies, rec.failures, rec.dropouts) == (6, 3, 3, 2)  # offline + timed out
    assert rec.bytes_sent_train == 600 and rec.bytes_received_train == 300
    monitor.record_exchange(time.perf_counter(), 1, "evaluate", 4, 100, [ok, offline], 10)
    assert (rec.evaluate_sampled, rec.evaluate_replies) == (4, 1)
    row = rec.to_json()
    assert row["sites_dropped"] == 2 and row["sites_failed"] == 3 and row["evaluate_replied"] == 1


def test_participation_counts_epochs_actually_trained() -> None:
    rounds = [RoundRecord(1, sampled=3, replies=2, failures=1, dropouts=1), RoundRecord(2, sampled=3, replies=3)]
    rounds[0].per_site_train = {"a": {}, "b": {}}
    rounds[1].per_site_train = {"a": {}, "c": {}, "d": {}}
    out = participation(rounds, ["a", "b", "c", "d", "e"], local_epochs=2)
    assert out["sampled"] == 6 and out["replied"] == 5 and out["dropped"] == 1
    assert out["reply_rate"] == pytest.approx(5 / 6)
    # a trained twice, b c d once, e never: epochs 4, 2, 2, 2, 0.
    assert out["epochs_per_site"] == {"min": 0, "mean": 2.0, "max": 4, "never_trained": 1}


def test_dropout_rate_is_validated() -> None:
    from flcore.config import apply_settings
    from flcore.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"'dropout-rate' setting .* range \[0\.0, 1\.0\)\. Got 1\.0"):
        apply_settings(RunConfig(), {"dropout-rate": "1"})
    assert json.loads(to_json(apply_settings(RunConfig(), {"dropout-rate": "0.25"})))["dropout-rate"] == 0.25
