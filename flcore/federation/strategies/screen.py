"""The server's screen of site updates: a non-finite update never reaches the aggregation.

A site whose training diverged, whose export is corrupt, or which attacks the
federation can send NaN or infinite values. One of them poisons an average, a
trimmed mean and Krum's distances alike, and an XGBoost leaf of NaN makes every
prediction NaN. :class:`ScreenedUpdates` wraps every strategy the suite builds,
inside the compression wrapper (so it sees decoded updates) and outside the DP
wrapper and the aggregation rule: each training reply is checked before the rule
sees it, and a reply that fails is dropped and reported (site, round, reason).

The screen is the last place that sees every reply of a round before anything is
aggregated, so it also holds the round's quorum (:attr:`ScreenedUpdates.min_usable`,
set by :func:`flcore.federation.rounds.run_rounds` from ``min-sites``): with fewer usable updates
it raises :class:`TooFewUpdates` instead of handing them on, and neither the rule
nor the DP accountant sees the round. Without a quorum, a round in which every
reply is dropped leaves the global model as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import Strategy

from flcore.exceptions import TooFewUpdates
from flcore.federation.monitor import site_of
from flcore.federation.strategies.averaging import array_view
from flcore.federation.strategies.wrapper import StrategyWrapper
from flcore.learning.xgb import booster_problem, is_booster

#: ``on_reject(server_round, site, reason)``.
RejectFn = Callable[[int, str, str], None]


def update_problem(arrays: ArrayRecord) -> str | None:
    """Why a site's update cannot be aggregated, or ``None`` if it can.

    Floating-point arrays must be finite; a record of one ``uint8`` array is a
    serialised XGBoost booster (Flower's tree strategies) and must parse, with finite
    numbers only.
    """
    bad, nan, total, first = 0, 0, 0, None
    for name, arr in arrays.items():
        a = array_view(arr)  # type: ignore[arg-type]
        if np.issubdtype(a.dtype, np.floating):
            total += a.size
            with np.errstate(over="ignore", invalid="ignore"):
                total_sum = np.add.reduce(a, axis=None)
            if np.isfinite(total_sum):
                continue  # a finite sum has finite terms: one vectorised pass, no mask (overflow falls through)
            wrong = a[~np.isfinite(a)]
            if wrong.size:
                bad, nan, first = bad + wrong.size, nan + int(np.isnan(wrong).sum()), first or name
        elif is_booster(arrays):
            problem = booster_problem(a.tobytes())
            if problem is not None:
                return f"'{name}': {problem}"
    if bad:
        return f"{bad} of {total} values are not finite ({nan} NaN, {bad - nan} infinite; first in '{first}')"
    return None


class ScreenedUpdates(StrategyWrapper):
    """Strategy wrapper that drops training replies whose update is not finite, and holds the quorum.

    Parameters
    ----------
    strategy : Strategy
        The strategy (or DP wrapper) that aggregates the replies that pass.
    on_reject : callable, optional
        ``on_reject(server_round, site, reason)`` for each dropped reply (the
        monitor records it in the round's history and the audit trail).
    min_usable : int, default 0
        Usable updates a round needs to be aggregated; with fewer, :meth:`aggregate_train`
        raises :class:`TooFewUpdates`. :func:`flcore.federation.rounds.run_rounds` sets it to its
        ``min_sites``. With 0, a round without usable update returns ``(None, None)``.

    Notes
    -----
    An outer wrapper that drops replies itself (:class:`flcore.federation.strategies.compressed.CompressedUpdates`,
    for updates that cannot be decoded) reports them through :meth:`reject`, so that they
    are recorded like the screen's own and named when the quorum is lost.
    """

    def __init__(self, strategy: Strategy, on_reject: RejectFn | None = None, min_usable: int = 0) -> None:
        super().__init__(strategy)
        self.on_reject = on_reject
        self.min_usable = min_usable
        self._round = 0
        self._rejected: dict[str, str] = {}  # site -> reason, for round self._round

    def reject(self, server_round: int, site: str, reason: str) -> None:
        """Record that ``site``'s update of ``server_round`` is dropped, and pass it on to ``on_reject``.

        The screen calls it for each update it drops; an outer wrapper that drops updates
        itself calls it before :meth:`aggregate_train`, so that the quorum check names them too.
        """
        if server_round != self._round:
            self._round, self._rejected = server_round, {}
        self._rejected[site] = reason
        if self.on_reject is not None:
            self.on_reject(server_round, site, reason)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check each reply's arrays; aggregate those that pass if there are at least :attr:`min_usable`.

        Raises
        ------
        TooFewUpdates
            If fewer than :attr:`min_usable` replies carry a usable update (nothing is aggregated).
        """
        kept: list[Message] = []
        for reply in replies:
            if reply.has_error() or not reply.has_content():
                kept.append(reply)
                continue
            problem = next(
                (p for record in reply.content.array_records.values() if (p := update_problem(record))), None
            )
            if problem is None:
                kept.append(reply)
                continue
            site = site_of(reply.content, f"node {reply.metadata.src_node_id}")
            log(WARNING, "Round %d: rejected the update of %s: %s", server_round, site, problem)
            self.reject(server_round, site, problem)
        rejected = self._rejected if self._round == server_round else {}
        self._round, self._rejected = 0, {}  # the round's rejections are told once
        usable = [r for r in kept if not r.has_error()]
        if len(usable) < self.min_usable:
            sites = [site_of(r.content, f"node {r.metadata.src_node_id}") for r in usable]
            raise TooFewUpdates(server_round, sites, self.min_usable, rejected)
        if not usable:
            return None, None  # nothing usable: the global model stays as it was
        return self.strategy.aggregate_train(server_round, kept)
