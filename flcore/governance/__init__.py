"""Governance: policies, the rules a run must pass, training plans, site enforcement, ledgers, the audit trail."""
