"""Governance policy of a site or federation, and the checks that run before training.

Domains ship defaults (``domains/<d>/governance.py``). The minimum-cohort rule is
enforced here for every run; consent, privacy budget, de-identification and
training-plan approval build on the same policy object.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    require_deidentified : bool
        Refuse a site whose files carry direct identifiers (see :class:`Finding`).
    """

    min_cohort: int = 1
    min_positives: int = 0
    require_consent: bool = False
    max_epsilon_per_run: float | None = None
    delta: float = 1e-5
    audit_trail: bool = True
    require_deidentified: bool = False


@dataclass(frozen=True)
class Finding:
    """A direct identifier found in a site's data (reported without its value).

    Parameters
    ----------
    path : str
        The file holding it.
    tag : str
        Where in the file, e.g. ``(0010,0010) PatientName``.
    reason : str
        What was found, e.g. ``present (12 characters)``; never the value itself,
        so that reports and logs do not spread the identifier.
    """

    path: str
    tag: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.tag} {self.reason}"


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


def check_deidentified(site: SiteData, policy: GovernancePolicy, site_noun: str = "site") -> None:
    """Refuse a site whose adapter found direct identifiers, when the policy requires de-identification.

    Adapters that can hold identifiers (DICOM headers) list them in
    ``site.info["identifier_findings"]``.
    """
    findings: Sequence[Finding] = site.info.get("identifier_findings", [])  # type: ignore[assignment]
    if not policy.require_deidentified or not findings:
        return
    files = len({f.path for f in findings})
    shown = "; ".join(str(f) for f in findings[:5])
    more = f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
    raise GovernanceError(
        f"Governance rule 'de-identified' refuses {site_noun} '{site.name}' ({site.source}): "
        f"{len(findings)} direct identifier(s) in {files} file(s): {shown}{more}. De-identify the files "
        "(DICOM PS3.15 basic confidentiality profile, e.g. with your PACS export's anonymiser) and run "
        f"`flsuite site check` on the folder until it reports none."
    )
