"""Scenarios: a domain's data, adapter, task and recommended settings, found by entry point.

``flcore`` never imports ``domains``: each domain registers its scenarios under the
``flsuite.scenarios`` entry-point group in ``pyproject.toml``, and the core looks
them up by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from flcore.config import RunConfig, apply_settings, settings_of, validate
from flcore.data import DomainAdapter
from flcore.exceptions import ConfigError, UnknownNameError
from flcore.governance import GovernancePolicy
from flcore.task import Task

ENTRY_POINT_GROUP = "flsuite.scenarios"


@dataclass(frozen=True)
class Scenario:
    """Everything the core needs to run one scenario of a domain.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``finance-five-banks``.
    domain : str
        ``finance``, ``medical`` or ``iot``.
    description : str
        One line for ``flsuite scenarios``.
    site_noun : str
        What a site is called in this domain (bank, hospital, device).
    adapter : DomainAdapter
        Reads one site folder in the domain's real format.
    make_data : callable
        ``make_data(out_dir, seed, scale=1.0, file_format=...)`` writes synthetic sites in the real format.
    make_task : callable
        ``make_task(params) -> Task``.
    params : dataclass instance
        The domain's recommended model hyperparameters (defaults).
    run_defaults : mapping
        Recommended :class:`RunConfig` values (kebab-case keys).
    policy : GovernancePolicy
        The domain's default governance policy.
    """

    name: str
    domain: str
    description: str
    site_noun: str
    adapter: DomainAdapter
    make_data: Callable[..., list[Path]]
    make_task: Callable[[Any], Task]
    params: Any
    run_defaults: Mapping[str, Any] = field(default_factory=dict)
    policy: GovernancePolicy = field(default_factory=GovernancePolicy)

    def default_run_config(self) -> RunConfig:
        """:class:`RunConfig` with the domain's recommended values applied."""
        return apply_settings(RunConfig(), self.run_defaults, owner=f"scenario {self.name}")

    def configure(self, values: Mapping[str, Any]) -> tuple[RunConfig, Any]:
        """Split ``key=value`` settings between the run config and the domain params.

        Raises
        ------
        ConfigError
            For a key that neither accepts, or a value out of range.
        """
        run_keys = settings_of(RunConfig)
        param_keys = settings_of(self.params)
        run_vals = {k: v for k, v in values.items() if k in run_keys}
        param_vals = {k: v for k, v in values.items() if k in param_keys}
        unknown = sorted(set(values) - set(run_vals) - set(param_vals))
        if unknown:
            raise ConfigError(
                f"Unknown setting '{unknown[0]}' for scenario {self.name}. Valid settings: "
                f"{', '.join(sorted(set(run_keys) | set(param_keys)))}."
            )
        cfg = apply_settings(self.default_run_config(), run_vals, owner=f"scenario {self.name}")
        params = apply_settings(self.params, param_vals, owner=f"scenario {self.name}")
        return validate(cfg), validate(params)

    def params_from_dict(self, values: Mapping[str, Any]) -> Any:
        """Domain params from a kebab-case dict (as carried in a ConfigRecord)."""
        return apply_settings(dataclasses.replace(self.params), values)


def _load_all() -> dict[str, Scenario]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        scenario = ep.load()
        if not isinstance(scenario, Scenario):
            raise TypeError(f"entry point {ep.name} ({ep.value}) is not a Scenario")
        found[ep.name] = scenario
    return found


def available() -> dict[str, Scenario]:
    """All registered scenarios by name (installed entry points)."""
    return dict(sorted(_load_all().items()))


def get(name: str) -> Scenario:
    """A scenario by name, with the list of valid names on failure."""
    scenarios = available()
    if name not in scenarios:
        names = ", ".join(scenarios) or "none (is the package installed? run `make install`)"
        raise UnknownNameError(f"Unknown scenario '{name}'. Available scenarios: {names}.")
    return scenarios[name]
