"""results.json: building, validating against the versioned JSON Schema, writing atomically."""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from flcore.config import to_dict
from flcore.outputs import write_text_atomic

SCHEMA_VERSION = 1


def schema() -> dict[str, Any]:
    """The JSON Schema of results.json shipped with the package."""
    text = resources.files("flcore.schemas").joinpath("results.schema.json").read_text()
    return json.loads(text)


def validate_results(results: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``results`` does not follow the schema."""
    import jsonschema

    jsonschema.validate(results, schema())


def clean(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as strict JSON via a temporary file and an atomic rename."""
    return write_text(path, json.dumps(clean(data), indent=2, allow_nan=False) + "\n")


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` whole or not at all (:func:`flcore.outputs.write_text_atomic`), readable by the team (0644)."""
    return write_text_atomic(path, text)


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    import flwr
    import torch

    return {
        "python": platform.python_version(),
        "flwr": flwr.__version__ if hasattr(flwr, "__version__") else "unknown",
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def suite_version() -> str:
    """Installed version of the flsuite distribution."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flsuite")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def now_utc() -> str:
    """Current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def federated_only_results(plan: Any, outcome: Any) -> dict[str, Any]:
    """Results of a `flwr run` (federated arm only: the ServerApp sees no site data)."""
    monitor = outcome.monitor
    return clean(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": "federated-only",
            "suite_version": suite_version(),
            "created_utc": now_utc(),
            "scenario": plan.scenario,
            "config": to_dict(plan.cfg),
            "params": to_dict(plan.params),
            "sites": outcome.sites,
            "history": [r.to_json() for r in monitor.rounds],
            "bytes_sent": monitor.bytes_sent,
            "bytes_received": monitor.bytes_received,
            "wall_time_s": outcome.wall_time_s,
        }
    )


def preprocessing_record(disclosed: list[dict[str, Any]], result: dict[str, Any]) -> dict[str, Any]:
    """``governance.preprocessing`` of results.json: what each site disclosed for it, and what was built."""
    return {
        "computed_from": "per-site statistics of the training rows (counts, sums, category sets), never rows",
        "disclosed": disclosed,
        "result": result,
    }
