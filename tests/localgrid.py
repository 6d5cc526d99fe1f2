"""Test-only: an engine that records its federations, registered as ``recording`` for the tests that select it.

Tests pick an engine by parameter (``--engine recording``, ``engine="recording"``,
``engine="inprocess"``); :func:`recording_engine` adds this one to the registry
beside Flower's simulation engine and the in-process grid, and removes it afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flcore.federation.engines import ENGINES, in_process_simulation


class RecordingEngine:
    """The in-process engine, recording (strategy, seed) per federation."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    @property
    def seeds(self) -> list[int]:
        return [seed for _, seed in self.calls]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cfg = args[1]
        self.calls.append((cfg.strategy, cfg.seed))
        return in_process_simulation(*args, **kwargs)


@contextlib.contextmanager
def recording_engine(cache: Path) -> Iterator[RecordingEngine]:
    """A :class:`RecordingEngine` registered as ``recording``, with its own synthetic-data cache; undone afterwards."""
    import pytest

    fake = RecordingEngine()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ENGINES, "recording", fake)
        mp.setenv("FLSUITE_CACHE", str(cache))
        yield fake
