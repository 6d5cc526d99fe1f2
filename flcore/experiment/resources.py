"""Peak memory of a run's whole process tree (the driver and Flower's simulation workers), with psutil."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import psutil


class PeakMemory:
    """Samples the memory of this process and all its descendants in a background thread.

    Flower's simulation engine runs clients in Ray worker processes, so the driver's
    own peak says little: the tree's total is what a machine must hold. Two sums are
    kept: resident set size (RSS, an upper bound: pages shared between processes,
    such as the torch libraries each worker maps, count once per process) and, where
    the kernel reports it, proportional set size (PSS, shared pages split between
    their users: the fairest single figure).

    Parameters
    ----------
    interval_s : float
        Seconds between samples; a spike shorter than this can be missed.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_pss: int | None = None
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample now."""
        me = psutil.Process()
        try:
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:
            procs = [me]
        rss, pss, pss_known = 0, 0, True
        for proc in procs:
            try:
                rss += proc.memory_info().rss
                if pss_known:
                    full = proc.memory_full_info()
                    pss += int(getattr(full, "pss", 0))
                    pss_known = hasattr(full, "pss")
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                pss_known = False
        self.peak_rss = max(self.peak_rss, rss)
        if pss_known:
            self.peak_pss = max(self.peak_pss or 0, pss)
        self.peak_processes = max(self.peak_processes, len(procs))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="flsuite-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def to_json(self) -> dict[str, Any]:
        """Figures for results.json."""
        return {
            "peak_rss_bytes": self.peak_rss,
            "peak_pss_bytes": self.peak_pss,
            "peak_processes": self.peak_processes,
            "sampling_interval_s": self.interval_s,
            "scope": "this process and all its descendants (simulation workers included)",
        }
