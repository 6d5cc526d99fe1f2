"""Conformance checks of the package contracts, run against every registered adapter, task, scenario and strategy."""
