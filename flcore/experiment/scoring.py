"""Scoring an arm on every site's held-out test split and their union, its curve, and the headline comparison."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from flcore.config import RunConfig
from flcore.data.site import SiteSplit
from flcore.exceptions import FlsuiteError
from flcore.learning import metrics
from flcore.learning.task import Task

if TYPE_CHECKING:
    from flcore.federation.monitor import RoundRecord


def score_arm(
    task: Task, splits: list[SiteSplit], model_for: Callable[[str], Any], primary: str, *, shared_model: bool
) -> dict[str, Any]:
    """Score one arm on every site's test split and on their union.

    Parameters
    ----------
    model_for : callable
        Site name -> the model that arm uses at that site.
    shared_model : bool
        True when every site uses the same model (federated, centralised): its
        operating point is chosen once on the union of the sites' validation splits,
        unless the task's ``threshold_scope`` is ``"site"``. False for local-only
        models: each site chooses on its own validation split.
    """
    test_scores = {s.name: task.predict(model_for(s.name), s.test.x) for s in splits}
    pooled = shared_model and task.threshold_scope != "site"
    thresholds = _thresholds(task, splits, model_for, pooled)
    per_site: dict[str, dict[str, Any]] = {
        s.name: task.score(s.test.y, test_scores[s.name], thresholds[s.name]) for s in splits
    }
    if task.threshold_scope == "site":
        union = _calibrated_union(task, splits, test_scores, thresholds)
    else:
        # Pooled decisions: one shared threshold, or each site's own applied to its examples.
        union_threshold: float | np.ndarray | None = None
        if splits and all(t is not None for t in thresholds.values()):
            union_threshold = (
                thresholds[splits[0].name]
                if pooled
                else np.concatenate([np.full(len(s.test), thresholds[s.name], dtype=float) for s in splits])
            )
        union_y = np.concatenate([s.test.y for s in splits])
        union = task.score(union_y, np.concatenate([test_scores[s.name] for s in splits]), union_threshold)
    names = [k for k, v in union.items() if k not in ("n", "n_positive")]
    mean = {k: metrics.nanmean([per_site[s].get(k) for s in per_site]) for k in names}
    defined = {s: m[primary] for s, m in per_site.items() if m.get(primary) is not None}
    worst = min(defined, key=defined.__getitem__) if defined else None
    return {
        "union": union,
        "per_site": per_site,
        "mean_over_sites": mean,
        "worst_site": {"site": worst, "value": defined.get(worst) if worst else None},
    }


def federated_model(task: Task, outcome: Any, seed: int) -> Any:
    """A federation's final global model (:class:`~flcore.federation.plan.FederationOutcome`), as a model object."""
    if outcome.feature_stats is None or outcome.arrays is None:
        raise FlsuiteError(
            "the federation returned no final model or no feature statistics; a completed "
            "federation always has both (this is a bug in flsuite, please report it)."
        )
    model = task.init_model(outcome.feature_stats, seed)
    task.load_model_arrays(model, outcome.arrays)
    return model


def score_federated(task: Task, splits: list[SiteSplit], outcome: Any, seed: int) -> dict[str, Any]:
    """Score a federation's final global model on each site."""
    return score_arm(
        task, splits, constant(federated_model(task, outcome, seed)), task.primary_metric, shared_model=True
    )


def _calibrated_union(
    task: Task, splits: list[SiteSplit], scores: dict[str, np.ndarray], thresholds: dict[str, float | None]
) -> dict[str, Any]:
    """Fleet-wide metrics when every site calibrates its own threshold (anomaly detection).

    Raw scores of different sites are not comparable (each machine has its own normal
    level), so each site's scores are divided by its threshold: 1.0 is every site's
    alarm level, and a fleet ranks windows by how far past their own alarm level they
    are. Sites without a threshold (no validation data) are left out of the union and
    counted in ``sites_without_threshold``.
    """
    calibrated = [s for s in splits if thresholds[s.name] is not None]
    if not calibrated:
        out = task.score(np.concatenate([s.test.y for s in splits]), np.concatenate([scores[s.name] for s in splits]))
        out["sites_without_threshold"] = len(splits)
        return out
    ts = {s.name: float(thresholds[s.name]) for s in calibrated}  # type: ignore[arg-type]
    ratio = all(t > 0 for t in ts.values())  # positive scores (errors): ratio; otherwise margin
    y = np.concatenate([s.test.y for s in calibrated])
    z = np.concatenate([scores[s.name] / ts[s.name] if ratio else scores[s.name] - ts[s.name] for s in calibrated])
    out = task.score(y, z, 1.0 if ratio else 0.0)
    out["sites_without_threshold"] = len(splits) - len(calibrated)
    out["threshold"] = None  # each site has its own; their values are in per_site
    return out


def _thresholds(
    task: Task, splits: list[SiteSplit], model_for: Callable[[str], Any], shared_model: bool
) -> dict[str, float | None]:
    """Each site's operating point, chosen on validation data only (never on test)."""
    with_val = [s for s in splits if s.val is not None and len(s.val)]
    if not with_val:
        return {s.name: None for s in splits}
    val_scores = {s.name: task.predict(model_for(s.name), s.val.x) for s in with_val}  # type: ignore[union-attr]
    if shared_model:
        t = task.choose_threshold(
            np.concatenate([s.val.y for s in with_val]),  # type: ignore[union-attr]
            np.concatenate([val_scores[s.name] for s in with_val]),
        )
        return {s.name: t for s in splits}
    return {
        s.name: task.choose_threshold(s.val.y, val_scores[s.name]) if s.name in val_scores else None  # type: ignore[union-attr]
        for s in splits
    }


#: What an arm's ``curve`` holds, the same for the three arms.
CURVE_DEFINITION = (
    "after each round, the primary metric on every site's test split, averaged over the sites weighted by their "
    "test examples (sites where it is undefined left out), as Flower aggregates the federated evaluate round"
)


def curve_json(metric: str, values: list[float | None]) -> dict[str, Any]:
    """An arm's ``curve`` in results.json: ``values[r - 1]`` is the metric after round ``r``."""
    return {"metric": metric, "definition": CURVE_DEFINITION, "values": values}


class Curve:
    """The primary metric after every round of a baseline, as the federated arm records it per round.

    A baseline trains ``baseline`` rounds where the federation trains ``rounds``
    (for bagged trees, one per site and round); it is scored every
    ``baseline // rounds`` of its rounds, so both curves share one round axis.
    """

    def __init__(self, task: Task, splits: list[SiteSplit], rounds: int, baseline: int) -> None:
        self.task, self.splits = task, splits
        self.step = max(1, baseline // max(1, rounds))
        self.rounds = rounds
        #: round -> site -> (value, test examples)
        self.points: dict[int, dict[str, tuple[float, int]]] = {}

    def after(self, model_for: Callable[[str], Any], only: SiteSplit | None = None) -> Callable[[int], None]:
        """The ``on_round`` callback of :meth:`Task.fit` that scores ``model_for(site)`` (on ``only``, or all sites)."""

        def score(done: int) -> None:
            if done % self.step:
                return
            r = done // self.step
            for split in [only] if only is not None else self.splits:
                if len(split.test) == 0:
                    continue
                value = self.task.score(split.test.y, self.task.predict(model_for(split.name), split.test.x)).get(
                    self.task.primary_metric
                )
                if value is not None:
                    self.points.setdefault(r, {})[split.name] = (float(value), len(split.test))

        return score

    def to_json(self) -> dict[str, Any]:
        values: list[float | None] = []
        for r in range(1, self.rounds + 1):
            pts = list(self.points.get(r, {}).values())
            weight = sum(n for _, n in pts)
            values.append(sum(v * n for v, n in pts) / weight if weight else None)
        return curve_json(self.task.primary_metric, values)


def constant(model: Any) -> Callable[[str], Any]:
    """``model`` for every site."""
    return lambda _: model


def participation(rounds: list[RoundRecord], sites: list[str], local_epochs: int) -> dict[str, Any]:
    """Sampled, answered and offline sites over all rounds, and the epochs each site really trained."""
    sampled = sum(r.sampled for r in rounds)
    replied = sum(r.replies for r in rounds)
    trained = {name: 0 for name in sites}
    for r in rounds:
        for name in r.per_site_train:
            trained[name] = trained.get(name, 0) + 1
    epochs = np.asarray([v * local_epochs for v in trained.values()], dtype=float)
    return {
        "sampled": sampled,
        "replied": replied,
        "failed": sum(r.failures for r in rounds),
        "dropped": sum(r.dropouts for r in rounds),
        "reply_rate": replied / sampled if sampled else None,
        "epochs_per_site": {
            "min": int(epochs.min()) if epochs.size else 0,
            "mean": round(float(epochs.mean()), 2) if epochs.size else 0.0,
            "max": int(epochs.max()) if epochs.size else 0,
            "never_trained": int((epochs == 0).sum()),
        },
    }


def compression(rounds: list[RoundRecord], cfg: RunConfig) -> dict[str, Any]:
    """The update codec and the bytes per round it left, train messages apart."""
    n = max(1, len(rounds))
    return {
        "codec": cfg.update_compression,
        "broadcast": cfg.update_compression != "none" and cfg.compress_broadcast,
        "train_bytes_sent_per_round": sum(r.bytes_sent_train for r in rounds) / n,
        "train_bytes_received_per_round": sum(r.bytes_received_train for r in rounds) / n,
        "bytes_per_round": sum(r.bytes_sent + r.bytes_received for r in rounds) / n,
    }


def compare(fed: dict[str, Any], cen: dict[str, Any], loc: dict[str, Any], primary: str) -> dict[str, Any]:
    """Headline figures: federated against the pooled reference and against sites alone."""
    f, c = fed["union"].get(primary), cen["union"].get(primary)
    fm, lm = fed["mean_over_sites"].get(primary), loc["mean_over_sites"].get(primary)
    both = [
        site
        for site, m in fed["per_site"].items()
        if m.get(primary) is not None and loc["per_site"][site].get(primary) is not None
    ]
    wins = sum(1 for site in both if fed["per_site"][site][primary] > loc["per_site"][site][primary])
    return {
        "metric": primary,
        "federated": f,
        "centralised": c,
        "local_only": loc["union"].get(primary),
        "federated_mean_over_sites": fm,
        "local_only_mean_over_sites": lm,
        "federated_over_centralised": (f / c) if f is not None and c else None,
        "federated_minus_local_only_mean": (fm - lm) if fm is not None and lm is not None else None,
        "sites_where_federated_beats_local": wins,
        "sites_compared": len(both),
    }
