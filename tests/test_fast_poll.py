"""Short polls of a deployment: the SuperNode's patch points (flcore.deploy.supernode) and MonitoredGrid's pulls."""

from __future__ import annotations

import functools
import inspect
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any

import flwr.supercore.heartbeat as heartbeat
import flwr.superlink.grid.http_grid as http_grid
import flwr.supernode.fleet_http_connection as fleet_connection
import flwr.supernode.runtime.run_clientapp as run_clientapp
import flwr.supernode.start_client_internal as sci
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import HEARTBEAT_MIN_INTERVAL
from flwr.supercore.inflatable import inflatable_utils

from flcore import keys
from flcore.deploy import supernode
from flcore.federation import flowerwaits
from flcore.federation.grid import MonitoredGrid
from flcore.federation.monitor import FederationMonitor

# -- the SuperNode's patch points ----------------------------------------------------------------------------


@pytest.fixture
def restore_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test patches in Flower's modules is put back afterwards (setattr to the same value)."""
    for module, name in [
        (sci, "time"),
        (sci, "pull_objects"),
        (fleet_connection, "HEARTBEAT_DEFAULT_INTERVAL"),
        (heartbeat, "HEARTBEAT_DEFAULT_INTERVAL"),
        (run_clientapp, "pull_and_inflate_object_from_tree"),
        (http_grid, "pull_objects"),
    ]:
        monkeypatch.setattr(module, name, getattr(module, name))


def test_patch_points_exist_in_installed_flower() -> None:
    # The module-level objects the patch replaces, as Flower 1.41 has them (unpatched in a fresh process).
    assert sci.time is time or isinstance(sci.time, supernode.CappedSleep)
    for function in (sci.start_client_internal, sci._push_messages):
        assert "time.sleep(" in inspect.getsource(function)
    pulls = [
        (sci, "pull_objects", inflatable_utils.pull_objects),
        (http_grid, "pull_objects", inflatable_utils.pull_objects),
        (run_clientapp, "pull_and_inflate_object_from_tree", inflatable_utils.pull_and_inflate_object_from_tree),
    ]
    for module, name, original in pulls:
        current = getattr(module, name)
        assert current is original or (isinstance(current, functools.partial) and current.func is original)
        assert {"initial_backoff", "backoff_cap"} <= set(inspect.signature(original).parameters)
    assert isinstance(fleet_connection.HEARTBEAT_DEFAULT_INTERVAL, int)
    assert isinstance(heartbeat.HEARTBEAT_DEFAULT_INTERVAL, int)
    assert supernode.HEARTBEAT_INTERVAL_S >= HEARTBEAT_MIN_INTERVAL


def test_apply_patches_caps_sleeps_backoff_and_heartbeat(restore_flower: None) -> None:
    applied = supernode.apply_patches()
    assert isinstance(sci.time, supernode.CappedSleep)
    assert sci.time.monotonic is time.monotonic  # everything but sleep is the time module's
    assert isinstance(sci.pull_objects, functools.partial)
    assert sci.pull_objects.func is inflatable_utils.pull_objects
    assert sci.pull_objects.keywords == {
        "initial_backoff": flowerwaits.PULL_INITIAL_BACKOFF_S,
        "backoff_cap": flowerwaits.PULL_BACKOFF_CAP_S,
    }
    assert fleet_connection.HEARTBEAT_DEFAULT_INTERVAL == supernode.HEARTBEAT_INTERVAL_S == 10
    assert heartbeat.HEARTBEAT_DEFAULT_INTERVAL == 10
    assert applied["flwr.supernode.start_client_internal.time"] is sci.time
    # Idempotent: a second call leaves the same objects in place.
    patched_time, patched_pull = sci.time, sci.pull_objects
    supernode.apply_patches()
    assert sci.time is patched_time and sci.pull_objects is patched_pull


def test_capped_sleep_caps_only_long_sleeps() -> None:
    slept: list[float] = []

    class FakeTime:
        def sleep(self, seconds: float) -> None:
            slept.append(seconds)

        def time(self) -> float:
            return 42.0

    capped = supernode.CappedSleep(0.25, FakeTime())  # type: ignore[arg-type]
    capped.sleep(3)
    capped.sleep(0.5)
    capped.sleep(0.1)
    assert slept == [0.25, 0.25, 0.1]
    assert capped.time() == 42.0


def test_missing_patch_point_is_named(monkeypatch: pytest.MonkeyPatch, restore_flower: None) -> None:
    monkeypatch.delattr(sci, "pull_objects")
    with pytest.raises(flowerwaits.FlowerPatchError, match=r"flwr\.supernode\.start_client_internal\.pull_objects"):
        supernode.apply_patches()
    monkeypatch.setattr(sci, "pull_objects", inflatable_utils.pull_objects, raising=False)
    monkeypatch.delattr(heartbeat, "HEARTBEAT_DEFAULT_INTERVAL")
    with pytest.raises(flowerwaits.FlowerPatchError, match="HEARTBEAT_DEFAULT_INTERVAL"):
        supernode.apply_patches()


def test_shorten_pull_backoff_needs_the_backoff_parameters() -> None:
    module = type(sys)("fake_flower_module")
    module.pull = lambda object_ids, pull_object_fn: {}  # type: ignore[attr-defined]
    with pytest.raises(flowerwaits.FlowerPatchError, match="initial_backoff and backoff_cap"):
        flowerwaits.shorten_pull_backoff(module, "pull")


def test_worker_and_serverapp_pull_functions_take_the_short_backoff(restore_flower: None) -> None:
    for module, name in [(run_clientapp, "pull_and_inflate_object_from_tree"), (http_grid, "pull_objects")]:
        patched = flowerwaits.shorten_pull_backoff(module, name)
        assert getattr(module, name) is patched
        assert patched.keywords["initial_backoff"] == flowerwaits.PULL_INITIAL_BACKOFF_S


def test_main_patches_before_running_flower(restore_flower: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "argv", ["whatever", "--superlink", "127.0.0.1:9092"])
    supernode.main(entry=lambda: seen.append((sci.time, sys.argv[0])))
    assert isinstance(seen[0][0], supernode.CappedSleep)
    assert seen[0][1] == "flower-supernode"


def test_supernode_command_prefix() -> None:
    assert supernode.supernode_command_prefix() == [sys.executable, "-m", "flcore.deploy.supernode"]


# -- MonitoredGrid.send_and_receive over push_messages / pull_messages -------------------------------------------


needs_task = pytest.mark.usefixtures("flower_task")  # Flower builds Messages only with a task identity


class FakeHttpGrid:
    """A grid whose replies arrive over several pulls: node ``n`` answers on pull number ``delays[n]``."""

    def __init__(self, delays: dict[int, int | None]) -> None:
        self.delays = delays  # None: never answers
        self.pushed: list[Message] = []
        self.pulls = 0
        self.send_and_receive_calls = 0

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.pushed.append(m)
            ids.append(m.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        wanted = set(message_ids)
        out = []
        for m in self.pushed:
            delay = self.delays[m.metadata.dst_node_id]
            if m.metadata.message_id in wanted and delay is not None and delay == self.pulls:
                site = ConfigRecord({keys.SITE_NAME: f"site-{m.metadata.dst_node_id}"})
                out.append(Message(RecordDict({keys.METRICS: MetricRecord({"x": 1.0}), keys.SITE: site}), reply_to=m))
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        self.send_and_receive_calls += 1
        return []


def _messages(nodes: Iterable[int]) -> list[Message]:
    config = ConfigRecord({keys.SERVER_ROUND: 1})
    return [Message(RecordDict({"config": config}), dst_node_id=n, message_type="evaluate") for n in nodes]


@needs_task
def test_send_and_receive_pulls_until_every_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowerwaits, "REPLY_POLL_S", 0.001)
    inner = FakeHttpGrid({3: 1, 1: 4, 2: 2})
    grid = MonitoredGrid(inner, FederationMonitor())  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(_messages([1, 2, 3]), timeout=None))
    assert inner.pulls == 4 and inner.send_and_receive_calls == 0
    assert [r.metadata.src_node_id for r in replies] == [1, 2, 3]  # in site order
    assert {r.metadata.reply_to_message_id for r in replies} == {m.metadata.message_id for m in inner.pushed}


@needs_task
def test_send_and_receive_respects_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowerwaits, "REPLY_POLL_S", 0.01)
    inner = FakeHttpGrid({1: 1, 2: None})
    grid = MonitoredGrid(inner, FederationMonitor())  # type: ignore[arg-type]
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(_messages([1, 2]), timeout=0.3))
    elapsed = time.monotonic() - t0
    assert [r.metadata.src_node_id for r in replies] == [1]
    assert 0.3 <= elapsed < 2.0
    assert inner.pulls > 2  # polled on the short interval, not Flower's 3 s


@needs_task
def test_send_and_receive_zero_timeout_does_not_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    inner = FakeHttpGrid({1: 1})
    grid = MonitoredGrid(inner, FederationMonitor())  # type: ignore[arg-type]
    assert list(grid.send_and_receive(_messages([1]), timeout=0)) == []
    assert len(inner.pushed) == 1 and inner.pulls == 0  # as Flower's send_and_receive


@needs_task
def test_send_and_receive_falls_back_for_an_in_process_grid() -> None:
    class InProcess(FakeHttpGrid):
        def push_messages(self, messages: Iterable[Message]) -> list[str]:
            raise NotImplementedError

    inner = InProcess({1: 1})
    grid = MonitoredGrid(inner, FederationMonitor())  # type: ignore[arg-type]
    assert list(grid.send_and_receive(_messages([1]), timeout=1.0)) == []
    assert inner.send_and_receive_calls == 1
