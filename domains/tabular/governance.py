"""Governance defaults for tabular sites: minimum cohort and audit trail; DP optional."""

from __future__ import annotations

from flcore.governance.policy import GovernancePolicy

#: A site must contribute at least 50 records with at least one positive: fewer cannot be
#: scored, and reveal too much about the individuals in them.
DEFAULT_POLICY = GovernancePolicy(
    min_cohort=50,
    min_positives=1,
    require_consent=False,
    max_epsilon_per_run=None,
    audit_trail=True,
)
