"""Every arm's model written with the results (``OUT/models/<arm>/``, :mod:`flcore.learning.artifact`), and test scores.

A run exports the federated model, the centralised one and each site's local-only
model, each with a manifest that says how to use it: its scenario and settings, the
input (feature names, shape), the schema and the federation's preprocessing of a
table, what the label means, the operating threshold chosen on validation data, the
metrics it earned on the held-out test splits, the training plan's hash and the
privacy spent. ``OUT/models/test_scores.csv`` holds every arm's score of every test
example, so that ``flsuite predict`` can be checked against the run itself.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flcore.config import RunConfig, to_dict
from flcore.data.site import SiteSplit
from flcore.experiment.results import now_utc, suite_version
from flcore.learning.artifact import model_files, write_model
from flcore.learning.task import Task
from flcore.outputs import atomic_write
from flcore.scenario import Scenario

MODELS = "models"
TEST_SCORES = "test_scores.csv"


def export_models(
    out: Path,
    scenario: Scenario,
    cfg: RunConfig,
    params: Any,
    task: Task,
    splits: list[SiteSplit],
    arms: dict[str, dict[str, Any]],
    models: dict[str, Any],
    context: dict[str, Any],
) -> dict[str, Any]:
    """Write every arm's model to ``out`` (replacing what a former run left there) and return results.json's ``models``.

    Paths in the returned entries are relative to the run folder (``out``'s parent).

    Parameters
    ----------
    out : Path
        The models folder (``OUT/models``); written beside it first, then renamed into place.
    arms : dict
        ``federated``, ``centralised`` and ``local_only`` arms of results.json (their metrics).
    models : dict
        ``federated`` and ``centralised`` models, ``local_only`` a dict site -> model.
    context : dict
        What every manifest shares: ``run_id``, ``plan``, ``schema``, ``preprocessing``,
        ``label``, ``privacy`` (the federated arm's).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".models-partial-"))
    try:
        entries: dict[str, Any] = {}
        first = splits[0].train
        names = list(first.info.get("feature_names", []) or [])  # type: ignore[call-overload]
        shared = _shared(
            scenario, cfg, params, task, {"shape": list(first.x.shape[1:]), "feature_names": names}, context
        )
        for arm in ("federated", "centralised"):
            manifest = {
                **shared,
                "arm": arm,
                "trained_on": [s.name for s in splits],
                "threshold": _threshold(arms[arm], task, None),
                "metrics": _metrics(arms[arm], None),
                "privacy": context.get("privacy") if arm == "federated" else {"mode": "none"},
            }
            entries[arm] = _entry(tmp / arm, Path(out.name, arm), task, models[arm], manifest)
        local: dict[str, Any] = {}
        for split in splits:
            manifest = {
                **shared,
                "arm": "local_only",
                "site": split.name,
                "trained_on": [split.name],
                "threshold": _threshold(arms["local_only"], task, split.name),
                "metrics": _metrics(arms["local_only"], split.name),
                "privacy": {"mode": "none"},
            }
            folder = Path("local_only", split.name)
            local[split.name] = _entry(
                tmp / folder, out.name / folder, task, models["local_only"][split.name], manifest
            )
        entries["local_only"] = local
        _write_test_scores(tmp / TEST_SCORES, task, splits, models)
        entries["test_scores"] = str(Path(out.name, TEST_SCORES))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entries


def _entry(folder: Path, final: Path, task: Task, model: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    written = write_model(folder, model_files(task.model_family, model), manifest)
    return {"path": str(final), "digest": written["digest"], "files": written["files"]}


def export_federated(
    out: Path, scenario: Scenario, cfg: RunConfig, params: Any, task: Task, model: Any, context: dict[str, Any]
) -> dict[str, Any]:
    """A deployed run's federated model (the coordinator trains no baseline), as results.json's ``models``.

    ``context`` holds, besides :func:`export_models`'s keys, ``input`` (shape and feature names, as the sites
    described them), ``sites`` and ``metrics`` (the last evaluate round, as Flower aggregates it).
    """
    manifest = {
        **_shared(scenario, cfg, params, task, context["input"], context),
        "arm": "federated",
        "trained_on": list(context.get("sites", [])),
        "threshold": {
            "value": None,
            "per_site": None,
            "chosen_on": "none: a deployed coordinator sees only the sites' metrics; each site chose its own "
            "operating point on its validation split (see the evaluate rounds)",
        },
        "metrics": {"test": context.get("metrics", {}), "scope": "the sites' test splits, averaged by Flower"},
        "privacy": context.get("privacy"),
    }
    return {"federated": _entry(Path(out) / "federated", Path(Path(out).name, "federated"), task, model, manifest)}


def _shared(
    scenario: Scenario, cfg: RunConfig, params: Any, task: Task, model_input: dict[str, Any], context: dict[str, Any]
) -> dict[str, Any]:
    """The manifest keys every model of the run shares."""
    return {
        "created_utc": now_utc(),
        "suite_version": suite_version(),
        "scenario": scenario.name,
        "domain": scenario.domain,
        "run_id": context.get("run_id"),
        "plan": context.get("plan"),
        "params": to_dict(params),
        "config": to_dict(cfg),
        "task": {
            "family": task.model_family,
            "primary_metric": task.primary_metric,
            "threshold_scope": task.threshold_scope,
        },
        "input": {"shape": list(model_input["shape"]), "feature_names": list(model_input.get("feature_names") or [])},
        "schema": context.get("schema"),
        "preprocessing": context.get("preprocessing"),
        "label": context.get("label"),
    }


def _threshold(arm: dict[str, Any], task: Task, site: str | None) -> dict[str, Any]:
    """The operating point chosen on validation data: one value, or one per site (each site calibrates its own)."""
    if site is not None:
        value = arm["per_site"][site].get("threshold")
        return {"value": value, "per_site": None, "chosen_on": "the site's own validation split"}
    if task.threshold_scope == "site":
        per_site = {s: m.get("threshold") for s, m in arm["per_site"].items()}
        return {
            "value": None,
            "per_site": per_site,
            "chosen_on": "each site's own validation split (a new site calibrates its own threshold)",
        }
    value = arm["union"].get("threshold")
    return {"value": value, "per_site": None, "chosen_on": "the union of the sites' validation splits"}


def _metrics(arm: dict[str, Any], site: str | None) -> dict[str, Any]:
    """What the model earned on held-out test data: the union and every site (local-only: its own site)."""
    if site is not None:
        return {"test": arm["per_site"][site], "scope": f"{site}'s test split"}
    return {"test": arm["union"], "per_site": arm["per_site"], "scope": "the union of the sites' test splits"}


def _write_test_scores(path: Path, task: Task, splits: list[SiteSplit], models: dict[str, Any]) -> None:
    """Every test example's score under each arm's model, by site and record."""
    frames = []
    for split in splits:
        test = split.test
        ids = test.ids if test.ids is not None else np.asarray([f"{split.name}:{i}" for i in range(len(test))])
        frames.append(
            pd.DataFrame(
                {
                    "site": split.name,
                    "record": ids,
                    "label": test.y,
                    "federated": task.predict(models["federated"], test.x),
                    "centralised": task.predict(models["centralised"], test.x),
                    "local_only": task.predict(models["local_only"][split.name], test.x),
                }
            )
        )
    with atomic_write(path, "w") as handle:
        pd.concat(frames).to_csv(handle, index=False, float_format="%.9g")


def label_meaning(schema: dict[str, Any] | None, task: Task) -> str:
    """What a model's score means, for its manifest."""
    if task.score_kind == "anomaly":
        return (
            "the score measures how far a record is from the normal data the model learnt (higher: more anomalous); "
            "it is no probability, and each site sets its own alarm threshold on its normal data. Label 1 is a fault "
            "(anomaly), 0 normal"
        )
    if schema is None:
        return "the score is the model's estimate that the label is 1 (positive); 0 is negative"
    negative = f"'{schema['negative']}'" if schema.get("negative") is not None else "any other value"
    return f"the score is the model's estimate that {schema['label']} = '{schema['positive']}'; {negative} is negative"
