"""The status files of a deployed run: ``run-status.json``, ``progress.log`` and ``results.json`` in its folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flcore.experiment.results import write_json

STATUS_FILE = "run-status.json"
PROGRESS_FILE = "progress.log"
RESULTS_FILE = "results.json"


def write_status(path: Path, state: str, **fields: Any) -> None:
    """Write the deployed ServerApp's ``run-status.json`` (``state`` and any fields), whole."""
    write_json(path, {"state": state, "time": time.time(), **fields})


def read_status(out: Path) -> dict[str, Any]:
    """The deployed ServerApp's ``run-status.json`` (empty before it starts)."""
    try:
        return dict(json.loads((out / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return {}
