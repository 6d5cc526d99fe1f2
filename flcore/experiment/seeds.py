"""Runs of one configuration under several seeds, their summary results.json, and reading run folders back.

``flsuite run SCENARIO --seeds N`` runs the three arms under seeds ``s, s+1, ...,
s+N-1`` (``s`` is the ``seed`` setting). Each seed changes the data split (and the
generated data), the initial weights and the sites sampled per round. Each
seed's results.json is written to ``OUT/seed-<s>/`` when that seed ends; the
summary ``OUT/results.json`` (kind ``"seeds"``) lists them with their SHA-256
and holds the statistics over seeds (:func:`flcore.experiment.stats.summarise`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flcore.exceptions import FlsuiteUserError, RunFolderError
from flcore.experiment.results import SCHEMA_VERSION, clean, now_utc, suite_version, validate_results
from flcore.experiment.stats import summarise

RESULTS = "results.json"


def seed_list(first: int, count: int) -> list[int]:
    """``count`` consecutive seeds from ``first``."""
    if count < 1:
        raise FlsuiteUserError(f"--seeds must be at least 1; got {count}.")
    return list(range(first, first + count))


def seed_folder(out: Path, seed: int) -> Path:
    """Where one seed's outputs go in a multi-seed run."""
    return Path(out) / f"seed-{seed}"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def with_statistics(results: dict[str, Any]) -> dict[str, Any]:
    """A single-seed results.json with its statistics block (no intervals with one seed)."""
    out = dict(results)
    out["statistics"] = summarise([results])
    return clean(out)


def summary_document(runs: Sequence[dict[str, Any]], files: Sequence[Path], out: Path) -> dict[str, Any]:
    """The multi-seed results.json: what is common to the seeds' runs, the runs' files, the statistics.

    Parameters
    ----------
    runs : sequence of dict
        Each seed's results.json document, in seed order.
    files : sequence of Path
        Where each was written (inside ``out``).
    out : Path
        The folder the summary is written to; the run files are listed relative to it.
    """
    first = runs[0]
    config = {k: v for k, v in first["config"].items() if k != "seed"}
    for run in runs[1:]:
        other = {k: v for k, v in run["config"].items() if k != "seed"}
        if other != config or run["params"] != first["params"] or run["scenario"] != first["scenario"]:
            raise ValueError("the runs of a multi-seed summary must share their scenario and settings but the seed")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "seeds",
        "suite_version": suite_version(),
        "created_utc": now_utc(),
        "scenario": first["scenario"],
        "domain": first["domain"],
        "seeds": [int(r["seed"]) for r in runs],
        "strategy": first["strategy"],
        "rounds": first["rounds"],
        "config": config,
        "params": first["params"],
        "primary_metric": first["primary_metric"],
        "environment": first.get("environment", {}),
        "runs": [
            {"seed": int(r["seed"]), "results": Path(f).relative_to(out).as_posix(), "sha256": file_sha256(f)}
            for r, f in zip(runs, files, strict=True)
        ],
        "statistics": summarise(runs),
    }
    doc = clean(doc)
    validate_results(doc)
    return doc


@dataclass
class RunFolder:
    """A run folder read back: its results.json, each seed's results, the statistics over them."""

    path: Path
    summary: dict[str, Any]
    runs: list[dict[str, Any]]
    statistics: dict[str, Any]

    @property
    def label(self) -> str:
        """How reports name this run: the strategy and what sets it apart, then the folder."""
        cfg = self.summary.get("config", {})
        parts = [str(self.summary["strategy"])]
        if cfg.get("privacy", "none") != "none":
            parts.append(f"{cfg['privacy']} eps {cfg.get('dp-epsilon')}")
        if cfg.get("update-compression", "none") != "none":
            parts.append(str(cfg["update-compression"]))
        if cfg.get("attack", "none") != "none":
            parts.append(f"attack {cfg['attack']}")
        if self.summary.get("params", {}).get("model") not in (None, "mlp", "cnn"):
            parts.append(str(self.summary["params"]["model"]))
        return ", ".join(parts)


def read_run_folder(path: Path) -> RunFolder:
    """Read a run folder written by ``flsuite run`` (one seed or several).

    Raises
    ------
    RunFolderError
        When the folder or its results.json is missing or unreadable, or a seed's
        results.json no longer matches the SHA-256 the summary recorded.
    """
    path = Path(path)
    file = path if path.suffix == ".json" else path / RESULTS
    folder = file.parent
    summary, _ = _read_json(file, "Run `flsuite run SCENARIO --out " + str(folder) + "` first, or name another folder.")
    if summary.get("kind", "run") == "run":
        stats = summary.get("statistics") or summarise([summary])
        return RunFolder(folder, summary, [summary], stats)
    if summary.get("kind") == "federated-only":  # a deployed run: the federated arm alone, no statistics over seeds
        return RunFolder(folder, summary, [summary], {})
    runs = []
    for entry in summary.get("runs", []):
        seed_file = folder / entry["results"]
        run, sha256 = _read_json(
            seed_file, f"It is seed {entry['seed']}'s results, listed in {file}; run the seeds again."
        )
        if sha256 != entry["sha256"]:
            raise RunFolderError(
                f"{seed_file} changed after {file} summarised it (its SHA-256 differs from the one recorded). "
                "A report must show the results it summarises: run the seeds again, or restore the file."
            )
        runs.append(run)
    if not runs:
        raise RunFolderError(f"{file} lists no runs. Run `flsuite run SCENARIO --seeds N` again.")
    return RunFolder(folder, summary, runs, summary.get("statistics") or summarise(runs))


def _read_json(file: Path, fix: str) -> tuple[dict[str, Any], str]:
    """A results.json document and the SHA-256 of its bytes, read once."""
    if not file.is_file():
        raise RunFolderError(f"{file} does not exist. {fix}")
    try:
        data = file.read_bytes()
        doc = json.loads(data)
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{file} is not a readable results.json ({err}). {fix}") from None
    if not isinstance(doc, dict) or "primary_metric" not in doc or "scenario" not in doc:
        raise RunFolderError(f"{file} is not an flsuite results.json (no scenario or primary_metric). {fix}")
    return doc, hashlib.sha256(data).hexdigest()


def run_seeds(
    seeds: Sequence[int],
    run_one: Callable[[int, Path], dict[str, Any]],
    out: Path,
    write: Callable[[Path, dict[str, Any]], Path],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``run_one(seed, folder)`` for every seed, write each seed's results, then the summary.

    A seed's results.json is written as soon as it ends; the summary only once
    every seed has ended, so a failed seed never leaves a summary behind.
    """
    runs, files = [], []
    for seed in seeds:
        folder = seed_folder(out, seed)
        results = run_one(seed, folder)
        files.append(write(folder / RESULTS, results))
        runs.append(results)
    summary = summary_document(runs, files, Path(out))
    write(Path(out) / RESULTS, summary)
    return summary, runs
