"""Governance defaults for banks: minimum cohort and audit trail; DP optional."""

from __future__ import annotations

from flcore.governance.policy import GovernancePolicy

#: A bank must contribute at least 100 transactions with at least one fraud case;
#: fewer cannot be scored and reveal too much about individual customers.
DEFAULT_POLICY = GovernancePolicy(
    min_cohort=100,
    min_positives=1,
    require_consent=False,
    max_epsilon_per_run=None,
    audit_trail=True,
)
