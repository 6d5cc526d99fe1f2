"""External validation: a trained model scored on labelled sites that did not train it, as a run scores its arms.

What a hospital does before adopting a model: read its own data through the same
adapter and checks as training, encode it with the model's preprocessing, and score
the model's predictions with the run's metrics, per site and over the sites, at the
operating threshold the model was exported with (chosen on the training
federation's validation data, never on the data being evaluated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flcore.data.site import SiteData, list_site_dirs
from flcore.exceptions import DataValidationError
from flcore.experiment.results import clean, now_utc, suite_version
from flcore.learning import metrics
from flcore.serving.model import TrainedModel


def site_folders(model: TrainedModel, data: Path) -> list[Path]:
    """``data`` itself when it is one site (a folder, or a table file), else its site sub-folders."""
    adapter = model.adapter()
    data = Path(data)
    if data.is_file():
        return [data]
    subfolders = [p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")] if data.is_dir() else []
    if adapter.can_read(data) and not any(adapter.can_read(p) for p in subfolders):
        return [data]
    return list_site_dirs(data, adapter)


def evaluate_model(model: TrainedModel, data: Path, *, strict: bool = True) -> dict[str, Any]:
    """Score ``model`` on every labelled site under ``data``; the document ``evaluation.json`` holds.

    Raises
    ------
    DataValidationError
        For data the adapter refuses, records without labels, or input that is not the model's.
    """
    task = model.task
    primary = task.primary_metric
    threshold = model.threshold
    per_site: dict[str, Any] = {}
    ys, scores, sizes = [], [], {}
    for folder in site_folders(model, data):
        site = model.read(folder, strict=strict, labelled=True)
        x, y, not_evaluated = _evaluated(site)
        s = np.asarray(task.predict(model.model, x), dtype=np.float64)
        per_site[site.name] = task.score(y, s, threshold)
        sizes[site.name] = {
            "n": len(y),
            "positives": int(y.sum()),
            "not_evaluated": not_evaluated,
            "skipped": site.info.get("skipped", {}),
        }
        ys.append(y)
        scores.append(s)
    union = task.score(np.concatenate(ys), np.concatenate(scores), threshold)
    names = [k for k in union if k not in ("n", "n_positive")]
    trained = model.manifest.get("metrics", {})
    return clean(
        {
            "kind": "evaluation",
            "suite_version": suite_version(),
            "created_utc": now_utc(),
            "model": {
                "path": str(model.folder),
                "digest": model.digest,
                "scenario": model.manifest["scenario"],
                "arm": model.manifest["arm"],
                "site": model.manifest.get("site"),
                "run_id": model.manifest.get("run_id"),
                "plan": model.manifest.get("plan"),
                "trained_on": model.manifest.get("trained_on"),
            },
            "data": {"source": str(data), "sites": sizes},
            "primary_metric": primary,
            "threshold": {
                "value": threshold,
                "note": "the model's own operating point, chosen on "
                + str(model.manifest.get("threshold", {}).get("chosen_on", "validation data"))
                if threshold is not None
                else "the model has no single operating point (its task chooses none, or each site calibrates "
                "its own): threshold-free metrics only",
            },
            "per_site": per_site,
            "union": union,
            "mean_over_sites": {k: metrics.nanmean([m.get(k) for m in per_site.values()]) for k in names},
            "at_training": {"test": trained.get("test"), "scope": trained.get("scope")},
        }
    )


def _evaluated(site: SiteData) -> tuple[np.ndarray, np.ndarray, int]:
    """The examples whose label is an observation: all, or where an adapter marks them (``info["labelled"]``).

    A device's unlabelled service recordings are taken as normal for training, but only its labelled
    recordings say whether a fault was there; they alone are evaluated.

    Raises
    ------
    DataValidationError
        When no labelled example is left.
    """
    mask = site.info.get("labelled")
    if mask is None:
        return site.x, site.y, 0
    keep = np.asarray(mask, dtype=bool)
    if not keep.any():
        raise DataValidationError(
            site.source or site.name,
            "no labelled record: evaluation needs records whose label was observed.",
            "Add the labels file the scenario reads (for a device: labels.csv naming normal and fault recordings).",
        )
    return site.x[keep], site.y[keep], int((~keep).sum())


def evaluation_markdown(doc: dict[str, Any]) -> str:
    """The evaluation's report section: the model, the per-site table and the union against training."""
    m, primary = doc["model"], doc["primary_metric"]
    t = doc["threshold"]["value"]
    cols = [primary, "pr_auc", "roc_auc", "sensitivity", "specificity"]
    cols = list(dict.fromkeys(c for c in cols if c in doc["union"]))
    lines = [
        "## External validation",
        "",
        f"Model: {m['scenario']}, {m['arm']} arm"
        + (f" of site {m['site']}" if m.get("site") else "")
        + f", run {m['run_id']}, trained on {', '.join(m['trained_on'] or [])} (digest `{m['digest'][:16]}`).",
        f"Data: {doc['data']['source']}. Operating threshold: "
        + (f"{t:.4g} ({doc['threshold']['note']})." if t is not None else doc["threshold"]["note"] + "."),
        "",
        "| site | records | positives | " + " | ".join(cols) + " |",
        "|---|---:|---:|" + "---:|" * len(cols),
    ]
    for name, row in doc["per_site"].items():
        size = doc["data"]["sites"][name]
        lines.append(
            f"| {name} | {size['n']} | {size['positives']} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |"
        )
    u = doc["union"]
    n = sum(s["n"] for s in doc["data"]["sites"].values())
    pos = sum(s["positives"] for s in doc["data"]["sites"].values())
    lines.append(f"| **all sites** | {n} | {pos} | " + " | ".join(_fmt(u.get(c)) for c in cols) + " |")
    before = (doc.get("at_training") or {}).get("test") or {}
    if before.get(primary) is not None:
        lines += [
            "",
            f"At training, on {doc['at_training']['scope']}: {primary} {_fmt(before.get(primary))}; "
            f"here {_fmt(u.get(primary))}.",
        ]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
