"""Before a run (`run`, `serve`, `sweep`): refuse output folders it cannot write or would lose, reuse finished seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flcore.commands.common import resume_folder, run_values
from flcore.config import to_dict
from flcore.exceptions import ConfigError
from flcore.experiment.results import clean
from flcore.experiment.seeds import seed_folder, seed_list
from flcore.outputs import (
    RESULTS,
    OutputFolderError,
    check_output_dir,
    check_output_file,
    finished_run,
    refuse_finished_run,
)

#: What a run writes to its output folder, for the messages of the output checks.
_RUN_OUTPUTS = "the run's outputs (results.json, report, checkpoint, audit trail)"


def preflight_run(args: argparse.Namespace, sc: Any, cfg: Any, resume: Any, out: Path) -> None:
    """Refuse, before any data is read or generated, a run whose outputs could not be written or would be lost.

    ``out`` must be a folder this user may write to (or create); it must not hold an unfinished run's
    checkpoint (without ``--resume`` or ``--fresh``) nor a finished run's results (without ``--force``),
    except that ``--resume`` may continue in its own folder and ``--seeds N`` reuses finished seeds
    whose settings are those of this run.
    """
    check_output_dir(out, what=_RUN_OUTPUTS)
    if args.audit:
        check_output_file(args.audit, what="the audit trail", option="--audit", name="audit.jsonl")
    seeds = getattr(args, "seeds", None)
    if seeds is not None and seeds < 1:
        raise ConfigError(
            f"--seeds must be at least 1; got {seeds}. Pass --seeds N with N of 1 or more (e.g. --seeds 5), "
            "or leave it out for one seed."
        )
    if seeds is not None and seeds != 1:
        _preflight_seeds(args, sc, cfg.seed, out)
        return
    _refuse_to_overwrite(out, args)
    resumed = resume_folder(args) if resume is not None else None
    if resumed is None or resumed.resolve() != out.resolve():  # --resume continues in its own folder
        refuse_finished_run(out, force=args.force)


def _preflight_seeds(args: argparse.Namespace, sc: Any, first: int, out: Path) -> None:
    """`--seeds N`: each seed folder as in :func:`preflight_run`; finished seeds are reused or refused.

    Without ``--force``, a seed folder's finished results may only be reused (same settings and data,
    no ``--fresh``), and the summary ``OUT/results.json`` only rewritten when every seed it lists is reused.
    """
    seeds = seed_list(first, args.seeds)
    reused = set()
    for seed in seeds:
        folder = seed_folder(out, seed)
        check_output_dir(folder, what=f"seed {seed}'s outputs")
        cfg, params = sc.configure({**run_values(args), "seed": seed})
        prev, differs = _seed_results(args, folder, cfg, params)
        if prev is not None and differs is None and not args.fresh:
            reused.add(seed)
            continue
        _refuse_to_overwrite(folder, args)
        if args.force or not (folder / RESULTS).is_file():
            continue
        why = differs or "--fresh runs every seed again"
        raise OutputFolderError(
            f"{folder} holds the results of a finished run of seed {seed} ({finished_run(folder)}) that this run "
            f"cannot reuse ({why}): it would run seed {seed} again and overwrite them. Choose another --out, or "
            "pass --force to overwrite it" + (" (or drop --fresh to reuse it)." if differs is None else ".")
        )
    found = finished_run(out)
    if found is None or args.force:
        return
    try:
        doc = json.loads((out / RESULTS).read_text())
    except (OSError, ValueError):
        doc = None
    runs = doc.get("runs") if isinstance(doc, dict) and doc.get("kind") == "seeds" else None
    listed = [r.get("seed") for r in runs if isinstance(r, dict)] if isinstance(runs, list) else None
    if listed and all(seed in reused for seed in listed):
        return  # the same run again: its summary is written anew from the same seeds (and any new ones)
    over = f" over seeds {listed}" if listed else ""
    raise OutputFolderError(
        f"{out} holds the results of a finished run{over} ({found}); this run over seeds {seeds} would replace "
        "them. Choose another --out, or pass --force to overwrite it."
    )


def finished_seed(args: argparse.Namespace, folder: Path, cfg: Any, params: Any) -> dict[str, Any] | None:
    """A seed's results.json from an earlier run with the same settings and data (not with --fresh)."""
    if args.fresh:
        return None
    prev, differs = _seed_results(args, folder, cfg, params)
    return prev if differs is None else None


def _seed_results(
    args: argparse.Namespace, folder: Path, cfg: Any, params: Any
) -> tuple[dict[str, Any] | None, str | None]:
    """A seed folder's results.json (None if absent or unreadable) and why this run cannot reuse it (None if it can)."""
    file = folder / "results.json"
    if not file.is_file():
        return None, "it holds no results.json"
    try:
        prev = json.loads(file.read_text())
    except (OSError, ValueError):
        return None, f"{file} cannot be read"
    if not isinstance(prev, dict):
        return None, f"{file} is not a results document"

    def as_saved(obj: Any) -> Any:
        return json.loads(json.dumps(clean(to_dict(obj))))

    differ = []
    for saved, current in ((prev.get("config"), as_saved(cfg)), (prev.get("params"), as_saved(params))):
        saved = saved if isinstance(saved, dict) else {}
        differ += [
            f"{k} {saved.get(k)!r} there, {current.get(k)!r} now"
            for k in sorted(saved.keys() | current.keys(), key=lambda k: (k not in saved or k not in current, k))
            if saved.get(k) != current.get(k)
        ]
    data = prev.get("data")
    source = str(Path(args.data)) if args.data else "synthetic"
    before = data.get("source") if isinstance(data, dict) else None
    if before != source:
        differ.append(f"data {before!r} there, {source!r} now")
    if not differ:
        return prev, None
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    return prev, "its settings differ from this run's: " + "; ".join(differ[:3]) + more


def _refuse_to_overwrite(out: Path, args: argparse.Namespace) -> None:
    """A new run must not overwrite the checkpoint of an unfinished one (it would lose it, and its run id)."""
    from flcore.federation.checkpoint import CHECKPOINT_FILE, CheckpointError, read_checkpoint

    if args.resume or args.fresh or not (out / CHECKPOINT_FILE).is_file():
        return
    try:
        ckpt = read_checkpoint(out / CHECKPOINT_FILE)
    except CheckpointError:
        return
    planned = int(ckpt.config.get("num-server-rounds", 0))
    if ckpt.round < planned:
        raise CheckpointError(
            f"{out} holds the checkpoint of run {ckpt.run_id}, stopped after round {ckpt.round} of {planned}. "
            f"Continue it with --resume {out}, or start over there with --fresh (or choose another --out)."
        )
