"""Flower's SuperNode with short polls: ``python -m flcore.deploy.supernode <flower-supernode arguments>``.

Runs Flower's own ``flower-supernode`` entry point (``flwr.supernode.cli.flower_supernode``) with the
same arguments, after patching, in this process only, the fixed waits of Flower 1.41's SuperNode
(:mod:`flcore.federation.flowerwaits` says why, and holds the patches the ServerApp and the ClientApp
worker share):

``flwr.supernode.start_client_internal.time``
    The module's ``time`` becomes a proxy (:class:`CappedSleep`) whose ``sleep`` lasts at most
    :data:`SLEEP_CAP_S`. The module sleeps in three places: ``time.sleep(3)`` in the main loop of
    ``start_client_internal`` when the SuperLink had no message for the node (so a message waited up to
    3 s before the node even asked for it), and ``time.sleep(0.5)`` twice in ``_push_messages``, while
    waiting for the ClientApp's reply and for its objects in the node's own store. Every one of them
    polls: nothing is lost by asking sooner, only a request more (an empty pull from the SuperLink).
``flwr.supernode.start_client_internal.pull_objects``
    The short back-off of :func:`~flcore.federation.flowerwaits.shorten_pull_backoff`: the node pulls a
    message as soon as the ServerApp has pushed it, often before the ServerApp has pushed its objects.
``HEARTBEAT_DEFAULT_INTERVAL`` in ``flwr.supernode.fleet_http_connection`` and ``flwr.supercore.heartbeat``
    :data:`HEARTBEAT_INTERVAL_S` (10 s, the least the SuperLink accepts: ``HEARTBEAT_MIN_INTERVAL``)
    instead of 30 s: the interval the node announces to the SuperLink (``ActivateNode``,
    ``SendNodeHeartbeat``) and the period of its heartbeat thread. The SuperLink marks a node offline
    after ``HEARTBEAT_PATIENCE`` (2) intervals without one, so a site that was killed is named absent,
    and may join again, after about 20 s instead of about 60 s.

:func:`apply_patches` raises :class:`~flcore.federation.flowerwaits.FlowerPatchError`, naming what it
did not find, when a patch point is missing, as it may be in another Flower version.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from flcore.federation.flowerwaits import missing, require, shorten_pull_backoff

#: Longest sleep of the SuperNode's polling loops (Flower 1.41: 3 s between pulls when idle, 0.5 s for replies).
#: 0.1 s measured no faster on loopback (2 cores), for 2.5 times the idle requests to the SuperLink.
SLEEP_CAP_S = 0.25
#: Heartbeat interval the SuperNode announces and keeps (Flower 1.41: 30 s; the SuperLink accepts 10 s or more).
HEARTBEAT_INTERVAL_S = 10


class CappedSleep:
    """Stands in for the ``time`` module of one Flower module: the same, except that ``sleep`` is capped."""

    def __init__(self, cap_s: float, real: ModuleType = time) -> None:
        self.cap_s = cap_s
        self._real = real

    def sleep(self, seconds: float) -> None:
        self._real.sleep(min(seconds, self.cap_s))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def apply_patches() -> dict[str, Any]:
    """Patch the installed Flower's SuperNode in this process, as the module docstring says; idempotent.

    Returns what each patch point now holds, by its dotted name. Raises :class:`SupernodePatchError`
    when one is missing.
    """
    import flwr.supercore.heartbeat as heartbeat
    import flwr.supernode.fleet_http_connection as fleet_connection
    import flwr.supernode.start_client_internal as sci
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL

    # The main loop and _push_messages call time.sleep through the module's `time`: replace that object.
    for function in ("start_client_internal", "_push_messages"):
        if "time.sleep(" not in inspect.getsource(require(sci, function)):
            raise missing(f"a time.sleep( call in {sci.__name__}.{function}")
    current_time = require(sci, "time")
    if not isinstance(current_time, CappedSleep):
        if current_time is not time:
            raise missing(f"{sci.__name__}.time as the time module")
        sci.time = CappedSleep(SLEEP_CAP_S)  # type: ignore[assignment]

    shorten_pull_backoff(sci, "pull_objects")

    interval = max(HEARTBEAT_INTERVAL_S, HEARTBEAT_MIN_INTERVAL)
    for module in (fleet_connection, heartbeat):
        require(module, "HEARTBEAT_DEFAULT_INTERVAL")
        module.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[attr-defined]

    return {
        f"{sci.__name__}.time": sci.time,
        f"{sci.__name__}.pull_objects": sci.pull_objects,
        f"{fleet_connection.__name__}.HEARTBEAT_DEFAULT_INTERVAL": fleet_connection.HEARTBEAT_DEFAULT_INTERVAL,
        f"{heartbeat.__name__}.HEARTBEAT_DEFAULT_INTERVAL": heartbeat.HEARTBEAT_DEFAULT_INTERVAL,
    }


def supernode_command_prefix() -> list[str]:
    """The start of a command line that runs this patched SuperNode, in place of ``flower-supernode``."""
    return [sys.executable, "-m", "flcore.deploy.supernode"]


def main(entry: Callable[[], None] | None = None) -> None:
    """Patch, then run Flower's ``flower-supernode`` entry point on this process's arguments."""
    apply_patches()
    if entry is None:
        from flwr.supernode.cli import flower_supernode

        entry = flower_supernode
    sys.argv[0] = "flower-supernode"  # Flower's argument parser names itself after it
    entry()


if __name__ == "__main__":
    main()
