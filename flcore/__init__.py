"""flcore: the domain-agnostic federated-learning core of flsuite, built on Flower.

The public API (:mod:`flcore.api`) is importable from here; it loads on first use, so
``import flcore`` stays fast::

    import flcore

    flcore.scenarios()
    run = flcore.run("medical-clinical", rounds=2, out="runs/try")
    run.figures
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flcore.api import Run, check_site, evaluate, load_model, run, scenarios, sweep, write_report

__all__ = [
    "Run",
    "__version__",
    "check_site",
    "evaluate",
    "load_model",
    "run",
    "scenarios",
    "sweep",
    "write_report",
]
__version__ = "0.1.0"

_API = frozenset({"Run", "check_site", "evaluate", "load_model", "run", "scenarios", "sweep", "write_report"})


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use (the API itself imports torch and Flower only when called)."""
    if name in _API:
        from flcore import api

        return getattr(api, name)
    raise AttributeError(f"module 'flcore' has no attribute {name!r}")
