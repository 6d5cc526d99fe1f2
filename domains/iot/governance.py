"""Governance defaults for machine fleets: a minimum of data per device, no personal data involved."""

from __future__ import annotations

from flcore.governance import GovernancePolicy

#: Vibration telemetry carries no personal data: no consent or de-identification
#: rule applies. A device takes part with at least 8 windows (two seconds of
#: recordings), enough to hold out validation windows for its threshold.
DEFAULT_POLICY = GovernancePolicy(
    min_cohort=8,
    min_positives=0,
    require_consent=False,
    max_epsilon_per_run=None,
    audit_trail=True,
    require_deidentified=False,
)
