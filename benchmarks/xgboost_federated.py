"""Federated XGBoost: bytes and time per tree, and PR-AUC, for bagging, cyclic and histogram at 64 and 256 bins.

On ``finance-five-banks`` (seed 0, the recommended booster: eta 0.05, depth 6) it
grows the same number of trees (``--trees``, default 300) with each strategy:

* ``fedxgb-bagging``: every bank adds one tree a round (trees / 5 rounds);
* ``fedxgb-cyclic``: one bank a round boosts 10 trees on the whole ensemble;
* ``fedxgb-hist``: all banks grow 30 trees a round together (XGBoost's rabit
  communicator on loopback, as in simulation).

For each it prints the Flower training messages' bytes per tree (the model sent to
the banks and their replies, serialised, counted by the suite's monitor), the
communicator's bytes per tree and bank for fedxgb-hist (counted by the kernel on
each bank's sockets, both ways), the federation's wall time per tree, and the
federated model's PR-AUC on the union of the banks' test splits against pooled
XGBoost with the same parameters, bins and trees.

Run: ``.venv/bin/python benchmarks/xgboost_federated.py [--trees 300] [--bins 64,256] [--json out.json]``
(about 20 minutes on 2 cores; the in-process engine runs the banks).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from common import print_machine, table, write_json

SCENARIO = "finance-five-banks"
#: Each strategy's local-epochs, and the trees it adds to the ensemble per round (five banks).
SHAPES = {"fedxgb-bagging": (1, 5), "fedxgb-cyclic": (10, 10), "fedxgb-hist": (30, 30)}


def pooled_pr_auc(splits: list[Any], task: Any, cfg: Any, rounds: int) -> float:
    """PR-AUC of XGBoost trained on the pooled training splits, on the union of the test splits."""
    from flcore.data.site import FeatureStats, SiteData

    pooled = SiteData(
        "pooled", np.concatenate([s.train.x for s in splits]), np.concatenate([s.train.y for s in splits])
    )
    model = task.init_model(FeatureStats.of(pooled.x, pooled.y), cfg.seed)
    task.fit(model, pooled, cfg, first_round=0, num_rounds=rounds, seed=cfg.seed)
    x = np.concatenate([s.test.x for s in splits])
    y = np.concatenate([s.test.y for s in splits])
    return float(task.score(y, task.predict(model, x))["pr_auc"])


def measure(trees: int, bins: int) -> list[dict[str, Any]]:
    """One federation per strategy at ``bins`` bins, each growing ``trees`` trees; one row each."""
    from flcore import scenario as registry
    from flcore.experiment.federate import federate
    from flcore.experiment.prepare import prepare_data

    sc = registry.get(SCENARIO)
    base = {"model": "xgboost", "xgb-max-bin": str(bins)}
    cfg, params = sc.configure(base)
    splits = prepare_data(sc, cfg, None, lambda _: None, params).splits
    task = sc.make_task(params)
    cfg_pooled, _ = sc.configure({**base, "local-epochs": "1", "num-server-rounds": str(trees)})
    pooled = pooled_pr_auc(splits, task, cfg_pooled, trees)
    print(f"{bins} bins: pooled PR-AUC {pooled:.4f}", flush=True)
    rows = []
    for strategy, (epochs, per_round) in SHAPES.items():
        rounds = trees // per_round
        cfg_s, params_s = sc.configure(
            {**base, "strategy": strategy, "local-epochs": str(epochs), "num-server-rounds": str(rounds)}
        )
        t0 = time.perf_counter()
        outcome, score = federate(sc, cfg_s, params_s, splits, engine="inprocess")
        wall = time.perf_counter() - t0
        recs = outcome.monitor.rounds
        flower = sum(r.bytes_sent_train + r.bytes_received_train for r in recs)
        collective = score.get("collective", {}).get("per_site", {})
        comm = [c["bytes_sent"] + c["bytes_received"] for c in collective.values()]
        rows.append(
            {
                "strategy": strategy,
                "bins": bins,
                "trees": trees,
                "rounds": rounds,
                "flower_train_bytes_per_tree": flower / trees,
                "communicator_bytes_per_tree_per_bank": (sum(comm) / len(comm) / trees) if comm else 0.0,
                "seconds_per_tree": wall / trees,
                "pr_auc": score["union"]["pr_auc"],
                "pooled_pr_auc": pooled,
            }
        )
        print(f"  {strategy}: {wall:.0f} s, PR-AUC {score['union']['pr_auc']:.4f}", flush=True)
    return rows


def main() -> None:
    """Measure every strategy at every bin count and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, default=300, help="trees every strategy grows (a multiple of 30)")
    parser.add_argument("--bins", default="64,256", help="comma-separated histogram bin counts")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.trees % 30:
        parser.error("--trees must be a multiple of 30 (the trees a fedxgb-hist round grows)")
    from flcore.federation.engines import quiet_environment

    quiet_environment()  # Flower's per-round INFO lines
    print_machine()
    rows = [row for bins in args.bins.split(",") for row in measure(args.trees, int(bins))]
    print()
    print(
        table(
            [
                "strategy",
                "bins",
                "trees",
                "Flower train kB/tree (all banks)",
                "communicator kB/tree/bank",
                "s/tree",
                "PR-AUC",
                "x pooled",
            ],
            [
                [
                    r["strategy"],
                    r["bins"],
                    r["trees"],
                    f"{r['flower_train_bytes_per_tree'] / 1e3:.1f}",
                    f"{r['communicator_bytes_per_tree_per_bank'] / 1e3:.1f}" if r["strategy"] == "fedxgb-hist" else "-",
                    f"{r['seconds_per_tree']:.3f}",
                    f"{r['pr_auc']:.4f}",
                    f"{r['pr_auc'] / r['pooled_pr_auc']:.3f}",
                ]
                for r in rows
            ],
        )
    )
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
