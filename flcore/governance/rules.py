"""The governance gate: every rule of a policy a planned run breaks at a site, as refusals.

The gate (:func:`check_site`) applies one policy to one site and returns the
refusals; it runs at the coordinator before any training and again inside each
site's ClientApp, so that a coordinator cannot skip it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flcore.data.site import SiteData
from flcore.exceptions import GovernanceError
from flcore.governance.policy import GovernancePolicy


@dataclass(frozen=True)
class Finding:
    """A direct identifier found in a site's data (reported without its value).

    Parameters
    ----------
    path : str
        The file holding it.
    tag : str
        Where in the file, e.g. ``ReferencedPatientSequence[0] > PatientID (0010,0020)``.
    reason : str
        What was found, e.g. ``holds a value (12 characters)``; never the value
        itself, so that reports and logs do not spread the identifier.
    creator : str
        The private creator of a private element ('' otherwise).
    allowed_by : tuple of str
        The de-identification options (:data:`~flcore.governance.policy.DEID_OPTIONS`)
        under which the element may stay; a policy declaring one of them excuses the finding.
    """

    path: str
    tag: str
    reason: str
    creator: str = ""
    allowed_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_by", tuple(self.allowed_by))  # a list when read back from JSON

    def __str__(self) -> str:
        return f"{self.path}: {self.tag} {self.reason}"


def open_findings(findings: Sequence[Finding], policy: GovernancePolicy) -> list[Finding]:
    """The findings ``policy`` does not excuse.

    Its ``deid_options`` keep some elements, its ``safe_private_creators`` some private blocks.
    """
    options = set(policy.deid_options)
    creators = {c.strip() for c in policy.safe_private_creators}
    return [f for f in findings if not (options & set(f.allowed_by)) and not (f.creator and f.creator in creators)]


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


@dataclass(frozen=True)
class Refusal:
    """One governance rule a run breaks at one site.

    Parameters
    ----------
    rule : str
        The rule's name (``min-cohort``, ``max-epsilon-total``, ...).
    site : str
        The site it refuses (or ``federation``).
    policy : str
        Which policy holds the rule (a file, or the domain's defaults).
    problem : str
        What was found against what the rule requires.
    fix : str
        How to make the run acceptable.
    """

    rule: str
    site: str
    policy: str
    problem: str
    fix: str

    def text(self, site_noun: str = "site") -> str:
        who = f"{site_noun} '{self.site}'" if self.site != "federation" else "the federation"
        return f"Governance rule '{self.rule}' refuses {who} (policy: {self.policy}): {self.problem} {self.fix}"

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunFacts:
    """What the gate needs to know about a planned run.

    Parameters
    ----------
    domain, scenario, task : str
        The scenario's domain, name and task kind.
    plan_hash : str
        Hash of the training plan (:func:`~flcore.governance.plan.plan_hash`).
    privacy : str
        ``none``, ``dp`` (sample-level) or ``client-dp`` (client-level).
    epsilon : float or None
        Epsilon the run plans to spend at a site (None without DP).
    delta : float or None
        Its delta.
    secure_aggregation : bool
        Whether individual updates are hidden from the coordinator.
    """

    domain: str
    scenario: str
    task: str
    plan_hash: str
    privacy: str
    epsilon: float | None
    delta: float | None
    secure_aggregation: bool


def check_site(
    run: RunFacts,
    policy: GovernancePolicy,
    site: str,
    *,
    records: int | None = None,
    positives: int | None = None,
    consent_recorded: bool | None = None,
    findings: Sequence[Finding] = (),
    spent_epsilon: float | None = None,
    site_noun: str = "site",
) -> list[Refusal]:
    """Every rule of ``policy`` the planned ``run`` breaks at ``site`` (empty: the site may train).

    Parameters
    ----------
    records, positives : int, optional
        The site's records after consent filtering, and how many are positive
        (None: not known here, rule not checked).
    consent_recorded : bool, optional
        Whether the site's data record consent per record (None: the format has no
        consent field).
    findings : sequence of Finding
        Direct identifiers found in the site's files.
    spent_epsilon : float, optional
        Epsilon the site's ledger already holds (None: no ledger, rule not checked).
    """
    out: list[Refusal] = []

    def refuse(rule: str, problem: str, fix: str) -> None:
        out.append(Refusal(rule, site, policy.source, problem, fix))

    if policy.allowed_domains and run.domain not in policy.allowed_domains:
        refuse(
            "allowed-domains",
            f"the run is in domain '{run.domain}', the policy allows only {', '.join(policy.allowed_domains)}.",
            "Run a scenario of an allowed domain, or add the domain to allowed_domains.",
        )
    if policy.allowed_tasks and not {run.scenario, run.task} & set(policy.allowed_tasks):
        refuse(
            "allowed-tasks",
            f"the run trains '{run.scenario}' ({run.task}), the policy allows only {', '.join(policy.allowed_tasks)}.",
            "Run an allowed task, or add it to allowed_tasks.",
        )
    if policy.require_approved_plan and run.plan_hash not in policy.approved_plans:
        shown = ", ".join(p[:19] for p in policy.approved_plans) or "none"
        refuse(
            "approved-plan",
            f"the training plan {run.plan_hash} is not approved (approved: {shown}).",
            f"Review it with `flsuite plan {run.scenario}` (same settings) and, if the {site_noun}'s data office "
            f"agrees, approve it with `flsuite plan {run.scenario} --approve POLICY_FILE`.",
        )
    if policy.require_secure_aggregation and not run.secure_aggregation:
        refuse(
            "secure-aggregation",
            "the coordinator would see this site's individual updates; the policy requires secure aggregation.",
            "Run with --set secure-aggregation=secagg+.",
        )
    if policy.require_dp and run.privacy == "none":
        refuse(
            "require-dp",
            "the run has no differential privacy; the policy requires it.",
            "Run with --set privacy=dp (sample-level DP-SGD).",
        )
    if run.privacy != "none" and not (run.epsilon and run.epsilon > 0 and run.delta and 0 < run.delta < 1):
        refuse(
            "dp-parameters",
            f"the run asks for {run.privacy} with epsilon {run.epsilon} and delta {run.delta}; both must be "
            "positive (and delta below 1).",
            "Set dp-epsilon and dp-delta, or leave them at 0 so that the policy's values apply.",
        )
    if run.epsilon is not None:
        if policy.max_epsilon_per_run is not None and run.epsilon > policy.max_epsilon_per_run * (1 + 1e-9):
            refuse(
                "max-epsilon-per-run",
                f"the run plans epsilon {run.epsilon:.4g}, the policy allows at most {policy.max_epsilon_per_run:g} "
                "per run.",
                f"Lower it with --set dp-epsilon={policy.max_epsilon_per_run:g} (or less).",
            )
        if run.delta is not None and run.delta > policy.delta * (1 + 1e-9):
            refuse(
                "delta",
                f"the run plans delta {run.delta:g}, the policy allows at most {policy.delta:g}.",
                f"Lower it with --set dp-delta={policy.delta:g}.",
            )
        if policy.max_epsilon_total is not None and spent_epsilon is not None:
            left = policy.max_epsilon_total - spent_epsilon
            if run.epsilon > left + 1e-9:
                refuse(
                    "max-epsilon-total",
                    f"the run plans epsilon {run.epsilon:.4g} but the {site_noun}'s privacy budget has "
                    f"{max(left, 0.0):.4g} left ({spent_epsilon:.4g} of {policy.max_epsilon_total:g} already spent).",
                    (
                        f"Plan at most what is left (--set dp-epsilon={math.floor(left * 1000) / 1000:g}), "
                        "or ask the data office whether to raise max_epsilon_total."
                        if left >= 0.001
                        else "The budget is spent: no further DP run may use this data unless the data office "
                        "raises max_epsilon_total."
                    ),
                )
    if records is not None and records < policy.min_cohort:
        refuse(
            "min-cohort",
            f"it holds {records} usable records after consent filtering, the policy requires at least "
            f"{policy.min_cohort}.",
            f"Add consented data to this {site_noun}, leave it out of the federation, or lower min_cohort.",
        )
    if positives is not None and positives < policy.min_positives:
        refuse(
            "min-positives",
            f"it holds {positives} positive records, the policy requires at least {policy.min_positives}.",
            f"Add data with positive cases, or leave the {site_noun} out.",
        )
    if policy.require_consent and consent_recorded is not True:
        refuse(
            "consent",
            "its data record no consent per record; the policy requires consent.",
            "Add a consent column (yes/no) from the consent register; records without consent are never loaded.",
        )
    findings = open_findings(findings, policy)
    if policy.require_deidentified and findings:
        files = len({f.path for f in findings})
        shown = "; ".join(str(f) for f in findings[:5])
        more = f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
        refuse(
            "de-identified",
            f"{len(findings)} direct identifier(s) in {files} file(s): {shown}{more}.",
            "De-identify the files (DICOM PS3.15 basic confidentiality profile, e.g. with your PACS export's "
            "anonymiser) and run `flsuite site check` on the folder until it reports none.",
        )
    return out


def refusal_error(refusals: Sequence[Refusal], site_noun: str = "site") -> GovernanceError:
    """One error for the first refusal, with a count of the others."""
    first = refusals[0]
    more = f" ({len(refusals) - 1} more refusal(s) in the audit trail.)" if len(refusals) > 1 else ""
    return GovernanceError(first.text(site_noun) + more, refusals)


def site_facts(site: SiteData) -> dict[str, Any]:
    """The keyword arguments of :func:`check_site` that come from a site's loaded data."""
    consent = site.info.get("consent_recorded")
    return {
        "records": len(site),
        "positives": int(site.y.sum()),
        "consent_recorded": bool(consent) if consent is not None else None,
        "findings": list(site.info.get("identifier_findings", [])),  # type: ignore[call-overload]
    }
