"""Exported models: what a run spends writing them, their size, and how fast a loaded model scores new records.

For each scenario it runs one small federation on the in-process grid (the suite's
default settings but the rounds), then reads the run's ``models/`` folder: the time
``export_models`` took, the bytes of every model, how long ``load_model`` takes (every
byte checked against the manifest), the records a loaded federated model scores per
second through the training adapter, and the largest difference between those scores
and the run's own test scores (``models/test_scores.csv``).

Run: ``.venv/bin/python benchmarks/model_export.py [--scenarios tabular,medical-clinical] [--json out.json]``
(about a minute per scenario on 2 cores).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import arguments, median, print_machine, settings, table, timed, write_json

from flcore import scenario as registry
from flcore.cli import main as flsuite
from flcore.serving.model import load_model

DEFAULT = "tabular,medical-clinical,iot-vibration-fleet"


def _first_site(out: Path) -> tuple[str, Path]:
    """The run's first site and the folder it was read from (its ``source`` may name its one file)."""
    site = json.loads((out / "results.json").read_text())["data"]["sites"][0]
    source = Path(site["source"])
    return site["name"], source.parent if source.is_file() else source


def measure(name: str, rounds: int, work: Path, sets: dict[str, str]) -> dict[str, object]:
    """One scenario's figures (see module docstring)."""
    out = work / name
    profile = cProfile.Profile()
    argv = ["run", name, "--engine", "inprocess", "--rounds", str(rounds), "--out", str(out), "--quiet", "--no-report"]
    argv += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    profile.runcall(flsuite, argv)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    export_s = next(v[3] for k, v in stats.items() if k[2] == "export_models")
    models = out / "models"
    sizes = [p.stat().st_size for p in models.rglob("*") if p.is_file() and p.name != "test_scores.csv"]
    load_s = median(timed(lambda: load_model(out), repeats=5))
    model = load_model(out)
    site, folder = _first_site(out)
    t0 = time.perf_counter()
    scores = model.scores(folder)
    score_s = time.perf_counter() - t0
    run = pd.read_csv(models / "test_scores.csv")
    run = run[run["site"] == site]
    both = run.merge(scores, on="record")
    return {
        "scenario": name,
        "models": len(list(models.rglob("manifest.json"))),
        "export_s": round(float(export_s), 3),
        "bytes": int(sum(sizes)),
        "load_s": round(load_s, 4),
        "records_scored": len(scores),
        "records_per_s": round(len(scores) / score_s, 1),
        "test_records_matched": len(both),
        "max_abs_diff": float(np.abs(both["federated"] - both["score"]).max()) if len(both) else None,
    }


def main() -> None:
    """Print the figures for every scenario; optionally write them as JSON."""
    parser = arguments(__doc__ or "", DEFAULT)
    parser.add_argument("--rounds", type=int, default=2, help="federated rounds per run (default 2)")
    args = parser.parse_args()
    print_machine()
    names = [n for n in str(args.scenarios).split(",") if n]
    for n in names:
        registry.get(n)  # an unknown name fails before any run
    with tempfile.TemporaryDirectory(prefix="flsuite-export-bench-") as tmp:
        rows = [measure(n, args.rounds, Path(tmp), settings(args)) for n in names]
    headers = list(rows[0])
    print(table(headers, [[r[h] for h in headers] for r in rows]))
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
