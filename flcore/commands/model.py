"""`flsuite predict` and `flsuite evaluate`: a run's model on new records, and on sites that did not train it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flcore.data.tables import TABLE_SUFFIXES
from flcore.exceptions import OutputFolderError
from flcore.outputs import check_output_dir, check_output_file, write_text_atomic


def cmd_predict(args: argparse.Namespace) -> int:
    """`flsuite predict MODEL --data PATH --out scores.csv`: one score (and decision) per record."""
    from flcore.data.tables import write_table
    from flcore.serving.model import load_model

    out = check_output_file(args.out, what="the scores", option="--out", name="scores.csv")
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise OutputFolderError(f"--out {out}: expected a .csv or .parquet file name for the scores, e.g. scores.csv.")
    if out.exists() and not args.force:
        raise OutputFolderError(f"--out {out} exists. Choose another file, or pass --force to overwrite it.")
    model = load_model(args.model)
    scores = model.scores(Path(args.data), strict=not args.lenient)
    write_table(scores, out)
    decided = (
        f", {int(scores['decision'].sum())} at or above the threshold {model.threshold:.4g}"
        if "decision" in scores
        else ""
    )
    print(f"model: {model}\nscored {len(scores)} record(s){decided}: {out}")
    unseen = int(scores.attrs.get("unseen_categories", 0))
    if unseen:
        print(
            f"note: {unseen} cell(s) hold a category no site trained on; the model sees none of its known "
            "categories there (a new merchant category, a typo). Check them before trusting those scores."
        )
    for reason, count in dict(scores.attrs.get("skipped", {})).items():
        if count:
            print(f"note: {count} record(s) left out: {reason.replace('_', ' ')}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`flsuite evaluate MODEL --data SITE_DIR`: external validation, evaluation.json and evaluation.md."""
    from flcore.serving.evaluate import evaluate_model, evaluation_markdown
    from flcore.serving.model import load_model

    out = check_output_dir(args.out or "runs/evaluation", what="the evaluation")
    if (out / "evaluation.json").exists() and not args.force:
        raise OutputFolderError(
            f"--out {out} holds an evaluation already. Choose another --out, or pass --force to overwrite it."
        )
    model = load_model(args.model)
    doc = evaluate_model(model, Path(args.data), strict=not args.lenient)
    text = evaluation_markdown(doc)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "evaluation.json", json.dumps(doc, indent=2) + "\n")
    write_text_atomic(out / "evaluation.md", text)
    print(text)
    print(f"evaluation: {out / 'evaluation.json'}, {out / 'evaluation.md'}")
    return 0
