"""An in-process Flower Grid that hands messages straight to a ClientApp (no Ray, no network).

Fast enough to run whole federations in unit tests; nodes can be taken down to
play dropouts, as a SuperLink does for a node that stopped answering.

:func:`in_process_simulation` stands in for ``flcore.federation.engines.run_federated_simulation``
(monkeypatch it) to run the CLI and the harness end to end without Ray.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid

if TYPE_CHECKING:
    from flcore.config import RunConfig
    from flcore.data.site import SiteSplit
    from flcore.federation.app import FederationOutcome
    from flcore.governance.siteguard import SiteGovernance


class LocalGrid(Grid):
    """``num_nodes`` virtual SuperNodes (node ids 101, 102, ...), node ``i`` with ``partition-id`` ``i``."""

    def __init__(self, client_app: Any, num_nodes: int) -> None:
        self.app = client_app
        self.contexts = {
            101 + i: Context(
                run_id=1, node_id=101 + i, node_config={"partition-id": i}, state=RecordDict(), run_config={}
            )
            for i in range(num_nodes)
        }
        self.down: set[int] = set()  # disconnected: not listed, never answer
        self.silent: set[int] = set()  # still listed as connected, but never answer (a timeout)
        self.sent: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.down]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            self.sent.append(msg)
            dst = msg.metadata.dst_node_id
            if dst in self.down or dst in self.silent:
                continue
            # Each node gets its own copy, as after a trip through the SuperLink.
            incoming = Message(copy.deepcopy(msg.content), dst_node_id=dst, message_type=msg.metadata.message_type)
            incoming.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            incoming.metadata.__dict__["_src_node_id"] = 0
            reply = self.app(incoming, self.contexts[dst])
            reply.metadata.__dict__["_src_node_id"] = dst
            replies.append(reply)
        return replies

    # -- unused by the suite's ServerApp -------------------------------------------------
    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def set_run(self, run: Any) -> None:
        pass

    @property
    def run(self) -> Any:
        return None


def save_splits(splits: list[Any], root: Path) -> list[str]:
    """Write prepared site splits under ``root`` as the simulation does; their paths, in order."""
    from flcore.federation.engines import save_splits as write

    return write(splits, root)


def federation_grid(paths: list[str], governance: list[Any], *, simulate_attack: bool = False) -> LocalGrid:
    """A LocalGrid of the suite's ClientApp, virtual node ``i`` serving the split ``paths[i]``."""
    from flcore.federation.app import make_client_app, prepared_governance, prepared_site_loader

    app = make_client_app(
        load_site=prepared_site_loader(paths),
        torch_threads=1,
        governance=prepared_governance(governance),
        simulate_attack=simulate_attack,
    )
    return LocalGrid(app, len(paths))


def in_process_simulation(
    scenario: str,
    cfg: RunConfig,
    params: object,
    splits: list[SiteSplit],
    workdir: Path,
    on_round: Callable[[Any], None] | None = None,
    governance: list[SiteGovernance] | None = None,
    run_id: str | None = None,
    audit: Any = None,
    checkpoint: Path | None = None,
    resume: Any = None,
    meta: dict[str, Any] | None = None,
) -> FederationOutcome:
    """flcore.federation.engines.run_federated_simulation without Ray: the same apps, on the in-process LocalGrid.

    Takes the same arguments, so the round callback, audit trail and checkpoint
    behave as under the simulation engine.
    """
    from flcore.federation.app import run_federation
    from flcore.federation.engines import prepare_federation

    paths, governance, plan = prepare_federation(
        scenario,
        cfg,
        params,
        splits,
        workdir,
        governance,
        run_id=run_id,
        meta=meta,
        connect_timeout_s=5,
        on_round=on_round,
        audit=audit,
        checkpoint=checkpoint,
        resume=resume,
    )
    grid = federation_grid(paths, governance, simulate_attack=cfg.attack != "none")
    return run_federation(grid, plan)


class RecordingEngine:
    """Stands in for flcore.federation.engines.run_federated_simulation and records (strategy, seed) per federation."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    @property
    def seeds(self) -> list[int]:
        return [seed for _, seed in self.calls]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cfg = args[1]
        self.calls.append((cfg.strategy, cfg.seed))
        return in_process_simulation(*args, **kwargs)


@contextlib.contextmanager
def recording_engine(cache: Path) -> Iterator[RecordingEngine]:
    """The in-process engine in place of Ray, with Flower's task identity set (as conftest's flower_task does)."""
    import pytest
    from flwr.supercore.task_identity import TaskIdentity

    from flcore.federation import engines as simulation

    fake = RecordingEngine()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simulation, "run_federated_simulation", fake)
        for key in ("_task_id", "_run_id", "_node_id"):  # undone afterwards
            mp.setattr(TaskIdentity, key, 1 if key != "_node_id" else 0)
        mp.setenv("FLSUITE_CACHE", str(cache))
        yield fake
