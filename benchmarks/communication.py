"""Communication: bytes per round and final metric for float32, float16 and 8-bit updates.

For each scenario it prepares the sites once, then runs the federated arm three
times on the same data and seed, with ``update-compression`` = ``none`` (float32),
``float16`` and ``int8`` (block-wise 8-bit), the global model broadcast in the
same codec (``compress-broadcast``, the default). It prints, per codec, the bytes
the sites send (their updates) and receive (the global model) per round, all bytes
per round (train, federated evaluation and the queries), and the final model's
primary metric on every site's held-out test split pooled (the same scoring as
``flsuite run``). Bytes are the serialised Flower messages, counted by the suite's
monitor on the server side.

Run: ``.venv/bin/python benchmarks/communication.py [--scenarios iot-vibration-fleet,medical-clinical]
[--set key=value ...] [--json out.json]`` (about 8 minutes on 2 cores).
"""

from __future__ import annotations

from typing import Any

from common import arguments, print_machine, settings, table, write_json

SCENARIOS = "iot-vibration-fleet,medical-clinical"
CODECS = ("none", "float16", "int8")


def measure(name: str, overrides: dict[str, str]) -> list[dict[str, Any]]:
    """Run the scenario's federated arm once per codec on the same sites; one row per codec."""
    from flcore import scenario as registry
    from flcore.experiment.federate import federate
    from flcore.experiment.prepare import prepare_data

    sc = registry.get(name)
    cfg, params = sc.configure(overrides)
    splits = prepare_data(sc, cfg, None, lambda _: None, params).splits
    primary = sc.make_task(params).primary_metric
    print(f"{name}: {len(splits)} {sc.site_noun}s, {cfg.num_server_rounds} rounds, metric {primary} ...", flush=True)
    rows = []
    for codec in CODECS:
        cfg_c, params_c = sc.configure({**overrides, "update-compression": codec})
        outcome, score = federate(sc, cfg_c, params_c, splits)
        recs = outcome.monitor.rounds
        n = max(1, len(recs))
        rows.append(
            {
                "scenario": name,
                "codec": "float32" if codec == "none" else codec,
                "rounds": len(recs),
                "updates_per_round": sum(r.replies for r in recs) / n,
                "update_bytes_per_round": sum(r.bytes_received_train for r in recs) / n,
                "broadcast_bytes_per_round": sum(r.bytes_sent_train for r in recs) / n,
                "all_bytes_per_round": sum(r.bytes_sent + r.bytes_received for r in recs) / n,
                "metric": primary,
                "final_metric": score["union"].get(primary),
                "wall_time_s": score["wall_time_s"],
            }
        )
    base = rows[0]
    for row in rows:
        row["update_bytes_vs_float32"] = row["update_bytes_per_round"] / base["update_bytes_per_round"]
        row["all_bytes_vs_float32"] = row["all_bytes_per_round"] / base["all_bytes_per_round"]
    return rows


def _mb(n: float) -> str:
    return f"{n / 1e6:.3f}"


def main() -> None:
    """Measure every scenario and print the table."""
    args = arguments(__doc__, SCENARIOS).parse_args()
    overrides = settings(args)
    print_machine()
    rows = [row for name in args.scenarios.split(",") for row in measure(name, overrides)]
    print()
    print(
        table(
            [
                "scenario",
                "codec",
                "updates/round",
                "updates MB/round",
                "vs float32",
                "broadcast MB/round",
                "all MB/round",
                "vs float32",
                "final metric",
                "wall s",
            ],
            [
                [
                    r["scenario"],
                    r["codec"],
                    f"{r['updates_per_round']:.0f}",
                    _mb(r["update_bytes_per_round"]),
                    f"{r['update_bytes_vs_float32']:.2f}",
                    _mb(r["broadcast_bytes_per_round"]),
                    _mb(r["all_bytes_per_round"]),
                    f"{r['all_bytes_vs_float32']:.2f}",
                    f"{r['metric']} {r['final_metric']:.4f}" if r["final_metric"] is not None else "n/a",
                    f"{r['wall_time_s']:.0f}",
                ]
                for r in rows
            ],
        )
    )
    write_json(args.json, {"benchmark": "communication", "rows": rows})


if __name__ == "__main__":
    main()
