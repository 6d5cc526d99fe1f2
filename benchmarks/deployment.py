"""Time per round of a real deployment on loopback against the simulation engine, same scenario and settings.

What it measures
    The same federation (scenario, sites, data, rounds, ``--set`` settings, seed)
    run twice or more:

    * simulated: ``flsuite run SCENARIO --data DIR`` (Flower's simulation engine, Ray);
    * deployed: ``flsuite coordinator start`` (SuperLink with TLS, site authentication
      and its database, behind the Fleet gateway), one ``flsuite site join`` per site
      (SuperNode with the site's key) and ``flsuite submit`` (the ServerApp), all on
      127.0.0.1, as tests/test_deploy.py sets them up; once per
      ClientApp mode of ``site join`` (this script's ``--clientapp``, passed to
      the sites as ``FLSUITE_CLIENTAPP``): ``warm`` (one pre-imported ClientApp
      worker per SuperNode that forks a process per message, the default) and
      ``per-message`` (Flower's default: a fresh ``flwr-clientapp`` per message).

    Per-round wall times come from each run's results.json round records
    (``wall_time_s``, flcore/federation/monitor.py RoundRecord), for both paths. Totals are
    wall-clock seconds from launching the first process to the last one's exit,
    startup included (for simulation that is the whole ``flsuite run``, whose
    centralised and local-only baselines take a few seconds more; the federated
    arm's own time, Ray start included, is shown beside it).

How to run (from the repository root; about 7 minutes on 2 cores with the defaults, of which
the per-message deployment takes half)::

    .venv/bin/python benchmarks/deployment.py
    .venv/bin/python benchmarks/deployment.py --rounds 5 --set local-epochs=2 --json runs/bench-deploy.json
    .venv/bin/python benchmarks/deployment.py --clientapp warm --skip-simulation --workdir /tmp/bench

``--workdir`` (or ``--keep``) keeps every run's logs and results.json for a look afterwards.

Every process it starts is stopped at the end, on error and on Ctrl-C as well.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import machine, print_machine, write_json

from flcore.deploy.join import CLIENTAPP_ENV, CLIENTAPP_MODES
from flcore.deploy.processes import free_port, stop_tree

BIN = Path(sys.executable).parent
FLSUITE = str(BIN / "flsuite")


class Processes:
    """Processes this script started, each logging to a file; :meth:`stop_all` ends them and their helpers."""

    def __init__(self, folder: Path, timestamps: bool = False) -> None:
        self.folder = folder
        self.timestamps = timestamps
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if self.timestamps:  # each line prefixed with the wall-clock time it was read, for a round's timeline
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
            threading.Thread(target=_stamp_lines, args=(proc, self.folder / f"{name}.log"), daemon=True).start()
        else:
            with (self.folder / f"{name}.log").open("ab") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.started.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, lines: int = 12) -> str:
        return "\n".join(
            f"--- {name}.log\n" + "\n".join(self.log(name).splitlines()[-lines:]) for name, _ in self.started
        )

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):  # sites first, then the coordinator
            stop_tree(proc, grace_s=10)
        self.started.clear()


def _stamp_lines(proc: subprocess.Popen[bytes], path: Path) -> None:
    """Copy ``proc``'s output to ``path``, each line prefixed with the time it arrived (HH:MM:SS.mmm)."""
    if proc.stdout is None:  # started with stdout=PIPE, which always gives one
        raise RuntimeError("_stamp_lines needs a process started with stdout=subprocess.PIPE")
    with path.open("ab") as log:
        for line in proc.stdout:
            now = time.time()
            stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d} "
            log.write(stamp.encode() + line)
            log.flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run(cmd: list[str], timeout: float = 300) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _wait(condition: Any, timeout: float, what: str, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{procs.tails()}")
        time.sleep(0.2)


def _settings_args(args: argparse.Namespace) -> list[str]:
    out = ["--rounds", str(args.rounds), "--seed", str(args.seed)]
    for pair in args.set:
        out += ["--set", pair]
    return out


def _round_figures(history: list[dict[str, Any]]) -> dict[str, Any]:
    times = [float(r["wall_time_s"]) for r in history]
    later = times[1:] or times
    return {
        "rounds": len(times),
        "round_wall_s": [round(t, 3) for t in times],
        "round1_s": round(times[0], 3) if times else None,
        "later_rounds_mean_s": round(statistics.fmean(later), 3) if later else None,
        "round_mean_s": round(statistics.fmean(times), 3) if times else None,
        "rounds_total_s": round(sum(times), 3),
        "sites_trained": [len(r.get("sites_trained", [])) for r in history],
    }


def prepare(work: Path, args: argparse.Namespace, sites: list[str]) -> None:
    """Certificates and site keys, generated data, and a data folder holding only the chosen sites."""
    _run([FLSUITE, "certs", "init", "--out", str(work / "certs"), "--sites", ",".join(sites)])
    _run([FLSUITE, "data", "make", args.scenario, "--scale", str(args.scale), "--seed", str(args.seed),
          "--out", str(work / "data")])  # fmt: skip
    chosen = work / "data-chosen"
    chosen.mkdir()
    for site in sites:
        if not (work / "data" / site).is_dir():
            known = ", ".join(sorted(p.name for p in (work / "data").iterdir() if p.is_dir()))
            raise SystemExit(f"--sites: no site {site!r} in the generated data (there are: {known})")
        (chosen / site).symlink_to(work / "data" / site)


def run_simulated(work: Path, args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    """``flsuite run`` on the chosen sites' data: the federated arm's round records and the wall times."""
    out = work / "simulated"
    cmd = [FLSUITE, "run", args.scenario, "--data", str(work / "data-chosen"), "--out", str(out)]
    cmd += [*_settings_args(args), "--quiet", "--no-report"]
    t0 = time.perf_counter()
    proc = procs.start("simulated", cmd)
    code = proc.wait(timeout=args.timeout)
    total = time.perf_counter() - t0
    procs.stop_all()
    if code != 0:
        raise RuntimeError(f"flsuite run failed ({code}):\n{procs.tails(30)}")
    results = json.loads((out / "results.json").read_text())
    fed = results["arms"]["federated"]
    return {
        "path": "simulation",
        "total_wall_s": round(total, 2),
        "federation_wall_s": round(float(fed["wall_time_s"]), 2),
        **_round_figures(fed["history"]),
    }


def run_deployed(
    work: Path, args: argparse.Namespace, procs: Processes, sites: list[str], domain: str, mode: str
) -> dict[str, Any]:
    """The coordinator service, one ``site join`` per site (ClientApp ``mode``), ``submit``: rounds, wall times."""
    out, port, control = work / f"deployed-{mode}", free_port(), free_port()
    certs, state = work / "certs", work / f"coordinator-{mode}"
    start = [FLSUITE, "coordinator", "start", "--state", str(state), "--certs", str(certs), "--port", str(port)]
    start += ["--control", f"127.0.0.1:{control}"]
    site_env = {**os.environ, CLIENTAPP_ENV: mode}
    t0 = time.perf_counter()
    procs.start(f"coordinator-{mode}", start)
    _wait(lambda: "coordinator ready" in procs.log(f"coordinator-{mode}"), 120, "the coordinator", procs)
    ready = time.perf_counter() - t0
    for site in sites:
        join = [FLSUITE, "site", "join", "--superlink", f"127.0.0.1:{port}", "--domain", domain]
        join += ["--data", str(work / "data" / site), "--key", str(certs / "sites" / f"{site}.key")]
        join += ["--ca", str(certs / "ca.crt")]
        procs.start(f"join-{mode}-{site}", join, env=site_env)
    submit = [FLSUITE, "submit", args.scenario, "--coordinator", str(state), "--out", str(out)]
    submit += [*_settings_args(args), "--wait", "180"]
    code = procs.start(f"submit-{mode}", submit).wait(timeout=args.timeout)
    total = time.perf_counter() - t0
    failed = code != 0 and procs.tails(30)
    procs.stop_all()
    if failed:
        raise RuntimeError(f"flsuite submit failed ({code}):\n{failed}")
    results = json.loads((out / "results.json").read_text())
    return {
        "path": f"deployed, clientapp={mode}",
        "clientapp": mode,
        "total_wall_s": round(total, 2),
        "coordinator_ready_s": round(ready, 2),
        "federation_wall_s": round(float(results["wall_time_s"]), 2),
        **_round_figures(results["history"]),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The figures of every run, one line each."""
    sim = next((r for r in rows if r["path"] == "simulation"), None)
    head = (
        f"{'path':<34} {'rounds':>6} {'round 1':>8} {'later':>8} {'mean':>8} {'x sim':>6} "
        f"{'rounds':>8} {'federation':>10} {'total':>8}"
    )
    unit = f"{'':<34} {'':>6} {'s':>8} {'s/round':>8} {'s/round':>8} {'':>6} {'total s':>8} {'s':>10} {'s':>8}"
    lines = [head, unit, "-" * len(head)]
    for r in rows:
        ratio = f"{r['round_mean_s'] / sim['round_mean_s']:.1f}" if sim and sim["round_mean_s"] else "-"
        lines.append(
            f"{r['path']:<34} {r['rounds']:>6} {r['round1_s']:>8.2f} {r['later_rounds_mean_s']:>8.2f} "
            f"{r['round_mean_s']:>8.2f} {ratio:>6} {r['rounds_total_s']:>8.2f} {r['federation_wall_s']:>10.2f} "
            f"{r['total_wall_s']:>8.2f}"
        )
    lines.append(
        "round 1 / later / mean: results.json round records (wall_time_s); federation: the federated arm "
        "(simulation, Ray start included) or the deployed ServerApp's run (waiting for sites included); "
        "total: first process started to last one ended."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prepare the pilot, run each path in turn, print the table (and write the JSON)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", default="finance-five-banks", help="scenario (default finance-five-banks)")
    p.add_argument("--sites", default="bank_a,bank_b,bank_c", help="sites taking part (default bank_a,bank_b,bank_c)")
    p.add_argument("--scale", type=float, default=0.05, help="size of the generated data (default 0.05)")
    p.add_argument("--rounds", type=int, default=3, help="federated rounds (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a setting for both paths, as for flsuite run/submit (default: local-epochs=1)",
    )
    p.add_argument(
        "--clientapp",
        default=",".join(CLIENTAPP_MODES),
        help=f"deployed ClientApp modes to measure, comma-separated (default {','.join(CLIENTAPP_MODES)})",
    )
    p.add_argument("--skip-simulation", action="store_true", help="measure the deployed runs only")
    p.add_argument("--timeout", type=float, default=600, help="seconds one run may take (default 600)")
    p.add_argument("--workdir", help="folder for certificates, data and run outputs (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, results.json of every run)")
    p.add_argument("--json", help="also write the figures as JSON to this path")
    p.add_argument(
        "--timestamps", action="store_true", help="prefix every line of the processes' logs with the time it came"
    )
    args = p.parse_args(argv)
    args.set = args.set or ["local-epochs=1"]
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    modes = [m.strip() for m in args.clientapp.split(",") if m.strip()]
    unknown = [m for m in modes if m not in CLIENTAPP_MODES]
    if unknown:
        p.error(f"--clientapp: unknown mode(s) {', '.join(unknown)} (known: {', '.join(CLIENTAPP_MODES)})")
    from flcore import scenario

    domain = scenario.get(args.scenario).domain

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="flsuite-bench-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        p.error(f"--workdir {work} is not empty")
    info = machine()
    print_machine(info)
    print(f"scenario {args.scenario}, sites {','.join(sites)}, scale {args.scale}, {args.rounds} rounds, "
          f"seed {args.seed}, settings {' '.join(args.set)}; work folder {work}", flush=True)  # fmt: skip
    procs = Processes(work, timestamps=args.timestamps)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    rows: list[dict[str, Any]] = []
    try:
        prepare(work, args, sites)
        if not args.skip_simulation:
            print("simulation ...", flush=True)
            rows.append(run_simulated(work, args, procs))
            print(f"  {rows[-1]['round_wall_s']} s per round, {rows[-1]['total_wall_s']} s in all", flush=True)
        for mode in modes:
            print(f"deployment, clientapp={mode} ...", flush=True)
            rows.append(run_deployed(work, args, procs, sites, domain, mode))
            print(f"  {rows[-1]['round_wall_s']} s per round, {rows[-1]['total_wall_s']} s in all", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping every process started", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    print_machine(info)
    write_json(
        args.json,
        {
            "benchmark": "deployment",
            "settings": {
                "scenario": args.scenario,
                "sites": sites,
                "scale": args.scale,
                "rounds": args.rounds,
                "seed": args.seed,
                "set": args.set,
            },
            "results": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
