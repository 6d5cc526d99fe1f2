"""The run's progress lines: one per federated round, one per finished arm."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flcore.federation.monitor import RoundRecord

#: Receives each progress line (``print``, a log file's writer, or nothing).
Progress = Callable[[str], None]


def round_line(total: int, primary: str, progress: Progress) -> Callable[[RoundRecord], None]:
    """The ``on_round`` callback that tells ``progress`` one line per finished round of ``total``."""

    def show(rec: RoundRecord) -> None:
        value = rec.evaluate.get(primary)
        shown = f"{value:.4f}" if value is not None else "  n/a "
        progress(
            f"  round {rec.round:>3}/{total}  train-loss {rec.train.get('train-loss', float('nan')):.4f}  "
            f"site-mean {primary} {shown}  sites {rec.replies}/{rec.sampled}  "
            f"{(rec.bytes_sent + rec.bytes_received) / 1e6:6.2f} MB  {rec.wall_time_s:5.2f} s"
            + (f"  absent: {', '.join(rec.absent)}" if rec.absent else "")
            + (f"  rejoined: {', '.join(rec.rejoined)}" if rec.rejoined else "")
        )

    return show


def show_arm(name: str, arm: dict[str, Any], primary: str, progress: Progress) -> None:
    """One line for a scored arm: the primary metric on the union and averaged over sites, and its time."""
    u = arm["union"].get(primary)
    m = arm["mean_over_sites"].get(primary)
    progress(
        f"      {name}: {primary} union {u if u is None else round(u, 4)}, "
        f"site mean {m if m is None else round(m, 4)}, {arm['wall_time_s']:.1f} s"
    )
