"""The coordinator's governance gate: every site against the federation's policy and its own, before training."""

from __future__ import annotations

from typing import Any

from flcore.config import RunConfig
from flcore.governance.policy import GovernancePolicy
from flcore.governance.rules import Refusal, check_site, refusal_error
from flcore.governance.siteguard import SiteGovernance, ledger_of, run_facts
from flcore.scenario import Scenario


def gate(
    scenario: Scenario,
    cfg: RunConfig,
    params: Any,
    governance: list[SiteGovernance],
    federation: GovernancePolicy,
    audit: Any = None,
    run_id: str = "",
) -> dict[str, Any]:
    """The coordinator's gate: every site against the federation's policy and its own, before training.

    Each decision is written to ``audit`` (an :class:`flcore.governance.audit.AuditTrail`).
    Returns the gate's record for results.json.

    Raises
    ------
    GovernanceError
        For the first refusal (all of them are in the audit trail).
    """
    run = run_facts(scenario, cfg, params)
    refusals: list[Refusal] = []
    sites: dict[str, Any] = {}
    for gov in governance:
        ledger = ledger_of(gov)
        spent = ledger.spent() if ledger is not None and run.epsilon is not None else None
        found: list[Refusal] = []
        for policy in (federation, gov.policy) if gov.policy != federation else (federation,):
            for r in check_site(run, policy, gov.site, spent_epsilon=spent, site_noun=scenario.site_noun, **gov.facts):
                if (r.rule, r.site) not in {(f.rule, f.site) for f in found}:
                    found.append(r)
        refusals += found
        sites[gov.site] = {
            "policy": gov.policy.source,
            "ledger": gov.ledger,
            "epsilon_spent_before": spent,
            "epsilon_budget": gov.policy.max_epsilon_total,
            "records": gov.facts.get("records"),
            "decision": "refuse" if found else "pass",
        }
    record = {
        "run": run_id,
        "plan": run.plan_hash,
        "federation_policy": federation.source,
        "privacy": run.privacy,
        "epsilon": run.epsilon,
        "delta": run.delta,
        "secure_aggregation": run.secure_aggregation,
        "decision": "refuse" if refusals else "pass",
        "sites": sites,
    }
    if audit is not None:
        audit.append("gate", by="coordinator", **record)
        for r in refusals:
            audit.append("refusal", run=run_id, by="coordinator", **r.to_json())
    if refusals:
        raise refusal_error(refusals, scenario.site_noun)
    return record
