"""Shared helpers of the benchmark scripts: the machine the figures come from, timing, tables, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, and the Python, flwr and torch versions (without importing them)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "flwr": _version("flwr"),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "ray": _version("ray"),
    }


def print_machine(info: dict[str, Any] | None = None) -> None:
    """Print :func:`machine` (or ``info``) as one short block."""
    m = info or machine()
    print(
        f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['ram_gib']} GiB RAM, {m['os']}\n"
        f"         Python {m['python']}, flwr {m['flwr']}, torch {m['torch']}"
    )


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """The median (the figure reported: robust to one slow repeat)."""
    return float(statistics.median(values))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, right-aligned, as the scripts print it (also valid Markdown)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """Write ``figures`` and the machine to ``path`` (if given), whole or not at all."""
    if not path:
        return
    from flcore.outputs import write_text_atomic

    target = write_text_atomic(path, json.dumps({"machine": machine(), **figures}, indent=2) + "\n")
    print(f"figures written to {target}")


def gib(n_bytes: float) -> str:
    """Bytes as GiB with two decimals."""
    return f"{n_bytes / 2**30:.2f}"


def arguments(doc: str, scenarios: str | None = None) -> argparse.ArgumentParser:
    """A parser with the options every scenario benchmark takes: ``--set`` and ``--json`` (and ``--scenarios``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if scenarios is not None:
        parser.add_argument("--scenarios", default=scenarios, help=f"comma-separated (default {scenarios})")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a setting, as flsuite takes it"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser


def settings(args: argparse.Namespace) -> dict[str, str]:
    """The ``--set`` pairs as a dict."""
    pairs = [pair.split("=", 1) for pair in args.set]
    bad = [p[0] for p in pairs if len(p) != 2]
    if bad:
        raise SystemExit(f"--set takes KEY=VALUE, got '{bad[0]}'")
    return dict(pairs)  # type: ignore[arg-type]
