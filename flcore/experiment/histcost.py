"""What a ``fedxgb-hist`` federation cost each site, and who could see what: for results.json and the report."""

from __future__ import annotations

from typing import Any

from flcore import keys
from flcore.config import RunConfig
from flcore.federation.monitor import RoundRecord

#: Who sees what under fedxgb-hist, in plain words (the report prints these as they are).
TRUST = {
    "coordinator": (
        "runs XGBoost's communicator and, in a deployment, receives every site's messages to it over mutual TLS "
        "and reads them: once per round, each site's quantile sketch (samples of its feature values); at every "
        "tree level, each site's gradient and hessian sums per feature bin, for the nodes being split. In the "
        "first tree these are close to the number of records and of positives in each bin at each site. It also "
        "sees every tree, as the sites do."
    ),
    "other_sites": (
        "see only sums over all sites (the merged bin boundaries and the summed histograms) and the trees. A site "
        "that subtracts its own histograms from a sum learns the sum over the other sites: with two sites, that "
        "is the other site's histograms exactly, hence at least three sites. In simulation the sites' workers "
        "pass partial sums to each other (XGBoost's ring on one machine); in a deployment they talk only to the "
        "coordinator."
    ),
    "not_protected": (
        "neither differential privacy nor secure aggregation covers the histograms: fedxgb-hist protects rows "
        "from leaving a site, not the statistics above from the coordinator."
    ),
    "exported_model": (
        "the trees' split values and leaf weights; the cover statistics (each node's hessian sum, close to a "
        "record count) are removed from every exported XGBoost model."
    ),
}


def collective_record(rounds: list[RoundRecord], cfg: RunConfig, params: Any, *, deployed: bool) -> dict[str, Any]:
    """The ``collective`` entry of a fedxgb-hist federated arm: communicator, cost per site and tree, trust, hardening.

    Bytes are what each site's session process counted on the communicator's sockets
    (the kernel's ``TCP_INFO``), so they include TCP payload only, TLS records in a
    deployment, and the quantile sketches; the Flower messages (the model sent each
    round) are counted apart, in the arm's ``bytes_sent``/``bytes_received``.
    """
    per_site: dict[str, dict[str, float]] = {}
    trees = 0
    for rec in rounds:
        trees += cfg.local_epochs if rec.per_site_train else 0
        for site, m in rec.per_site_train.items():
            entry = per_site.setdefault(site, {"bytes_sent": 0, "bytes_received": 0, "session_seconds": 0.0})
            entry["bytes_sent"] += int(m.get(keys.XGB_BYTES_SENT, 0))
            entry["bytes_received"] += int(m.get(keys.XGB_BYTES_RECEIVED, 0))
            entry["session_seconds"] += float(m.get(keys.XGB_SECONDS, 0.0))
    measured = any(keys.XGB_BYTES_SENT in m for rec in rounds for m in rec.per_site_train.values())
    for entry in per_site.values():
        entry["session_seconds"] = round(entry["session_seconds"], 3)
        entry["bytes_per_tree"] = round((entry["bytes_sent"] + entry["bytes_received"]) / trees) if trees else 0
    wall = sum(r.wall_time_s for r in rounds)
    return {
        "communicator": (
            "XGBoost federated server (gRPC, mutual TLS with the run's CA; every site connects out to the coordinator)"
            if deployed
            else "XGBoost rabit tracker on 127.0.0.1 (simulation: the sites' workers form a ring on this machine)"
        ),
        "trees": trees,
        "trees_per_round": cfg.local_epochs,
        "max_bin": getattr(params, "xgb_max_bin", None),
        "bytes_measured": measured,
        "per_site": dict(sorted(per_site.items())),
        "wall_time_s": round(wall, 3),
        "seconds_per_tree": round(wall / trees, 4) if trees else None,
        "trust": dict(TRUST),
        "hardening": {
            "max_bin": "xgb-max-bin: fewer bins coarsen the histograms (and shrink the traffic)",
            "min_sites": "fedxgb-hist refuses a round with fewer than 3 sites",
            "cover_removed_from_exported_model": True,
        },
    }
