"""Server aggregation throughput against the machine's memory-copy bandwidth, measured in the same run.

For K updates of P float32 parameters (K in 10, 100; P in 1e5, 1e6, 1e7) it times
three things on the same replies:

* ``flower``: Flower's own ``aggregate_arrayrecords`` (what ``FedAvg`` calls), for reference;
* ``average``: the suite's :func:`flcore.federation.strategies.averaging.weighted_average`, the
  aggregation rule itself;
* ``server step``: the whole ``aggregate_train`` of the strategy the suite builds for
  ``strategy=fedavg`` (the non-finite screen, then the average, then the metrics).

Throughput is the bytes of the K updates (K x P x 4) divided by the median time.
The copy bandwidth is ``np.copyto`` of a 256 MiB buffer (bytes copied per second);
P = 1e5 fits in the CPU cache, so it can beat the copy figure.

Run: ``.venv/bin/python benchmarks/aggregation.py [--repeats 5] [--json out.json]``
(about a minute; K = 100 at P = 1e7 holds 4 GB of updates).
"""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any

import numpy as np
from common import median, print_machine, table, timed, write_json
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from flcore import keys
from flcore.config import RunConfig
from flcore.federation.strategies import build_strategy
from flcore.federation.strategies.averaging import to_array, weighted_average

COPY_BYTES = 256 * 2**20


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second of ``np.copyto`` between two buffers far larger than the CPU cache."""
    src = np.ones(COPY_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    return COPY_BYTES / median(timed(lambda: np.copyto(dst, src), repeats=repeats))


def replies(k: int, p: int, seed: int = 0) -> list[Message]:
    """K train replies of one float32 array of P values each, as a strategy receives them."""
    from flwr.supercore.task_identity import TaskIdentity

    # Messages are built outside a run here; Flower wants the identity a run would give them.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    base = np.random.default_rng(seed).standard_normal(p + k, dtype=np.float32)
    out = []
    for i in range(k):
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": to_array(base[i : i + p])}),
                "metrics": MetricRecord({keys.NUM_EXAMPLES: 100 + i, "train-loss": 0.5}),
                keys.SITE: ConfigRecord({keys.SITE_NAME: f"site-{i}"}),
            }
        )
        out.append(Message(content=content, dst_node_id=0, message_type="train"))
    return out


def measure(k: int, p: int, repeats: int) -> dict[str, Any]:
    """Time the three aggregations of K updates of P values (after checking they agree)."""
    msgs = replies(k, p)
    contents = [m.content for m in msgs]
    records = [next(iter(c.array_records.values())) for c in contents]
    sizes = np.array([100.0 + i for i in range(k)])
    weights = sizes / sizes.sum()
    strategy = build_strategy(RunConfig(strategy="fedavg", fraction_train=1.0, min_sites=1), k)
    nbytes = k * p * 4

    ours = weighted_average(records, weights)["w"].numpy()  # type: ignore[union-attr]
    flower = aggregate_arrayrecords(contents, keys.NUM_EXAMPLES)["w"].numpy()  # type: ignore[union-attr]
    server, _ = strategy.aggregate_train(1, msgs)
    assert server is not None
    np.testing.assert_allclose(ours, flower, rtol=1e-5, atol=1e-6)  # the same average, not a faster wrong one
    np.testing.assert_array_equal(server["w"].numpy(), ours)  # type: ignore[union-attr]

    row: dict[str, Any] = {"k": k, "p": p, "bytes": nbytes}
    for name, fn in (
        ("flower", lambda: aggregate_arrayrecords(contents, keys.NUM_EXAMPLES)),
        ("average", lambda: weighted_average(records, weights)),
        ("server_step", lambda: strategy.aggregate_train(1, msgs)),
    ):
        seconds = median(timed(fn, repeats=repeats))
        row[f"{name}_s"] = seconds
        row[f"{name}_gbps"] = nbytes / seconds / 1e9
    return row


def main() -> None:
    """Measure and print every (K, P) case beside the copy bandwidth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median reported)")
    parser.add_argument("--k", default="10,100", help="update counts, comma-separated")
    parser.add_argument("--p", default="1e5,1e6,1e7", help="parameters per update, comma-separated")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)  # one INFO line per aggregation otherwise
    print_machine()

    copy = copy_bandwidth(args.repeats)
    print(f"memory-copy bandwidth (np.copyto, 256 MiB): {copy / 1e9:.2f} GB/s\n")
    rows = []
    for k in (int(x) for x in args.k.split(",")):
        for p in (int(float(x)) for x in args.p.split(",")):
            rows.append(measure(k, p, args.repeats))
            gc.collect()  # K = 100 at P = 1e7 holds 4 GB: free it before the next case
            r = rows[-1]
            # Re-measure the copy beside the largest cases: a busy neighbour shows up in both figures.
            r["copy_gbps"] = copy_bandwidth(args.repeats) / 1e9 if p >= 10**7 else copy / 1e9

    print(
        table(
            ["K", "P", "Flower GB/s", "suite average GB/s", "server step GB/s", "copy GB/s", "average / copy"],
            [
                [
                    r["k"],
                    f"{r['p']:.0e}",
                    f"{r['flower_gbps']:.2f}",
                    f"{r['average_gbps']:.2f}",
                    f"{r['server_step_gbps']:.2f}",
                    f"{r['copy_gbps']:.2f}",
                    f"{r['average_gbps'] / r['copy_gbps']:.2f}",
                ]
                for r in rows
            ],
        )
    )
    write_json(args.json, {"benchmark": "aggregation", "copy_gbps": copy / 1e9, "rows": rows})


if __name__ == "__main__":
    main()
