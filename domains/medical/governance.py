"""Governance defaults for hospitals: consent per record, de-identified headers, minimum cohort, DP budget."""

from __future__ import annotations

from flcore.governance.policy import GovernancePolicy

#: A hospital takes part only with at least 20 consented records including at least
#: one positive, with no direct identifier in any DICOM header. The privacy budget
#: (epsilon <= 1 per run, 10 in total per hospital, kept in its privacy ledger) is the
#: ceiling differential-privacy runs are held to.
DEFAULT_POLICY = GovernancePolicy(
    min_cohort=20,
    min_positives=1,
    require_consent=True,
    max_epsilon_per_run=1.0,
    max_epsilon_total=10.0,
    delta=1e-5,
    audit_trail=True,
    require_deidentified=True,
)
