"""The strategy's round loop, resumable and dropout-tolerant.

Flower's ``Strategy.start`` always begins at round 1 and waits for as many nodes
as it samples. :func:`run_rounds` runs the same steps through the strategy's own
``configure_train``, ``aggregate_train``, ``configure_evaluate`` and
``aggregate_evaluate`` from any round, waits at most ``timeout`` seconds for the
sites' replies, goes on while at least ``min_sites`` sites send a usable update, and
calls ``after_round`` (bookkeeping and the checkpoint) after every completed round.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from flcore.exceptions import QuorumError
from flcore.federation.strategies.screen import ScreenedUpdates, TooFewUpdates


def run_rounds(
    strategy: Any,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first_round: int,
    num_rounds: int,
    timeout: float,
    min_sites: int,
    min_evaluate: int = 1,
    seed: int = 0,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    after_round: Callable[[int, ArrayRecord], None],
    site_names: Callable[[Iterable[int]], list[str]] | None = None,
    on_retry: Callable[[int, int, list[str]], None] | None = None,
) -> ArrayRecord:
    """Run rounds ``first_round`` .. ``num_rounds`` of ``strategy``; returns the final global model.

    Parameters
    ----------
    strategy : flwr.serverapp.strategy.Strategy
        Any Flower strategy (wrappers included).
    grid : Grid
        Where messages go.
    arrays : ArrayRecord
        The global model before ``first_round``.
    first_round, num_rounds : int
        The rounds to run (``first_round`` > 1 when resuming).
    timeout : float
        Seconds to wait for replies in each exchange; a site that has not answered by
        then counts as dropped for that round.
    min_sites : int
        Sites that must be connected before a round starts and must send a usable
        update in its training step; otherwise :class:`QuorumError` stops the run
        (the previous round's checkpoint stays valid).
    min_evaluate : int
        Sites that must be connected for the round's federated evaluation; with
        fewer (after waiting ``timeout``), the round is not evaluated.
    seed : int
        Seeds Flower's node sampling afresh in every round (from the seed and the
        round), so that a resumed run samples the sites an uninterrupted run would.
    train_config, evaluate_config : ConfigRecord
        Sent with every training and evaluation message.
    after_round : callable
        ``after_round(server_round, arrays)`` after each completed round.
    site_names : callable
        Names of node ids, for error messages.
    on_retry : callable, optional
        ``on_retry(server_round, attempt, silent_sites)`` when a round's training step
        is tried again: a strategy whose sites train together (``round_attempts`` > 1,
        :class:`~flcore.federation.strategies.xgbhist.FedXgbHist`) retries a step that
        some sampled site did not answer, since the others' work failed with it.

    Raises
    ------
    QuorumError
        If fewer than ``min_sites`` sites are connected within ``timeout``, answer a
        round's training step, or send an update that survives decoding and the screen.

    Notes
    -----
    The quorum counts usable updates, not replies. Replies pass, inside
    ``aggregate_train``, through decoding (:class:`~flcore.federation.strategies.compressed.CompressedUpdates`),
    the screen (:class:`~flcore.federation.strategies.screen.ScreenedUpdates`), the DP wrapper
    and the rule, in that order. The screen is the last step that sees every reply
    before anything is aggregated, so this loop hands it the quorum (its
    ``min_usable``); it learns the decoding's rejections too, and with fewer usable
    updates it raises instead of calling the DP wrapper and the rule, whose state
    (accountant, server optimiser) therefore does not move. The loop turns that into
    :class:`QuorumError` naming the rejected sites with their reasons and the silent
    ones, before ``after_round``: the model and the checkpoint stay as after the
    previous round. A strategy without the screen is held to ``min_sites`` replies
    without error only.
    """
    screen = _screen_of(strategy)
    if screen is not None:
        screen.min_usable = min_sites
    # The suite's wrappers hand unknown attributes on to the strategy they wrap.
    attempts = max(1, int(getattr(strategy, "round_attempts", 1)))
    try:
        for server_round in range(first_round, num_rounds + 1):
            connected = wait_for_sites(grid, min_sites, timeout)
            if len(connected) < min_sites:
                raise QuorumError(
                    server_round,
                    len(connected),
                    min_sites,
                    [],
                    f"Round {server_round} could not start: only {len(connected)} site(s) connected after "
                    f"waiting {timeout:.0f} s, and min-sites={min_sites}.",
                )
            for attempt in range(1, attempts + 1):
                random.seed(f"{seed}/{server_round}/train")  # Flower samples nodes with the `random` module
                messages = list(strategy.configure_train(server_round, arrays, train_config, grid))
                replies = list(grid.send_and_receive(messages, timeout=timeout))
                answered = {m.metadata.src_node_id for m in replies if not m.has_error()}
                if attempt == attempts or len(answered) == len(messages):
                    break
                if on_retry is not None:
                    on_retry(server_round, attempt, _silent(messages, replies, answered, site_names)[0])
            missing, errors = _silent(messages, replies, answered, site_names)
            if len(answered) < min_sites:
                raise QuorumError(
                    server_round,
                    len(answered),
                    min_sites,
                    missing,
                    f"Round {server_round}: only {len(answered)} of {len(messages)} sampled sites answered within "
                    f"{timeout:.0f} s (none usable from {', '.join(missing) or 'none'}"
                    + (f"; errors:{errors}" if errors else "")
                    + f"), fewer than min-sites={min_sites}; "
                    "the round was not aggregated and the run stopped. Lower min-sites to accept smaller rounds, "
                    "or raise reply-timeout for slow sites.",
                )
            try:
                aggregated, _ = strategy.aggregate_train(server_round, replies)
            except TooFewUpdates as short:
                rejected = "; ".join(f"{site}: {why[:300]}" for site, why in sorted(short.rejected.items()))
                raise QuorumError(
                    server_round,
                    len(answered),
                    min_sites,
                    missing,
                    f"Round {server_round}: only {len(short.usable)} of {len(messages)} sampled sites sent a usable "
                    f"update (rejected: {rejected or 'none'}"
                    + (f"; no answer from {', '.join(missing)}" if missing else "")
                    + (f"; errors:{errors}" if errors else "")
                    + f"), fewer than min-sites={min_sites}; the round was not aggregated and the run stopped. "
                    "Find out why those sites' updates are not usable (diverged training: lower the learning rate), "
                    "or lower min-sites to accept smaller rounds.",
                    rejected=short.rejected,
                ) from None
            if aggregated is not None:
                arrays = aggregated
            # Flower's sampling waits without limit for enough nodes: wait here, with one.
            if len(wait_for_sites(grid, min_evaluate, timeout)) >= min_evaluate:
                random.seed(f"{seed}/{server_round}/evaluate")
                evaluate = list(strategy.configure_evaluate(server_round, arrays, evaluate_config, grid))
                strategy.aggregate_evaluate(server_round, _replies(grid, evaluate, timeout))
            after_round(server_round, arrays)
        return arrays
    finally:  # a strategy holding a round's resources (fedxgb-hist's communicator) lets them go, whatever happened
        end = getattr(strategy, "end_session", None)
        if end is not None:
            end()


def _screen_of(strategy: Any) -> ScreenedUpdates | None:
    """The screen among ``strategy`` and the strategies it wraps (``.strategy``), if any."""
    while strategy is not None:
        if isinstance(strategy, ScreenedUpdates):
            return strategy
        strategy = getattr(strategy, "strategy", None)
    return None


def _silent(
    messages: list[Message],
    replies: list[Message],
    answered: set[int],
    site_names: Callable[[Iterable[int]], list[str]] | None,
) -> tuple[list[str], str]:
    """Names of the sampled sites that did not answer without error, and the errors they sent."""
    silent = sorted({m.metadata.dst_node_id for m in messages} - answered)
    missing = site_names(silent) if site_names is not None else [f"node {n}" for n in silent]
    named = dict(zip(silent, missing, strict=True))
    errors = {m.metadata.src_node_id: m.error.reason or "" for m in replies if m.has_error()}
    return missing, "".join(f" {named.get(n, f'node {n}')}: {why[:300]}" for n, why in sorted(errors.items()))


def _replies(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    return list(grid.send_and_receive(messages, timeout=timeout)) if messages else []


def wait_for_sites(grid: Grid, needed: int, timeout: float) -> list[int]:
    """Node ids connected now, waiting up to ``timeout`` seconds for at least ``needed`` of them."""
    deadline = time.monotonic() + timeout
    while len(ids := list(grid.get_node_ids())) < needed and time.monotonic() < deadline:
        time.sleep(0.05)
    return ids
