"""Governance policy of a site or federation, and the checks that run before training.

Domains ship defaults (``domains/<d>/governance.py``). The minimum-cohort rule is
enforced here for every run; consent, privacy budget, de-identification and
training-plan approval build on the same policy object.
"""

from __future__ import annotations

from dataclasses import dataclass

from flcore.data import SiteData
from flcore.exceptions import FlsuiteUserError


class GovernanceError(FlsuiteUserError):
    """A run breaks a governance rule; it is refused before any training."""


@dataclass(frozen=True)
class GovernancePolicy:
    """Rules a site (or the federation) imposes on every run.

    Parameters
    ----------
    min_cohort : int
        Fewest records a site must hold to take part (small cohorts leak more).
    min_positives : int
        Fewest positive records a site must hold (0 disables).
    require_consent : bool
        Records without consent are never loaded.
    max_epsilon_per_run : float or None
        Differential-privacy budget per run (None: DP not required).
    delta : float
        DP delta.
    audit_trail : bool
        Whether every run is written to the audit trail.
    """

    min_cohort: int = 1
    min_positives: int = 0
    require_consent: bool = False
    max_epsilon_per_run: float | None = None
    delta: float = 1e-5
    audit_trail: bool = True


def check_min_cohort(sites: list[SiteData], policy: GovernancePolicy, site_noun: str = "site") -> None:
    """Refuse the run if any site holds fewer records (or positives) than the policy allows."""
    for site in sites:
        if len(site) < policy.min_cohort:
            raise GovernanceError(
                f"Governance rule 'min-cohort' refuses {site_noun} '{site.name}' ({site.source}): it holds "
                f"{len(site)} records, the policy requires at least {policy.min_cohort}. Add data to this "
                f"{site_noun}, leave it out of the federation, or lower min_cohort in the policy."
            )
        positives = int(site.y.sum())
        if positives < policy.min_positives:
            raise GovernanceError(
                f"Governance rule 'min-positives' refuses {site_noun} '{site.name}' ({site.source}): it holds "
                f"{positives} positive records, the policy requires at least {policy.min_positives}."
            )
