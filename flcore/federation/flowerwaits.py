"""Flower 1.41's fixed waits, shortened: the polls and back-offs that made a deployed round last 12-19 s.

On loopback a deployed round trains for a fraction of a second and used to spend the rest
waiting in Flower's own loops, each one polling something that is usually ready much
sooner (benchmarks/deployment.py, docs/benchmarks.md section 5):

* the ServerApp's grid (``flwr.superlink.grid.http_grid``) pulls replies every 3 s; the
  suite's :func:`exchange` pushes and then pulls every :data:`REPLY_POLL_S`;
* whoever pulls a message's objects (the ServerApp a reply's, the SuperNode and the ClientApp
  task a message's) often asks before the sender has pushed them all, and Flower's
  ``pull_objects`` then backs off 1 s, 2 s, 4 s ... per object: :func:`shorten_pull_backoff`
  starts it at :data:`PULL_INITIAL_BACKOFF_S`, capped at :data:`PULL_BACKOFF_CAP_S`;
* the SuperNode's own loops (:mod:`flcore.deploy.supernode`).

Each patch replaces a module attribute in the running process only, and is checked against
the Flower version ``constraints.txt`` pins (:data:`CHECKED_FLWR_VERSION`): a missing patch
point raises :class:`FlowerPatchError` naming it, so another Flower version fails loudly
instead of running slow. ``tests/test_fast_poll.py`` checks every patch point.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from types import ModuleType
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

#: Seconds between two pulls for the replies of an exchange (Flower 1.41's HttpGrid: 3 s). A pull that finds
#: nothing is one small request to the SuperLink.
REPLY_POLL_S = 0.1
#: First back-off when an object of a message is not there yet (Flower 1.41: 1 s, doubling).
PULL_INITIAL_BACKOFF_S = 0.1
#: Longest back-off between two pulls of one object (Flower 1.41: 10 s).
PULL_BACKOFF_CAP_S = 0.5
#: The Flower version the patch points were read from.
CHECKED_FLWR_VERSION = "1.41.0"
#: The module of the deployment's Grid (the ServerApp's, talking to the SuperLink's Runtime API).
HTTP_GRID = "flwr.superlink.grid.http_grid"


class FlowerPatchError(RuntimeError):
    """A patch point is not in the installed Flower."""


def missing(where: str) -> FlowerPatchError:
    """The error for a patch point ``where`` that the installed Flower lacks."""
    import flwr

    return FlowerPatchError(
        f"{where} is not in the installed Flower {getattr(flwr, '__version__', '?')} (the suite's shortened "
        f"waits were written for flwr {CHECKED_FLWR_VERSION}, the version constraints.txt pins); install that "
        "version, or bring flcore/federation/flowerwaits.py and flcore/deploy/supernode.py up to date."
    )


def require(module: ModuleType, name: str) -> Any:
    """``module.name``, or :class:`FlowerPatchError` naming it."""
    if not hasattr(module, name):
        raise missing(f"{module.__name__}.{name}")
    return getattr(module, name)


def shorten_pull_backoff(module: ModuleType, name: str) -> Any:
    """Make ``module.name``, one of Flower's object-pull functions, back off from :data:`PULL_INITIAL_BACKOFF_S`.

    The function (``pull_objects`` or ``pull_and_inflate_object_from_tree`` of
    ``flwr.supercore.inflatable.inflatable_utils``, as ``module`` imported it) is replaced by itself with
    ``initial_backoff`` and ``backoff_cap`` bound to :data:`PULL_INITIAL_BACKOFF_S` and
    :data:`PULL_BACKOFF_CAP_S`; idempotent. Returns the new value.
    """
    pull = require(module, name)
    if isinstance(pull, functools.partial):
        return pull
    params = inspect.signature(pull).parameters
    if "initial_backoff" not in params or "backoff_cap" not in params:
        raise missing(f"the initial_backoff and backoff_cap parameters of {module.__name__}.{name}")
    patched = functools.partial(pull, initial_backoff=PULL_INITIAL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S)
    setattr(module, name, patched)
    return patched


def is_deployment(grid: Grid) -> bool:
    """Whether ``grid`` is Flower's deployment Grid (SuperLink and SuperNodes), not a simulation's."""
    return type(grid).__module__ == HTTP_GRID


def exchange(grid: Grid, messages: list[Message], timeout: float | None) -> list[Message]:
    """Push ``messages``, then pull their replies every :data:`REPLY_POLL_S` seconds.

    As Flower's ``Grid.send_and_receive``: until every message has its reply or ``timeout`` seconds
    have passed (``None``: no limit); the replies in the order they came. A grid that only answers
    ``send_and_receive`` (the in-process engine's ``LocalGrid``: its ``push_messages`` raises
    ``NotImplementedError``) is asked that way. With the deployment's grid, the ServerApp's object
    pulls back off from :data:`PULL_INITIAL_BACKOFF_S` too: the SuperLink hands out a reply while its
    site still pushes the reply's objects.
    """
    if is_deployment(grid):
        shorten_pull_backoff(sys.modules[HTTP_GRID], "pull_objects")
    try:
        pushed = grid.push_messages(messages)
    except NotImplementedError:
        return list(grid.send_and_receive(messages, timeout=timeout))
    pending = {i for i in pushed if i}  # Flower marks a message it could not push with None
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while deadline is None or time.monotonic() < deadline:
        pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        pending.difference_update(m.metadata.reply_to_message_id for m in pulled)
        if not pending:
            break
        time.sleep(REPLY_POLL_S)
    return replies
