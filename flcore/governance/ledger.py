"""A site's privacy ledger: the epsilon every run spent on its data, kept across runs.

A site reserves a run's planned epsilon before round 1 (so a crashed run stays
charged in full) and settles it to what was really spent when the run ends.
Budgets compose by addition over runs (basic composition: simple, and never
under-counts). The ledger is one JSON file, rewritten atomically under a lock.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flcore.exceptions import LedgerError
from flcore.outputs import atomic_write


class PrivacyLedger:
    """The privacy ledger of one site.

    Parameters
    ----------
    path : Path
        The ledger file (created on first write).
    site : str
        The site's name, recorded in the file.
    """

    def __init__(self, path: Path | str, site: str) -> None:
        self.path = Path(path)
        self.site = site

    def entries(self) -> list[dict[str, Any]]:
        """Every run recorded, oldest first."""
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["entries"]
            if not isinstance(entries, list):
                raise TypeError("entries is not a list")
            return entries
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise LedgerError(
                f"The privacy ledger {self.path} of site '{self.site}' cannot be read ({err}). No DP run may use "
                "this site's data until it is restored from a backup: a lost ledger would reset its budget."
            ) from None

    def spent(self) -> float:
        """Epsilon charged so far: settled runs at what they spent, open ones at the most of reserved and spent."""
        return _charged(self.entries())

    def runs(self) -> int:
        return len(self.entries())

    def reserve(
        self, run_id: str, epsilon: float, delta: float, plan: str, mode: str, budget: float | None = None
    ) -> bool:
        """Charge a run's planned epsilon before it trains; False (nothing charged) if it would pass ``budget``.

        The check and the charge happen under one lock, so two runs starting at once
        cannot both fit in what is left. A second call for the same run is a no-op.
        """
        with self._locked() as entries:
            if any(e["run"] == run_id for e in entries):
                return True
            if budget is not None and _charged(entries) + epsilon > budget + 1e-9:
                return False
            entries.append(
                {
                    "run": run_id,
                    "plan": plan,
                    "mode": mode,
                    "status": "reserved",
                    "reserved": float(epsilon),
                    "epsilon": 0.0,
                    "delta": float(delta),
                }
            )
        return True

    def record(self, run_id: str, epsilon: float, final: bool = False, steps: int | None = None) -> None:
        """Record what a run has spent so far; ``final`` settles it (the reservation no longer counts).

        ``steps`` is the run's DP-SGD step count at this site. It is kept here, not only in
        the SuperNode's memory, so that a restarted SuperNode or a resumed coordinator run
        (a new Flower run) cannot start the count again from zero.
        """
        with self._locked() as entries:
            for e in entries:
                if e["run"] == run_id:
                    # Never lower what is recorded (a site that lost its step count must not under-report).
                    e["epsilon"] = max(float(e["epsilon"]), float(epsilon))
                    if steps is not None:
                        e["steps"] = max(int(e.get("steps", 0)), int(steps))
                    if final:
                        e["status"] = "spent"
                    return
            raise LedgerError(f"Run {run_id} has no reservation in the privacy ledger {self.path}.")

    def steps(self, run_id: str) -> int:
        """DP-SGD steps recorded for a run (0 if none)."""
        return max((int(e.get("steps", 0)) for e in self.entries() if e["run"] == run_id), default=0)

    @contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.with_name(self.path.name + ".lock"), "a")
        except OSError as err:
            raise LedgerError(
                f"Cannot write the privacy ledger {self.path} of site '{self.site}' ({err}). Make its folder "
                "writable, or set `ledger = PATH` in the site's policy."
            ) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self.entries()
            yield entries
            with atomic_write(self.path, "w", permissions=0o600) as f:
                json.dump({"site": self.site, "entries": entries}, f, indent=1)


def _charged(entries: list[dict[str, Any]]) -> float:
    """Epsilon the entries charge: settled runs at what they spent, open ones at the most of reserved and spent."""
    return float(sum(e["epsilon"] if e["status"] == "spent" else max(e["reserved"], e["epsilon"]) for e in entries))
