"""The one pre-flight check of a federation's settings, run wherever a federation starts, before any work."""

from __future__ import annotations

from flcore.config import RunConfig, check_attack
from flcore.federation.mods.secagg import check_secagg
from flcore.federation.strategies import build_strategy


def check_federation(cfg: RunConfig, num_sites: int) -> None:
    """Refuse settings a federation of ``num_sites`` sites cannot run, before any site trains or reserves budget.

    Secure aggregation's constraints, the simulated attack's, and the strategy itself
    (built once and thrown away: its own parameter checks and minimum number of sites).

    Raises
    ------
    ConfigError
        Naming the setting and the fix.
    UnknownNameError
        For an unknown strategy.
    """
    check_secagg(cfg, num_sites)
    check_attack(cfg, num_sites)
    build_strategy(cfg, num_sites)
