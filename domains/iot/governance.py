"""Governance defaults for machine fleets: a minimum of data per device, no personal data involved."""

from __future__ import annotations

from flcore.governance.policy import GovernancePolicy

#: Vibration telemetry carries no personal data: no consent or de-identification
#: rule applies. A device takes part with at least 8 windows (about two seconds of
#: recordings, labelled ones included); in lenient mode a smaller device is left out
#: of the run and listed in results.json instead of stopping it.
DEFAULT_POLICY = GovernancePolicy(
    min_cohort=8,
    min_positives=0,
    require_consent=False,
    max_epsilon_per_run=None,
    audit_trail=True,
    require_deidentified=False,
)
