"""Framework overhead: a federated simulation against the same local updates done by a plain torch loop.

For each scenario (default: finance-five-banks and iot-vibration-fleet, their
recommended settings) it prepares the sites once, then times side by side, in
this one run:

* ``federated``: :func:`flcore.experiment.federate.federate`, the suite's federated
  arm on Flower's simulation engine (Ray start, every ClientApp call, the server's
  strategy and screen, and Ray's shutdown included; the final model's scoring not);
* ``plain``: one process, no framework: for every round, each site the federation
  trained in that round (read from its history, so the same sites, in the same
  number) starts from the global model, runs the same ``task.fit`` with the same
  seed, and the models are averaged with the strategy's weights in torch.

Federated evaluation is switched off (``fraction-evaluate=0``) in the federation
because the plain loop does not evaluate: both sides do the same training work.
The plain loop runs twice, with one torch thread (as each simulated client has,
so it ends with the federation's model: the largest weight difference is printed)
and with all cores; the faster of the two is the reference. Overhead = federated /
plain wall time.

Run: ``.venv/bin/python benchmarks/overhead.py [--scenarios finance-five-banks,iot-vibration-fleet]
[--set key=value ...] [--json out.json]`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import numpy as np
from common import arguments, print_machine, settings, table, write_json

SCENARIOS = "finance-five-banks,iot-vibration-fleet"


def _quiet(_: str) -> None:
    pass


def prepare(name: str, overrides: dict[str, str]) -> tuple[Any, Any, Any, list[Any]]:
    """The scenario, its settings with federated evaluation off, and its prepared sites."""
    from flcore import scenario as registry
    from flcore.experiment.prepare import prepare_data

    sc = registry.get(name)
    cfg, params = sc.configure({"fraction-evaluate": "0", **overrides})
    prepared = prepare_data(sc, cfg, None, _quiet, params)
    return sc, cfg, params, prepared.splits


def federated(sc: Any, cfg: Any, params: Any, splits: list[Any]) -> tuple[float, Any]:
    """Wall time of the federated arm on the simulation engine, and its outcome."""
    from flcore.experiment.federate import federate

    start = time.perf_counter()
    outcome, arm = federate(sc, cfg, params, splits)
    end = start + arm["wall_time_s"]  # the federation's end; its scoring comes after
    rounds = outcome.monitor.rounds
    # The monitor's round records share this process's clock (the ServerApp runs in a thread here).
    outcome.before_rounds_s = rounds[0].started - start
    outcome.after_rounds_s = end - (rounds[-1].started + rounds[-1].wall_time_s)
    return end - start, outcome


def weights_for(cfg: Any, sizes: list[float]) -> np.ndarray:
    """The strategy's averaging weights for sites of these sizes."""
    from flcore.federation.strategies.sizeweighted import size_weights

    beta = cfg.size_weight_beta if cfg.strategy == "fedavg-sizeweighted" else 0.0
    return size_weights(sizes, beta)


def plain(
    sc: Any, cfg: Any, params: Any, splits: list[Any], trained: list[list[str]], threads: int
) -> tuple[float, Any]:
    """Wall time of the same local updates and averages in one process with ``threads`` torch threads."""
    import torch

    from flcore.data.site import FeatureStats
    from flcore.federation.clientapp import _site_seed

    torch.set_num_threads(threads)
    by_name = {s.name: s for s in splits}
    start = time.perf_counter()
    task = sc.make_task(params)
    stats = FeatureStats.combine([FeatureStats.of(s.train.x, s.train.y) for s in splits])
    model = task.init_model(stats, cfg.seed)
    for server_round, names in enumerate(trained, start=1):
        states, sizes = [], []
        for name in names:
            split = by_name[name]
            local = copy.deepcopy(model)
            task.fit(
                local,
                split.train,
                cfg,
                first_round=server_round - 1,
                num_rounds=1,
                seed=_site_seed(cfg.seed, server_round, name),
            )
            states.append(local.state_dict())
            sizes.append(float(len(split.train)))
        w = weights_for(cfg, sizes)
        averaged = {
            key: sum(float(wk) * state[key].float() for wk, state in zip(w, states, strict=True)).to(value.dtype)
            for key, value in states[0].items()
        }
        model.load_state_dict(averaged)
    return time.perf_counter() - start, model


def measure(name: str, overrides: dict[str, str]) -> dict[str, Any]:
    """Federated and plain wall time of one scenario, on the same prepared sites."""
    sc, cfg, params, splits = prepare(name, overrides)
    print(
        f"{name}: {len(splits)} {sc.site_noun}s, {cfg.num_server_rounds} rounds x {cfg.local_epochs} epochs, "
        f"fraction-train {cfg.fraction_train}, strategy {cfg.strategy} ...",
        flush=True,
    )
    fed_s, outcome = federated(sc, cfg, params, splits)
    trained = [sorted(r.per_site_train) for r in outcome.monitor.rounds]
    # One thread per update, as each simulated client has: the same arithmetic, so the same model.
    one_s, model = plain(sc, cfg, params, splits, trained, 1)
    cores = os.cpu_count() or 1
    all_s = plain(sc, cfg, params, splits, trained, cores)[0] if cores > 1 else one_s
    plain_s = min(one_s, all_s)  # the plain loop at its best
    task = sc.make_task(params)
    ours = {k: v.numpy() for k, v in task.model_arrays(model).items()}  # type: ignore[union-attr]
    theirs = {k: v.numpy() for k, v in outcome.arrays.items()}
    diff = max(float(np.max(np.abs(ours[k] - theirs[k]))) if ours[k].size else 0.0 for k in ours)
    rounds = outcome.monitor.rounds
    updates = sum(len(t) for t in trained)
    return {
        "scenario": name,
        "sites": len(splits),
        "rounds": len(rounds),
        "local_epochs": cfg.local_epochs,
        "updates": updates,
        "federated_s": fed_s,
        "federated_rounds_s": sum(r.wall_time_s for r in rounds),
        "federated_before_rounds_s": outcome.before_rounds_s,
        "federated_after_rounds_s": outcome.after_rounds_s,
        "plain_s": plain_s,
        "plain_1_thread_s": one_s,
        "plain_all_threads_s": all_s,
        "overhead": fed_s / plain_s,
        "overhead_rounds_only": sum(r.wall_time_s for r in rounds) / plain_s,
        "max_weight_difference": diff,
    }


def main() -> None:
    """Measure every scenario and print the table."""
    args = arguments(__doc__, SCENARIOS).parse_args()
    overrides = settings(args)
    print_machine()
    rows = [measure(name, overrides) for name in args.scenarios.split(",")]
    print()
    print(
        table(
            [
                "scenario",
                "sites",
                "rounds",
                "updates",
                "federated s",
                "before round 1 s",
                "rounds s",
                "after last round s",
                "plain s, 1 / all threads",
                "overhead",
                "max |w diff|",
            ],
            [
                [
                    r["scenario"],
                    r["sites"],
                    r["rounds"],
                    r["updates"],
                    f"{r['federated_s']:.1f}",
                    f"{r['federated_before_rounds_s']:.1f}",
                    f"{r['federated_rounds_s']:.1f}",
                    f"{r['federated_after_rounds_s']:.1f}",
                    f"{r['plain_1_thread_s']:.1f} / {r['plain_all_threads_s']:.1f}",
                    f"{r['overhead']:.2f}",
                    f"{r['max_weight_difference']:.1e}",
                ]
                for r in rows
            ],
        )
    )
    print(
        "overhead = federated wall time (Ray start to shutdown) / the faster plain torch loop, same updates; "
        "max |w diff| = largest weight difference between the federation's model and the 1-thread loop's"
    )
    write_json(args.json, {"benchmark": "overhead", "rows": rows})


if __name__ == "__main__":
    main()
