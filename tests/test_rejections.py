"""No swallowed failure: undecodable updates are rejections, the quorum counts usable updates, the worker says why."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from flcore import keys
from flcore.config import RunConfig, apply_settings
from flcore.federation.codecs import LAYOUT, PACKED, encode
from flcore.federation.mods.compression import compression_mod
from flcore.federation.rounds import QuorumError, run_rounds
from flcore.federation.strategies import build_strategy
from flcore.federation.strategies.compressed import CompressedUpdates
from flcore.federation.strategies.screen import ScreenedUpdates, TooFewUpdates

pytestmark = pytest.mark.usefixtures("flower_task")

SITES = ["site_a", "site_b", "site_c", "site_d", "site_e"]


class Rejections:
    """An ``on_reject`` that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str]] = []

    def __call__(self, server_round: int, site: str, reason: str) -> None:
        self.calls.append((server_round, site, reason))


class CountingFedAvg(FedAvg):
    """Flower's FedAvg, counting the rounds it actually aggregates."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aggregated: list[int] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.aggregated.append(server_round)
        return super().aggregate_train(server_round, replies)


def record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def content(arrays: ArrayRecord, site: str, examples: int = 10) -> RecordDict:
    return RecordDict(
        {
            keys.ARRAYS: arrays,
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: examples}),
            keys.SITE: ConfigRecord({keys.SITE_NAME: site}),
        }
    )


class StubGrid:
    """Just enough of a Grid for Flower's node sampling: nodes 1..n."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


# --------------------------------------------------------------------------------------
# CompressedUpdates: an update that cannot be decoded is a recorded rejection
# --------------------------------------------------------------------------------------

GLOBAL = {"w": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "b": np.array([0.5, -0.5], np.float32)}
#: Each site's update, exact in float32, and its number of examples.
UPDATES = {
    "site_a": ({"w": np.full((2, 2), 1.0, np.float32), "b": np.array([2.0, 0.0], np.float32)}, 10),
    "site_b": ({"w": np.full((2, 2), -8.0, np.float32), "b": np.array([16.0, 16.0], np.float32)}, 20),
    "site_c": ({"w": np.full((2, 2), 3.0, np.float32), "b": np.array([-2.0, 4.0], np.float32)}, 30),
}


def _packed_reply(site: str, message: Message) -> Message:
    """``site``'s reply as compression_mod sends it: the packed update against the global model (codec none)."""
    update, examples = UPDATES[site]
    trained = record(**{k: GLOBAL[k] + update[k] for k in GLOBAL})
    packed, layout = encode(trained, "none", reference=record(**GLOBAL))
    body = content(trained, site, examples)
    del body[keys.ARRAYS]
    body[PACKED], body[LAYOUT] = packed, layout
    return Message(body, reply_to=message)


def _truncate_values(reply: Message) -> None:
    packed = reply.content[PACKED]
    assert isinstance(packed, ArrayRecord)
    packed["values"] = Array(packed["values"].numpy()[:-3])


def _cut_bytes(reply: Message) -> None:
    packed = reply.content[PACKED]
    assert isinstance(packed, ArrayRecord)
    good = packed["values"]
    packed["values"] = Array(dtype=good.dtype, shape=tuple(good.shape), stype=good.stype, data=b"")


def _foreign_array(reply: Message) -> None:
    packed = reply.content[PACKED]
    assert isinstance(packed, ArrayRecord)
    good = packed["values"]
    packed["values"] = Array(dtype=good.dtype, shape=tuple(good.shape), stype="torch.Tensor", data=good.data)


def _no_layout(reply: Message) -> None:
    del reply.content[LAYOUT]


CORRUPTIONS: dict[str, tuple[Callable[[Message], None], str]] = {
    "truncated": (_truncate_values, r"ValueError: decode: packed array 'values' should be 1-D float32 of length 6"),
    "empty bytes": (_cut_bytes, "EOFError"),
    "another serialisation": (_foreign_array, "TypeError: Unsupported serialization type"),
    "no layout": (_no_layout, "ValueError: expected an ArrayRecord 'arrays-packed' and a ConfigRecord 'packing'"),
}


def _compressed(on_reject: Rejections) -> tuple[CompressedUpdates, list[Message]]:
    """CompressedUpdates(ScreenedUpdates(FedAvg)) configured for round 1, and the three sites' packed replies."""
    screen = ScreenedUpdates(FedAvg(min_available_nodes=3), on_reject)
    strategy = CompressedUpdates(screen, "none", compress_broadcast=False, on_reject=screen.reject)
    messages = list(strategy.configure_train(1, record(**GLOBAL), ConfigRecord(), StubGrid(3)))  # type: ignore[arg-type]
    return strategy, [_packed_reply(site, m) for site, m in zip(UPDATES, messages, strict=True)]


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_an_undecodable_update_is_a_recorded_rejection(corruption: str) -> None:
    rejected = Rejections()
    strategy, replies = _compressed(rejected)
    corrupt, match = CORRUPTIONS[corruption]
    corrupt(replies[1])  # site_b, whose update would move the average most

    arrays, metrics = strategy.aggregate_train(1, replies)

    assert len(rejected.calls) == 1
    server_round, site, reason = rejected.calls[0]
    assert (server_round, site) == (1, "site_b")
    assert "cannot be decoded" in reason
    assert match in reason or pytest.fail(f"{match!r} not in {reason!r}")
    # Global model + the example-weighted mean of site_a's (10) and site_c's (30) updates, exactly.
    assert arrays is not None and metrics is not None
    np.testing.assert_array_equal(arrays["w"].numpy(), GLOBAL["w"] + (10 * 1.0 + 30 * 3.0) / 40)
    np.testing.assert_array_equal(arrays["b"].numpy(), GLOBAL["b"] + np.array([-1.0, 3.0], np.float32))


def test_every_update_undecodable_leaves_the_model_unchanged() -> None:
    rejected = Rejections()
    strategy, replies = _compressed(rejected)
    for reply in replies:
        _truncate_values(reply)
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert [(r, s) for r, s, _ in rejected.calls] == [(1, "site_a"), (1, "site_b"), (1, "site_c")]


def test_without_a_screen_the_wrapper_still_reports_and_flower_leaves_the_model() -> None:
    rejected = Rejections()
    strategy = CompressedUpdates(FedAvg(min_available_nodes=3), "none", compress_broadcast=False, on_reject=rejected)
    messages = list(strategy.configure_train(1, record(**GLOBAL), ConfigRecord(), StubGrid(3)))  # type: ignore[arg-type]
    replies = [_packed_reply(site, m) for site, m in zip(UPDATES, messages, strict=True)]
    for reply in replies:
        _no_layout(reply)
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert [s for _, s, _ in rejected.calls] == ["site_a", "site_b", "site_c"]


def test_build_strategy_routes_decode_failures_through_the_screen_to_on_reject() -> None:
    rejected = Rejections()
    cfg = apply_settings(RunConfig(), {"strategy": "fedavg", "update-compression": "float16"})
    strategy = build_strategy(cfg, 3, on_reject=rejected)
    assert isinstance(strategy, CompressedUpdates) and isinstance(strategy.strategy, ScreenedUpdates)
    assert strategy.on_reject == strategy.strategy.reject
    strategy.strategy.min_usable = 3  # as run_rounds sets it
    messages = list(strategy.configure_train(1, record(**GLOBAL), ConfigRecord(), StubGrid(3)))  # type: ignore[arg-type]
    replies = [_packed_reply(site, m) for site, m in zip(UPDATES, messages, strict=True)]
    _no_layout(replies[2])
    with pytest.raises(TooFewUpdates) as err:
        strategy.aggregate_train(1, replies)
    assert err.value.usable == ["site_a", "site_b"] and err.value.needed == 3
    assert list(err.value.rejected) == ["site_c"] and "cannot be decoded" in err.value.rejected["site_c"]
    assert [(r, s) for r, s, _ in rejected.calls] == [(1, "site_c")]


def test_the_screen_tells_a_rounds_rejections_once_and_only_for_that_round() -> None:
    screen = ScreenedUpdates(FedAvg(), min_usable=2)
    screen.reject(1, "site_a", "stale, from round 1")
    screen.reject(2, "site_b", "cannot be decoded")
    good = Message(content(record(**GLOBAL), "site_c"), dst_node_id=3, message_type="train")
    with pytest.raises(TooFewUpdates) as err:
        screen.aggregate_train(2, [good])
    assert err.value.rejected == {"site_b": "cannot be decoded"} and err.value.usable == ["site_c"]
    with pytest.raises(TooFewUpdates) as again:
        screen.aggregate_train(2, [good])
    assert again.value.rejected == {}


# --------------------------------------------------------------------------------------
# run_rounds: the quorum counts usable updates
# --------------------------------------------------------------------------------------


class RoundGrid:
    """Sites 1..n (``SITES``) that train by adding ``site_number`` to every weight.

    ``poison(server_round)`` gives the sites that send NaN in a round; ``silent`` never answer.
    ``through`` is a ClientApp mod the sites run (compression_mod), and ``tamper`` may alter a
    reply after it (a packed update damaged on the way).
    """

    def __init__(
        self,
        n: int,
        poison: Callable[[int], set[str]] = lambda r: set(),
        silent: frozenset[str] = frozenset(),
        through: Any = None,
        tamper: Callable[[str, Message], None] | None = None,
    ) -> None:
        self.names = {i + 1: SITES[i] for i in range(n)}
        self.poison = poison
        self.silent = silent
        self.through = through
        self.tamper = tamper
        self.train_rounds = 0

    def get_node_ids(self) -> list[int]:
        return list(self.names)

    def _answer(self, message: Message, context: Context) -> Message:
        site = self.names[message.metadata.dst_node_id]
        if message.metadata.message_type != "train":
            metrics = MetricRecord({keys.NUM_EXAMPLES: 10, "loss": 1.0})
            return Message(
                RecordDict({keys.METRICS: metrics, keys.SITE: ConfigRecord({keys.SITE_NAME: site})}), reply_to=message
            )
        start = message.content[keys.ARRAYS]
        assert isinstance(start, ArrayRecord)
        w = start["w"].numpy() + np.float32(message.metadata.dst_node_id)
        if site in self.poison(self.train_rounds):
            w[0, 0] = np.nan
        return Message(content(record(w=w), site), reply_to=message)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            self.train_rounds += 1
        context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
        replies = []
        for m in messages:
            site = self.names[m.metadata.dst_node_id]
            if site in self.silent:
                continue
            reply = self.through(m, context, self._answer) if self.through else self._answer(m, context)
            if self.tamper is not None and m.metadata.message_type == "train":
                self.tamper(site, reply)
            replies.append(reply)
        return replies


def _run(strategy: Any, grid: RoundGrid, min_sites: int, rounds: int = 2) -> tuple[ArrayRecord, list[int]]:
    done: list[int] = []
    final = run_rounds(
        strategy,
        grid,  # type: ignore[arg-type]
        record(w=np.zeros((2, 2), np.float32)),
        first_round=1,
        num_rounds=rounds,
        timeout=0.1,
        min_sites=min_sites,
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
        after_round=lambda r, arrays: done.append(r),
        site_names=lambda ids: [SITES[i - 1] for i in ids],
    )
    return final, done


@pytest.mark.parametrize("min_sites", [1, 4])
def test_a_nan_site_of_five_is_dropped_and_the_four_others_aggregated(min_sites: int) -> None:
    rejected = Rejections()
    rule = CountingFedAvg(min_available_nodes=5)
    grid = RoundGrid(5, poison=lambda r: {"site_c"})
    final, done = _run(ScreenedUpdates(rule, rejected), grid, min_sites)
    # Two rounds of the mean of +1, +2, +4, +5 (site_c, +3, rejected): 3 each.
    np.testing.assert_array_equal(final["w"].numpy(), np.full((2, 2), 6.0, np.float32))
    assert done == [1, 2] and rule.aggregated == [1, 2]
    assert [(r, s) for r, s, _ in rejected.calls] == [(1, "site_c"), (2, "site_c")]


def test_too_few_usable_updates_stop_the_run_before_the_rule_sees_them() -> None:
    rejected = Rejections()
    rule = CountingFedAvg(min_available_nodes=3)
    grid = RoundGrid(3, poison=lambda r: {"site_a", "site_c"} if r >= 2 else set())
    snapshots: list[np.ndarray] = []
    with pytest.raises(QuorumError) as err:
        run_rounds(
            ScreenedUpdates(rule, rejected),
            grid,  # type: ignore[arg-type]
            record(w=np.zeros((2, 2), np.float32)),
            first_round=1,
            num_rounds=3,
            timeout=0.1,
            min_sites=2,
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
            after_round=lambda r, arrays: snapshots.append(arrays["w"].numpy().copy()),
            site_names=lambda ids: [SITES[i - 1] for i in ids],
        )
    quorum = err.value
    assert (quorum.server_round, quorum.answered, quorum.needed, quorum.missing) == (2, 3, 2, [])
    assert sorted(quorum.rejected) == ["site_a", "site_c"]
    assert all("1 of 4 values are not finite (1 NaN" in why for why in quorum.rejected.values())
    message = str(quorum)
    assert message.startswith("Round 2: only 1 of 3 sampled sites sent a usable update (rejected: site_a: 1 of 4")
    assert "site_c: 1 of 4 values are not finite" in message and "fewer than min-sites=2" in message
    # Round 1 (mean of +1, +2, +3) completed and was handed on; round 2 never reached the rule.
    assert len(snapshots) == 1
    np.testing.assert_array_equal(snapshots[0], np.full((2, 2), 2.0, np.float32))
    assert rule.aggregated == [1]
    assert [(r, s) for r, s, _ in rejected.calls] == [(2, "site_a"), (2, "site_c")]


def test_the_quorum_error_names_the_rejected_and_the_silent_sites() -> None:
    grid = RoundGrid(4, poison=lambda r: {"site_b"}, silent=frozenset({"site_d"}))
    with pytest.raises(QuorumError) as err:
        _run(ScreenedUpdates(FedAvg(min_available_nodes=4)), grid, min_sites=3)
    assert err.value.missing == ["site_d"] and list(err.value.rejected) == ["site_b"]
    assert "only 2 of 4 sampled sites sent a usable update (rejected: site_b: " in str(err.value)
    assert "; no answer from site_d)" in str(err.value)


def test_with_compression_an_undecodable_and_a_nan_update_both_count_against_the_quorum() -> None:
    rejected = Rejections()
    cfg = apply_settings(RunConfig(), {"strategy": "fedavg", "update-compression": "float16", "min-sites": 2})
    strategy = build_strategy(cfg, 3, on_reject=rejected)

    def tamper(site: str, reply: Message) -> None:
        packed = reply.content[PACKED]
        assert isinstance(packed, ArrayRecord)
        values = packed["values"].numpy().copy()
        if site == "site_b":  # cut on the way
            packed["values"] = Array(values[:-1])
        elif site == "site_c":  # decodes to NaN
            values[0] = np.nan
            packed["values"] = Array(values)

    grid = RoundGrid(3, through=compression_mod, tamper=tamper)
    with pytest.raises(QuorumError) as err:
        _run(strategy, grid, min_sites=2)
    assert err.value.server_round == 1
    assert sorted(err.value.rejected) == ["site_b", "site_c"]
    assert "cannot be decoded (ValueError: decode: packed array 'values'" in err.value.rejected["site_b"]
    assert "not finite (1 NaN" in err.value.rejected["site_c"]
    assert sorted((r, s) for r, s, _ in rejected.calls) == [(1, "site_b"), (1, "site_c")]


# --------------------------------------------------------------------------------------
# End to end: attack=nan at more sites than the quorum allows (in-process federation)
# --------------------------------------------------------------------------------------


def test_nan_attackers_below_the_quorum_stop_a_federation_resumably(tmp_path: Path) -> None:
    from flcore import scenario
    from flcore.data.splitfiles import load_split
    from flcore.experiment.prepare import prepare_data
    from flcore.federation.checkpoint import read_checkpoint
    from flcore.federation.engines import federation_grid, save_splits
    from flcore.federation.monitor import arrays_digest
    from flcore.federation.plan import FederationPlan
    from flcore.federation.serverapp import run_federation
    from flcore.governance.audit import AuditTrail
    from flcore.governance.siteguard import SiteGovernance, split_facts

    sc = scenario.get("finance-five-banks")
    cfg, params = sc.configure({"num-server-rounds": 3, "local-epochs": 1, "strategy": "fedavg", "batch-size": 64})
    splits = prepare_data(sc, cfg, None, lambda _: None, params).splits[:3]
    paths = save_splits(splits, tmp_path / "splits")
    governance = [
        SiteGovernance(load_split(Path(p)).name, sc.policy, None, split_facts(load_split(Path(p)))) for p in paths
    ]
    cfg = dataclasses.replace(cfg, attack="nan", attack_sites=2, min_sites=2)
    grid = federation_grid(paths, governance, cfg)
    audit = AuditTrail(tmp_path / "audit.jsonl")
    plan = FederationPlan(sc.name, cfg, params, num_sites=3, connect_timeout_s=5, audit=audit)
    plan.checkpoint = tmp_path / "checkpoint.npz"

    with pytest.raises(QuorumError) as err:
        run_federation(grid, plan)

    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    attackers = next(e["sites"] for e in entries if e["kind"] == "attack-simulation")
    assert len(attackers) == 2
    assert err.value.server_round == 1 and sorted(err.value.rejected) == attackers
    assert "only 1 of 3 sampled sites sent a usable update" in str(err.value)
    lost = [e for e in entries if e["kind"] == "quorum-lost"]
    assert len(lost) == 1 and lost[0]["round"] == 1 and lost[0]["answered"] == 3 and lost[0]["needed"] == 2
    assert sorted(lost[0]["rejected"]) == attackers
    assert all("not finite" in why for why in lost[0]["rejected"].values())
    assert not [e for e in entries if e["kind"] in ("round", "checkpoint")]  # round 1 never completed
    assert not plan.checkpoint.exists()

    # With the quorum met (min-sites=1: the one honest bank), the same federation trains.
    cfg1 = dataclasses.replace(cfg, num_server_rounds=1, min_sites=1)
    plan1 = FederationPlan(sc.name, cfg1, params, num_sites=3, connect_timeout_s=5, checkpoint=tmp_path / "c1.npz")
    outcome = run_federation(federation_grid(paths, governance, cfg), plan1)
    assert outcome.monitor is not None and outcome.arrays is not None
    (only,) = outcome.monitor.rounds
    assert sorted(only.rejected) == attackers and sorted(only.per_site_train) == sorted(
        {s.name for s in splits} - set(attackers)
    )
    ckpt = read_checkpoint(tmp_path / "c1.npz")
    assert ckpt.round == 1 and only.aggregate_hash == arrays_digest(outcome.arrays)


# --------------------------------------------------------------------------------------
# The deployed ClientApp worker: says what it retries, gives up on what a retry cannot fix
# --------------------------------------------------------------------------------------


def _http_error(status: int, text: str = "") -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/runtime/acquire-task")
    return httpx.HTTPStatusError(
        f"{status}", request=request, response=httpx.Response(status, request=request, text=text)
    )


@pytest.mark.parametrize(
    ("err", "transient"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), True),
        (httpx.ReadTimeout("timed out"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
        (_http_error(503), True),
        (_http_error(401), False),
        (_http_error(403), False),
        (_http_error(404), False),
        (ValueError("Invalid protobuf response payload"), False),
        (RuntimeError("HTTP request already contains headers: x"), False),
    ],
)
def test_worker_sorts_transient_from_permanent_failures(err: Exception, transient: bool) -> None:
    from flcore.deploy.worker import transient_failure

    assert transient_failure(err) is transient


def test_worker_failures_are_logged_at_once_then_every_30_s_and_bounded() -> None:
    from flcore.deploy.worker import WorkerFailures

    now = [0.0]
    lines: list[str] = []
    failures = WorkerFailures(
        "127.0.0.1:9", give_up_after_s=100, log_every_s=30, say=lines.append, clock=lambda: now[0]
    )
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    for second in range(75):  # one failed request a second
        now[0] = float(second)
        assert failures.failed(refused)
    assert len(lines) == 3  # at 0 s, 30 s and 60 s
    assert "did not answer (ConnectError: [Errno 111] Connection refused); retrying" in lines[0]
    assert "still no answer from 127.0.0.1:9 after 30 s (31 failed requests" in lines[1]
    assert "after 60 s (61 failed requests" in lines[2]
    now[0] = 75.0
    failures.succeeded()
    assert "answers again (after 75 failed requests in 75 s)" in lines[3]
    failures.succeeded()  # a success without failures before it says nothing
    assert len(lines) == 4
    for second in range(200, 301):  # a new stretch: logged at once again, given up after 100 s
        now[0] = float(second)
        if not failures.failed(refused):
            break
    assert now[0] == 300.0 and "did not answer" in lines[4]
    message = failures.gave_up(refused, permanent=False)
    assert "failed for 100 s without a break (101 failed requests" in message and "\n" not in message


class FakeRuntime:
    """Flower's RuntimeHttpClient, faked: replays ``script`` (exceptions or "no task"), then the SuperNode ends."""

    def __init__(self, script: list[Exception | None]) -> None:
        self.script = list(script)
        self.supernode_alive = True
        self.calls = 0
        self.closed = False

    def AcquireTask(self, request: Any) -> Any:
        self.calls += 1
        if not self.script:  # the SuperNode goes away: the worker's loop ends
            self.supernode_alive = False
            return _NoTask()
        step = self.script.pop(0)
        if step is not None:
            raise step
        return _NoTask()

    def close(self) -> None:
        self.closed = True


class _NoTask:
    token = ""

    def HasField(self, name: str) -> bool:
        return False


def _worker(monkeypatch: pytest.MonkeyPatch, runtime: FakeRuntime, **kwargs: Any) -> tuple[int, list[str]]:
    """Run the worker against ``runtime`` (its SuperNode: pid 4242, no real process); exit code and stderr lines."""
    import flwr.supercore.runtime
    import psutil

    from flcore.deploy.worker import WorkerFailures, clientapp_worker

    class Factory:
        @staticmethod
        def from_server_address(**_: Any) -> FakeRuntime:
            return runtime

    monkeypatch.setattr(flwr.supercore.runtime, "RuntimeHttpClient", Factory)
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: pid == 4242 and runtime.supernode_alive)
    lines: list[str] = []
    failures = WorkerFailures("127.0.0.1:9", give_up_after_s=kwargs.pop("give_up_after_s", 60), say=lines.append)
    code = clientapp_worker(
        "127.0.0.1:9", 4242, poll_s=0.01, preload=kwargs.pop("preload", ()), retry_s=0.01, failures=failures
    )
    return code, lines


def test_worker_retries_a_starting_supernode_saying_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    runtime = FakeRuntime([refused, refused, refused, None])
    code, lines = _worker(monkeypatch, runtime)
    assert code == 0 and runtime.closed and runtime.calls == 5
    assert len(lines) == 2
    assert "did not answer (ConnectError" in lines[0] and "answers again (after 3 failed requests" in lines[1]


def test_worker_gives_up_at_once_on_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    from flcore.deploy.worker import WORKER_FAILED_EXIT

    runtime = FakeRuntime([_http_error(401, "unauthorized"), None])
    code, lines = _worker(monkeypatch, runtime)
    assert code == WORKER_FAILED_EXIT and runtime.calls == 1 and runtime.closed
    (message,) = lines
    assert "giving up on the SuperNode's Runtime API at 127.0.0.1:9" in message
    assert "a retry cannot fix (HTTP 401 Unauthorized: unauthorized)" in message and "\n" not in message


def test_worker_gives_up_after_failing_without_a_break(monkeypatch: pytest.MonkeyPatch) -> None:
    from flcore.deploy.worker import WORKER_FAILED_EXIT

    runtime = FakeRuntime([httpx.ConnectError("refused")] * 1000)
    code, lines = _worker(monkeypatch, runtime, give_up_after_s=0.2)
    assert code == WORKER_FAILED_EXIT and 2 <= runtime.calls < 1000
    assert "did not answer" in lines[0] and "without a break" in lines[-1]


def test_worker_that_cannot_import_the_clientapp_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from flcore.deploy.worker import WORKER_FAILED_EXIT

    runtime = FakeRuntime([])
    code, lines = _worker(monkeypatch, runtime, preload=("flcore_no_such_module",))
    assert code == WORKER_FAILED_EXIT and runtime.calls == 0
    (message,) = lines
    assert message.startswith("flsuite ClientApp worker: cannot import flcore_no_such_module (ModuleNotFoundError")


def test_site_join_stops_when_its_worker_gives_up_instead_of_restarting_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess

    from flcore.deploy import join as deploy

    started: list[list[str]] = []

    class FakeProcess:
        """The SuperNode runs on; the worker has already given up."""

        def __init__(self, cmd: list[str], **_: Any) -> None:
            started.append(cmd)
            self.worker = "clientapp-worker" in cmd
            self.pid = 4243 if self.worker else 4242
            self.returncode = deploy.WORKER_FAILED_EXIT if self.worker else None
            self.stdout: list[str] = []

        def poll(self) -> int | None:
            return self.returncode

        def wait(self, timeout: float | None = None) -> int:
            raise subprocess.TimeoutExpired("flower-supernode", timeout or 0)

    monkeypatch.setattr(deploy, "check_join", lambda opts, say: None)
    monkeypatch.setattr(deploy.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(deploy, "stop_tree", lambda proc, grace_s=10.0: None)
    said: list[str] = []
    opts = deploy.JoinOptions("127.0.0.1:9092", "finance", tmp_path, None, None, port=9, insecure=True)
    assert deploy.join(opts, said.append) == deploy.WORKER_FAILED_EXIT
    assert sum("clientapp-worker" in cmd for cmd in started) == 1  # not started again
    assert any("ClientApp worker gave up" in line for line in said)


# --------------------------------------------------------------------------------------
# Where failures used to vanish
# --------------------------------------------------------------------------------------


def test_krum_under_nan_loses_its_quorum_and_the_robustness_table_says_so(tmp_path: Path) -> None:
    from domains.finance.scenario import make_data
    from flcore import scenario
    from flcore.experiment.robustness import run_robustness

    make_data(tmp_path / "banks", seed=0, scale=0.15)
    result = run_robustness(
        scenario.get("finance-five-banks"),
        {"num-server-rounds": 1, "local-epochs": 1},
        ["krum"],
        ["nan"],
        data_dir=tmp_path / "banks",
        progress=lambda _: None,
        engine="inprocess",
    )
    clean, nan = result["table"]["krum"]["none"], result["table"]["krum"]["nan"]
    assert clean["stopped"] is None and clean["union"] is not None
    # Krum with krum-malicious=1 needs 2f+3 = 5 usable updates; the attacker's NaN leaves 4.
    assert nan["stopped"]["round"] == 1 and list(nan["stopped"]["rejected"]) == nan["attackers"]
    assert "only 4 of 5 sampled sites sent a usable update" in nan["stopped"]["reason"]
    assert nan["union"] is None and nan["ratio_to_clean"] is None and nan["holds"] is None


def test_an_unknown_engine_is_refused_before_any_work(tmp_path: Path) -> None:
    from flcore import scenario
    from flcore.exceptions import ConfigError
    from flcore.experiment.arms import run_experiment
    from flcore.experiment.robustness import run_robustness

    sc = scenario.get("finance-five-banks")
    cfg, params = sc.configure({})
    missing = tmp_path / "no-such-folder"  # read first, it would fail with another error
    message = r"Unknown federation engine 'ray'\. Choose one of: simulation, inprocess \("
    with pytest.raises(ConfigError, match=message):
        run_experiment(sc, cfg, params, data_dir=missing, progress=lambda _: None, engine="ray")
    with pytest.raises(ConfigError, match=message):
        run_robustness(sc, {}, ["fedavg"], ["nan"], data_dir=missing, progress=lambda _: None, engine="ray")


def test_robustness_records_a_cell_that_lost_its_quorum() -> None:
    from flcore.experiment.robustness import _stopped_cell, table_csv, table_markdown

    cfg = apply_settings(RunConfig(), {"strategy": "krum", "attack": "nan", "attack-sites": 1})
    err = QuorumError(1, 5, 5, [], "Round 1: only 4 of 5 sampled sites sent a usable update", {"bank_a": "NaN"})
    stopped = _stopped_cell(err, cfg, ["bank_a", "bank_b", "bank_c", "bank_d", "bank_e"], 0.0)
    assert stopped["stopped"] == {"round": 1, "rejected": {"bank_a": "NaN"}, "reason": str(err)}
    assert stopped["union"] is None and len(stopped["attackers"]) == 1
    stopped.update(ratio_to_clean=None, holds=None)
    clean = {
        "union": 0.5,
        "ratio_to_clean": 1.0,
        "holds": None,
        "rejected_updates": 0,
        "attackers": [],
        "stopped": None,
    }
    result = {
        "scenario": "s",
        "primary_metric": "pr_auc",
        "hold_threshold": 0.9,
        "attack_settings": {"sites": 1, "factor": 10.0, "noise_std": 1.0},
        "attacks": ["none", "nan"],
        "table": {"krum": {"none": clean, "nan": stopped}},
        "config": {"num-server-rounds": 1, "seed": 0},
        "data": {"source": "generated"},
    }
    assert "| krum | 0.500 | stopped in round 1 (quorum lost) |" in table_markdown(result)
    assert table_csv(result).splitlines()[2] == "krum,nan,pr_auc,,,,"


def test_a_booster_nested_too_deeply_is_a_problem_not_a_crash() -> None:
    from flcore.learning.xgb import booster_problem

    assert booster_problem(b"[" * 100_000) == "not XGBoost JSON (nested too deeply)"


def test_report_names_sites_of_an_unknown_scenario_plainly() -> None:
    from flcore.reporting.sections import site_noun

    assert site_noun("no-such-scenario") == "site"
    assert site_noun("finance-five-banks") == "bank"
