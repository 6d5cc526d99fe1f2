"""Fleet scale: the IoT scenario with 100, 1,000 and 5,000 virtual devices on the simulation engine.

For each fleet size it generates the fleet (seeded), prepares every device's
windows, and runs the federated arm with the scenario's recommended settings (30%
of devices sampled per round for training and for evaluation, 10% of those
offline) for a few rounds. It prints the time per round (median over the rounds,
and the first round apart: it includes the workers' start) and the peak memory
of the whole process tree (this process, Ray's processes and every simulation
worker: :class:`flcore.experiment.resources.PeakMemory`, RSS and PSS sums), sampled while
the federation runs. Each size runs in a fresh child process, so one size's
memory does not carry into the next.

A size that fails (on Flower 1.41 on 2 cores, 5,000 devices do not get through the
first query: docs/benchmarks.md says why) is reported with its reason, and the other
sizes' figures are kept.

Run: ``.venv/bin/python benchmarks/fleet.py [--devices 100,1000,5000] [--rounds 3] [--json out.json]``
(about 15 minutes on 2 cores, most of it at 5,000 devices).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from common import arguments, gib, print_machine, settings, table, write_json


def one(devices: int, rounds: int, overrides: dict[str, str]) -> dict[str, Any]:
    """Run one fleet size in this process and return its figures."""
    from flcore import scenario as registry
    from flcore.experiment.federate import federate
    from flcore.experiment.prepare import prepare_data
    from flcore.experiment.resources import PeakMemory

    sc = registry.get("iot-vibration-fleet")
    cfg, params = sc.configure({"devices": str(devices), "num-server-rounds": str(rounds), **overrides})
    start = time.perf_counter()
    splits = prepare_data(sc, cfg, None, lambda _: None, params).splits
    prepare_s = time.perf_counter() - start
    with PeakMemory(interval_s=0.2) as memory:
        outcome, arm = federate(sc, cfg, params, splits)
    total_s = arm["wall_time_s"]
    recs = outcome.monitor.rounds
    per_round = [r.wall_time_s for r in recs]
    return {
        "devices": devices,
        "rounds": len(recs),
        "prepare_s": prepare_s,
        "federated_s": total_s,
        "first_round_s": per_round[0],
        "round_s_median": statistics.median(per_round[1:] or per_round),
        "trained_per_round": statistics.mean(r.replies for r in recs),
        "evaluated_per_round": statistics.mean(r.evaluate_replies for r in recs),
        "peak_rss_bytes": memory.peak_rss,
        "peak_pss_bytes": memory.peak_pss,
        "peak_processes": memory.peak_processes,
        "final_auc": recs[-1].evaluate.get(sc.make_task(params).primary_metric),
    }


def main() -> None:
    """Run each fleet size in a child process and print the table."""
    parser = arguments(__doc__)
    parser.add_argument("--devices", default="100,1000,5000", help="fleet sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds per fleet size")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = parser.parse_args()
    overrides = settings(args)
    if args.one:
        print(json.dumps(one(args.one, args.rounds, overrides)))
        return
    print_machine()
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for devices in (int(d) for d in args.devices.split(",")):
        print(f"{devices} devices, {args.rounds} rounds ...", flush=True)
        cmd = [sys.executable, __file__, "--one", str(devices), "--rounds", str(args.rounds)]
        cmd += [f"--set={pair}" for pair in args.set]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:  # say why, keep the other sizes' figures
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"  {devices} devices failed after {time.perf_counter() - start:.0f} s: {reason}", flush=True)
            failed.append({"devices": devices, "error": reason, "seconds": time.perf_counter() - start})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print()
    print(
        table(
            [
                "devices",
                "trained/round",
                "evaluated/round",
                "first round s",
                "round s (median)",
                "peak RSS GiB",
                "peak PSS GiB",
                "processes",
                "prepare s",
            ],
            [
                [
                    r["devices"],
                    f"{r['trained_per_round']:.0f}",
                    f"{r['evaluated_per_round']:.0f}",
                    f"{r['first_round_s']:.1f}",
                    f"{r['round_s_median']:.1f}",
                    gib(r["peak_rss_bytes"]),
                    gib(r["peak_pss_bytes"]) if r["peak_pss_bytes"] else "n/a",
                    r["peak_processes"],
                    f"{r['prepare_s']:.1f}",
                ]
                for r in rows
            ],
        )
    )
    print("peak memory: the whole process tree during the federated run (RSS sum counts shared pages once per process)")
    for f in failed:
        print(f"{f['devices']} devices: failed ({f['error']})")
    write_json(args.json, {"benchmark": "fleet", "rows": rows, "failed": failed})


if __name__ == "__main__":
    main()
