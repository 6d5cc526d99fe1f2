"""The results.json schema is itself valid and rejects incomplete results."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from flcore.experiment.results import schema, validate_results, write_json


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def _minimal() -> dict:
    metrics = {"n": 10, "n_positive": 1, "pr_auc": 0.5, "roc_auc": 0.7}
    arm = {
        "union": metrics,
        "per_site": {"a": metrics},
        "mean_over_sites": {"pr_auc": 0.5},
        "worst_site": {"site": "a", "value": 0.5},
        "wall_time_s": 1.0,
    }
    fed = dict(arm, history=[], bytes_sent=10, bytes_received=20)
    return {
        "schema_version": 1,
        "suite_version": "0.1.0",
        "created_utc": "2026-11-21T00:00:00+00:00",
        "scenario": "x",
        "domain": "finance",
        "seed": 0,
        "seeds": [0],
        "strategy": "fedavg",
        "rounds": 1,
        "config": {},
        "params": {},
        "primary_metric": "pr_auc",
        "data": {
            "source": "synthetic",
            "sites": [{"name": "a", "n_train": 5, "n_test": 5, "positives_train": 1, "positives_test": 1}],
        },
        "arms": {"federated": fed, "centralised": arm, "local_only": arm},
        "comparison": {
            "metric": "pr_auc",
            "federated": 0.5,
            "centralised": 0.5,
            "local_only_mean_over_sites": 0.4,
            "federated_over_centralised": 1.0,
        },
    }


def test_minimal_results_validate() -> None:
    validate_results(_minimal())


@pytest.mark.parametrize("path", [("arms", "federated", "history"), ("arms", "local_only"), ("primary_metric",)])
def test_missing_fields_are_rejected(path: tuple[str, ...]) -> None:
    bad = copy.deepcopy(_minimal())
    node = bad
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(jsonschema.ValidationError):
        validate_results(bad)


def test_write_json_is_strict_and_atomic(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
