"""``fedxgb-hist``: XGBoost's own distributed ``hist`` learner across the sites, one session of K trees a round.

Flower's tree strategies merge whole boosters that each site grew on its own rows
(bagging) or pass one booster round the sites (cyclic): each tree sees one site's
data. Here every tree sees every site's data, as in NVIDIA FLARE's histogram-based
federated XGBoost: the ServerApp starts XGBoost's communicator for the round
(:mod:`flcore.federation.collective`), every site's ClientApp joins it with only its
own rows (:mod:`flcore.learning.xgbsession`), and XGBoost sums the sites' quantile
sketches once and their gradient/hessian histograms at every tree level. The trees
are the ones pooled training would grow on the same cuts; no row leaves a site.

Every site ends the session with the same ensemble and sends it back; the round's
model is the ensemble the sites agree on (a site that sends another is rejected).
A session needs every site it started with: if one fails, the others fail with it,
and the round is tried again (:attr:`FedXgbHist.round_attempts`) with the sites
connected then.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flcore import keys
from flcore.federation.collective import COLLECTIVE, Session, SessionOpener
from flcore.federation.strategies.screen import RejectFn


class FedXgbHist(FedAvg):
    """Histogram-based federated XGBoost: every round, all connected sites grow ``local-epochs`` trees together.

    Parameters
    ----------
    open_session : callable, optional
        ``open_session(sites) -> Session`` (None only to check the settings): starts the round's communicator for the
        sites, in rank order (sorted by name, so ranks do not depend on node ids).
    on_disagree : callable, optional
        ``on_disagree(server_round, site, reason)`` for a site whose ensemble differs
        from the one the others agree on.
    **kwargs
        Flower's ``FedAvg`` arguments (metric aggregation, minima).
    """

    #: Attempts of a round's training step (:func:`flcore.federation.rounds.run_rounds`): a session that
    #: lost a site fails for all, and is tried again with the sites then connected.
    round_attempts = 3

    def __init__(
        self, open_session: SessionOpener | None = None, on_disagree: RejectFn | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**{**kwargs, "fraction_train": 1.0})  # a session takes every connected site
        self.open_session = open_session
        self.on_disagree = on_disagree
        self.session: Session | None = None
        #: Seconds each round's session took at the coordinator, by round.
        self.session_seconds: dict[int, float] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Start the round's communicator for every connected site and ask each to join it."""
        self.end_session()
        node_ids = list(grid.get_node_ids())
        if len(node_ids) < self.min_train_nodes:
            return []  # the round loop reports the missing quorum
        if self.open_session is None:
            raise RuntimeError("FedXgbHist was built without a communicator (open_session)")
        name = getattr(grid, "site_name", str)
        order = sorted((str(name(n)), n) for n in node_ids)
        self.session = self.open_session([site for site, _ in order])
        config[keys.SERVER_ROUND] = server_round
        config[COLLECTIVE] = json.dumps(self.session.worker_args())
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, [n for _, n in order], MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The ensemble the sites agree on; the round's metrics (train loss, bytes, seconds) per site."""
        replies = list(replies)
        if self.session is not None:
            self.session_seconds[server_round] = self.session.seconds()
        self.end_session()
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        boosters = [_booster_of(m, self.arrayrecord_key) for m in valid]
        agreed, _count = Counter(boosters).most_common(1)[0]
        kept = []
        for msg, booster in zip(valid, boosters, strict=True):
            if booster == agreed:
                kept.append(msg)
            elif self.on_disagree is not None:
                site = str(msg.content[keys.SITE][keys.SITE_NAME])  # type: ignore[index]
                self.on_disagree(server_round, site, "its ensemble differs from the one the other sites grew with it")
        metrics = self.train_metrics_aggr_fn([m.content for m in kept], self.weighted_by_key)
        return kept[0].content[self.arrayrecord_key], metrics  # type: ignore[return-value]

    def end_session(self) -> None:
        """Stop the round's communicator, if one runs (also called when a round fails: :func:`run_rounds`)."""
        if self.session is not None:
            self.session.close()
            self.session = None


def _booster_of(msg: Message, key: str) -> bytes:
    arrays = msg.content[key]
    return b"".join(a.numpy().tobytes() for a in arrays.values())  # type: ignore[union-attr]
