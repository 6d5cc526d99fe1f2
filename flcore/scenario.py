"""Scenarios: a domain's data, adapter, task and recommended settings, found by entry point; their synthetic sites.

``flcore`` never imports ``domains``: each domain registers its scenarios under the
``flsuite.scenarios`` entry-point group in ``pyproject.toml``, and the core looks
them up by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from flcore.config import RunConfig, apply_settings, check_attack, settings_of, validate
from flcore.data.schema import find_schema
from flcore.data.site import DomainAdapter, SiteData, SiteSplit, split_site
from flcore.exceptions import ConfigError, UnknownNameError
from flcore.governance.plan import code_digest
from flcore.governance.policy import GovernancePolicy
from flcore.learning.task import Task
from flcore.outputs import cache_root

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
    splitter : callable, optional
        ``splitter(site, cfg) -> SiteSplit`` when the domain decides what is held out
        (for anomaly detection: the labelled windows); default: a stratified random
        split by ``test-fraction`` and ``val-fraction``.
    generation_settings : tuple of str
        Domain settings passed to ``make_data`` as keyword arguments (e.g.
        ``("devices",)``), so ``--set devices=1000`` sizes a generated fleet.
    leave_out_unusable : bool
        In lenient mode, a site whose data cannot be used at all is left out of the
        run (and reported) instead of stopping it: right for fleets of hundreds of
        devices, wrong for three hospitals.
    repartition : bool
        Whether ``partition=dirichlet|quantity`` may re-split pooled data into sites.
    privacy_defaults : mapping
        Recommended settings per ``privacy`` mode (e.g. under ``dp``: fewer, larger
        steps), applied over ``run_defaults`` when that mode is chosen and before the
        user's own settings.
    model_defaults : mapping
        Recommended settings per value of the domain's ``model`` parameter (e.g.
        under ``xgboost``: the tree strategy and one boosting round per round),
        applied over ``run_defaults`` when that model is chosen.
    make_adapter : callable, optional
        ``make_adapter(params, data_dir) -> DomainAdapter`` when the adapter depends on
        the settings (a table's own schema: :func:`flcore.data.schema.find_schema`);
        default: ``adapter`` always.
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
    splitter: Callable[[SiteData, RunConfig], SiteSplit] | None = None
    generation_settings: tuple[str, ...] = ()
    leave_out_unusable: bool = False
    repartition: bool = True
    privacy_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    model_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    make_adapter: Callable[[Any, Path | None], DomainAdapter] | None = None

    def adapter_for(self, params: Any = None, data_dir: Path | None = None) -> DomainAdapter:
        """The adapter that reads this run's sites: ``make_adapter(params, data_dir)``, else ``adapter``."""
        if self.make_adapter is None:
            return self.adapter
        return self.make_adapter(params if params is not None else self.params, data_dir)

    def with_table_schema(self, params: Any, data_dir: Path | None) -> Any:
        """``params`` with the tables' schema settled once, by the coordinator, and carried as JSON.

        The schema is the ``schema`` setting (a file or JSON), else ``DATA/schema.toml``.

        The schema then travels in the run's settings: every site reads with the same one, and the training
        plan's hash covers its content (a path would not). Scenarios without a ``schema`` setting are unchanged.
        """
        if not any(f.name == "schema" for f in dataclasses.fields(params)):
            return params
        schema = find_schema(str(params.schema), data_dir)
        return params if schema is None else dataclasses.replace(params, schema=schema.setting())

    def split(self, site: SiteData, cfg: RunConfig) -> SiteSplit:
        """Hold out a site's test (and validation) data the way this scenario requires."""
        if self.splitter is not None:
            return self.splitter(site, cfg)
        return split_site(site, cfg.test_fraction, cfg.seed, cfg.val_fraction)

    def generation_kwargs(self, params: Any) -> dict[str, Any]:
        """Keyword arguments for ``make_data`` taken from the domain params."""
        return {name.replace("-", "_"): getattr(params, name.replace("-", "_")) for name in self.generation_settings}

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
        params = validate(apply_settings(self.params, param_vals, owner=f"scenario {self.name}"))
        base = self.default_run_config()
        model = str(getattr(params, "model", ""))
        if model in self.model_defaults:
            base = apply_settings(base, self.model_defaults[model], owner=f"scenario {self.name} (model={model})")
        mode = str(run_vals.get("privacy", base.privacy))
        if mode in self.privacy_defaults:
            base = apply_settings(base, self.privacy_defaults[mode], owner=f"scenario {self.name} ({mode})")
        cfg = validate(apply_settings(base, run_vals, owner=f"scenario {self.name}"))
        self.make_task(params).check_config(cfg)
        check_attack(cfg)
        return cfg, params

    def params_from_dict(self, values: Mapping[str, Any]) -> Any:
        """Domain params from a kebab-case dict (as carried in a ConfigRecord)."""
        return apply_settings(dataclasses.replace(self.params), values)


@cache
def _load_all() -> dict[str, Scenario]:
    # Read once per process: scanning every installed package's entry points costs about 18 ms, and a
    # simulation worker looks its scenario up for every message it answers.
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


# -- synthetic sites ----------------------------------------------------------------------------


def synthetic_key(scenario: Scenario, seed: int, params: Any = None) -> str:
    """The cache folder's name: scenario, seed, and a short hash of what shapes the data.

    The hash covers the generator's arguments (``scenario.generation_kwargs(params)``)
    and the source of the scenario's domain package, so a new generator never
    reuses data an older one wrote.
    """
    kwargs = scenario.generation_kwargs(params or scenario.params)
    domain_package = scenario.make_task.__module__.rsplit(".", 1)[0]
    text = json.dumps(kwargs, sort_keys=True, default=str) + "\0" + code_digest([domain_package])
    return f"{scenario.name}-seed{seed}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def synthetic_data(
    scenario: Scenario, seed: int, params: Any = None, progress: Callable[[str], None] | None = None
) -> Path:
    """The folder of the scenario's synthetic sites for ``seed``, generated on first use.

    Parameters
    ----------
    params : dataclass instance, optional
        The domain params whose generation settings size the data (default: the
        scenario's).
    progress : callable, optional
        Told whether the data are generated or found in the cache.

    The sites are written to a fresh hidden folder of the cache and renamed into
    place, so a reader never sees half a dataset; when a concurrent run renames
    its copy first, that copy is used and this one removed.
    """
    cache = cache_root()
    root = cache / synthetic_key(scenario, seed, params)
    if root.exists():
        if progress is not None:
            progress(f"synthetic {scenario.site_noun}s (seed {seed}) generated earlier: {root}")
        return root
    if progress is not None:
        progress(f"generating synthetic {scenario.site_noun}s (seed {seed}) ...")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".partial-"))
    try:
        scenario.make_data(tmp, seed, **scenario.generation_kwargs(params or scenario.params))
        tmp.rename(root)  # atomic on one file system
    except OSError:
        if not root.exists():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; the loser's copy otherwise
    return root
