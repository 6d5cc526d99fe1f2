"""Deployed fedxgb-hist on 127.0.0.1 with TLS against the simulation: the same model? who listens? bytes, time.

It makes a pilot PKI and five banks' data, runs ``flsuite run`` on the in-process
engine (XGBoost's rabit tracker on loopback), then the same run deployed: a
coordinator service, five ``flsuite site join`` services and ``flsuite submit``
(XGBoost's federated server with mutual TLS). While the deployed run goes on it
lists, twice a second, the listening sockets of every site process (each ``site
join`` and all its descendants: SuperNode, ClientApp worker, XGBoost sessions).
It prints whether the two federated models are byte-identical, the per-round
model hashes, each bank's communicator bytes per tree in both runs, the wall times
and the sites' listening sockets.

The deployed run needs XGBoost's federated communicator, which ``xgboost-cpu`` lacks:
run this script with a virtual environment holding the full wheel instead, e.g.::

    python3 -m venv /tmp/fedvenv
    /tmp/fedvenv/bin/pip install -c constraints.txt -e .
    /tmp/fedvenv/bin/pip uninstall -y xgboost-cpu && /tmp/fedvenv/bin/pip install --no-deps xgboost==3.2.0
    /tmp/fedvenv/bin/python benchmarks/xgboost_deployed.py [--trees 10] [--rounds 3] [--scale 0.3]

(about 5 minutes on 2 cores with the defaults; ports 9192-9194 must be free).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

BANKS = ("bank_a", "bank_b", "bank_c", "bank_d", "bank_e")
FLEET, CONTROL, XGB = 9192, 9193, 9194


def flsuite(*args: str) -> list[str]:
    """An ``flsuite`` command line run by this Python."""
    return [sys.executable, "-m", "flcore.cli", *args]


def site_listeners(stop: threading.Event, seen: dict[tuple[str, str], int]) -> None:
    """Count, until ``stop``, the listening sockets of every ``site join`` process and its descendants."""
    while not stop.wait(0.5):
        for join in psutil.process_iter(["cmdline"]):
            cmd = join.info["cmdline"] or []
            if "join" not in cmd or "--superlink" not in cmd:
                continue
            try:
                procs = [join, *join.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    name = " ".join(proc.cmdline()[1:4])
                    for conn in proc.net_connections(kind="inet"):
                        if conn.status == psutil.CONN_LISTEN:
                            key = (f"{conn.laddr.ip}:{conn.laddr.port}", name)
                            seen[key] = seen.get(key, 0) + 1
                except psutil.Error:
                    continue


def per_tree(collective: dict[str, Any]) -> dict[str, float]:
    """MB each bank sent per tree on the communicator's sockets."""
    trees = collective["trees"]
    return {s: round(c["bytes_sent"] / trees / 1e6, 2) for s, c in collective["per_site"].items()}


def main() -> None:
    """Both runs, then the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, default=10, help="trees per round (local-epochs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.3, help="size of the generated banks")
    args = parser.parse_args()
    import xgboost

    if not xgboost.build_info().get("USE_FEDERATED"):
        sys.exit("This Python's XGBoost has no federated communicator; see this script's docstring.")
    work = Path(tempfile.mkdtemp(prefix="flsuite-xgb-deployed-"))
    settings = ["--set", "model=xgboost", "--set", f"local-epochs={args.trees}", "--rounds", str(args.rounds)]
    subprocess.run(flsuite("certs", "init", "--out", str(work / "certs"), "--sites", ",".join(BANKS)), check=True)
    make = flsuite("data", "make", "finance-five-banks", "--scale", str(args.scale), "--out", str(work / "data"))
    subprocess.run(make, check=True, stdout=subprocess.DEVNULL)
    t0 = time.perf_counter()
    run = flsuite("run", "finance-five-banks", "--data", str(work / "data"), *settings, "--engine", "inprocess")
    subprocess.run([*run, "--out", str(work / "sim"), "--quiet", "--no-report"], check=True)
    sim_wall = time.perf_counter() - t0

    logs: list[Any] = []
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (work / f"{name}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    seen: dict[tuple[str, str], int] = {}
    stop = threading.Event()
    try:
        start(
            "coordinator",
            [
                *flsuite("coordinator", "start", "--state", str(work / "state"), "--certs", str(work / "certs")),
                *("--port", str(FLEET), "--control", f"127.0.0.1:{CONTROL}", "--xgb-port", str(XGB)),
            ],
        )
        deadline = time.monotonic() + 90
        while "coordinator ready" not in (work / "coordinator.log").read_text():
            if time.monotonic() > deadline:
                sys.exit(f"the coordinator did not start; see {work / 'coordinator.log'}")
            time.sleep(0.5)
        for bank in BANKS:
            start(
                f"join-{bank}",
                [
                    *flsuite("site", "join", "--superlink", f"127.0.0.1:{FLEET}", "--domain", "finance"),
                    *("--data", str(work / "data" / bank), "--ca", str(work / "certs" / "ca.crt")),
                    *("--key", str(work / "certs" / "sites" / f"{bank}.key")),
                ],
            )
        watcher = threading.Thread(target=site_listeners, args=(stop, seen), daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        submit = flsuite("submit", "finance-five-banks", "--coordinator", str(work / "state"), *settings)
        done = subprocess.run([*submit, "--out", str(work / "dep"), "--wait", "120"], capture_output=True, text=True)
        dep_wall = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"the deployed run failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    finally:
        stop.set()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        for log in logs:
            log.close()

    sim = json.loads((work / "sim" / "results.json").read_text())
    dep = json.loads((work / "dep" / "results.json").read_text())
    same = (work / "sim/models/federated/model.json").read_bytes() == (
        work / "dep/models/federated/model.json"
    ).read_bytes()
    print(f"federated models byte-identical: {same}")
    print("round hashes, simulation:", [h["aggregate_hash"][-12:] for h in sim["arms"]["federated"]["history"]])
    print("round hashes, deployed:  ", [h["aggregate_hash"][-12:] for h in dep["history"]])
    print("MB sent per tree per bank, simulation (rabit):", per_tree(sim["arms"]["federated"]["collective"]))
    print("MB sent per tree per bank, deployed (federated, TLS):", per_tree(dep["collective"]))
    print(f"wall time: simulation run {sim_wall:.0f} s (all three arms); deployed federation {dep_wall:.0f} s")
    print(f"deployed rounds: {[round(h['wall_time_s'], 1) for h in dep['history']]} s")
    print("listening sockets of the site processes (address, process, samples):")
    for (address, name), n in sorted(seen.items()):
        print(f"  {address:24s} {name}  ({n})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
