"""Conformance checks every registered scenario must pass: identity, policy, settings, generated data and task.

A domain proves that its scenario fits the core by registering it (the
``flsuite.scenarios`` entry point) and passing every check here, e.g. with pytest::

    @pytest.mark.parametrize(("scenario", "check"), scenario_checks(), ids=check_id)
    def test_scenario(scenario, check, tmp_path):
        check(scenario, tmp_path)

The checks use only what :class:`~flcore.scenario.Scenario` declares: its name,
domain, site noun and adapter; a governance policy that survives its own TOML
form; recommended settings (for every model and privacy mode it recommends
settings for) that :mod:`flcore.config` accepts; synthetic sites, generated small
where the scenario allows it, that its adapter reads in strict mode and its
splitter splits; and the task it builds, which must pass the task checks
(:mod:`flcore.checks.task`) on a small slice of those sites.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flcore import scenario as registry
from flcore.checks.task import TaskCase, small_slice, task_failures
from flcore.config import settings_of, validate
from flcore.data.preprocess import federated_preprocessing, is_raw
from flcore.data.site import DomainAdapter, SiteSplit, list_site_dirs
from flcore.exceptions import ConfigError, FlsuiteUserError, ScenarioCheckError
from flcore.federation.strategies import get_spec
from flcore.governance.policy import GovernancePolicy, parse_policy, policy_toml
from flcore.governance.siteguard import task_kind
from flcore.scenario import Scenario

#: ``scale`` asked of ``make_data``; a scenario that refuses it generates its own size.
SMALL_SCALE = 0.05

#: Records of the first site the task checks train on (each check trains once or twice: a CNN is slow).
TASK_RECORDS = 16

_KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


Check = Callable[[Scenario, Path], None]


def _fail(sc: Scenario, message: str) -> None:
    raise ScenarioCheckError(f"{sc.name}: {message}")


def check_identity(sc: Scenario, tmp_path: Path) -> None:
    """A kebab-case name (its registry key), a domain, a one-line description, a site noun and an adapter."""
    if not _KEBAB.fullmatch(sc.name):
        _fail(sc, f"the name must be kebab-case (e.g. finance-five-banks), got {sc.name!r}")
    keys = [key for key, registered in registry.available().items() if registered is sc]
    if keys and keys != [sc.name]:
        _fail(sc, f"registered as {keys}; the entry point's name must be the scenario's name")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", sc.domain):
        _fail(sc, f"the domain must be a lower-case word (finance, medical, iot), got {sc.domain!r}")
    if not sc.description.strip() or "\n" in sc.description:
        _fail(sc, "the description must be one non-empty line (`flsuite scenarios` lists it)")
    if not re.fullmatch(r"[a-z][a-z ]*", sc.site_noun):
        _fail(sc, f"the site noun must be a lower-case noun (bank, hospital, device), got {sc.site_noun!r}")
    if not isinstance(sc.adapter, DomainAdapter) or not str(getattr(sc.adapter, "layout", "")).strip():
        _fail(sc, f"the adapter must follow flcore.data.site.DomainAdapter with a layout text, got {sc.adapter!r}")


def check_policy(sc: Scenario, tmp_path: Path) -> None:
    """The default policy survives its own TOML form and allows the scenario's own domain and task."""
    policy = sc.policy
    if not isinstance(policy, GovernancePolicy):
        _fail(sc, f"the policy must be a GovernancePolicy, got {type(policy).__name__}")
    path = tmp_path / f"{sc.name}-policy.toml"
    parsed = parse_policy(policy_toml(policy, f"{sc.name} defaults"), path)  # a GovernanceError names the key
    if dataclasses.replace(parsed, source=policy.source) != policy:
        changed = [f.name for f in dataclasses.fields(policy) if getattr(parsed, f.name) != getattr(policy, f.name)]
        _fail(sc, f"the policy reads back differently from its TOML form in {', '.join(changed)}")
    if policy.allowed_domains and sc.domain not in policy.allowed_domains:
        _fail(sc, f"the default policy refuses its own domain {sc.domain!r}")
    if policy.allowed_tasks and not {sc.name, task_kind(sc)} & set(policy.allowed_tasks):
        _fail(sc, f"the default policy refuses its own task ({sc.name}, {task_kind(sc)})")


def _variants(sc: Scenario) -> list[dict[str, Any]]:
    """The settings the scenario recommends something for: none, each model, each privacy mode."""
    return [
        {},
        *({"model": model} for model in sc.model_defaults),
        *({"privacy": mode} for mode in sc.privacy_defaults),
    ]


def check_recommended_settings(sc: Scenario, tmp_path: Path) -> None:
    """The recommended params and run settings validate, for every model and privacy mode they name.

    Each variant goes through :meth:`Scenario.configure`, as ``flsuite run`` does:
    settings in range, a registered strategy, a task that accepts them. Settings
    that size generated data (``generation_settings``) are domain params that
    ``make_data`` accepts.
    """
    validate(sc.params, owner=f"scenario {sc.name} params")
    validate(sc.default_run_config(), owner=f"scenario {sc.name} run defaults")
    for values in _variants(sc):
        what = " ".join(f"{k}={v}" for k, v in values.items()) or "the defaults"
        try:
            cfg, _ = sc.configure(values)
            get_spec(cfg.strategy)
        except FlsuiteUserError as err:
            _fail(sc, f"{what}: {err}")
    accepted = inspect.signature(sc.make_data).parameters
    params = settings_of(sc.params)
    for name in sc.generation_settings:
        if name not in params or name.replace("-", "_") not in accepted:
            _fail(sc, f"generation setting {name!r} must be a domain param and a keyword of make_data")


def _generation_options(sc: Scenario) -> dict[str, Any]:
    """The smallest data each generation setting allows (its lower bound), else its default."""
    fields = settings_of(sc.params)
    out = {}
    for name in sc.generation_settings:
        low = fields[name].metadata.get("low")
        out[name.replace("-", "_")] = int(low) if low is not None else getattr(sc.params, name.replace("-", "_"))
    return out


def generated_sites(sc: Scenario, tmp_path: Path) -> Path:
    """The scenario's synthetic sites (seed 0, small), made once per test session next to ``tmp_path``."""
    cache = tmp_path.parent / f".scenario-check-{sc.name}"
    if not cache.is_dir():
        partial = cache.with_name(cache.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        options = _generation_options(sc)
        try:
            files = sc.make_data(partial, 0, scale=SMALL_SCALE, **options)
        except ConfigError:  # the scenario has a fixed size (real data): generate it whole
            shutil.rmtree(partial, ignore_errors=True)
            files = sc.make_data(partial, 0, **options)
        missing = [str(f) for f in files if not Path(f).exists() or partial not in Path(f).parents]
        if not files or missing:
            _fail(sc, f"make_data must return the paths it wrote under its folder; got {files[:3]}")
        partial.rename(cache)
    return cache


def check_generated_sites(sc: Scenario, tmp_path: Path) -> None:
    """``make_data`` writes at least two sites that the adapter recognises and reads in strict mode.

    Every site holds float32 features of one shape and 0/1 int64 labels, and the
    scenario's split keeps a non-empty training part without inventing records.
    """
    root = generated_sites(sc, tmp_path)
    adapter = sc.adapter_for(None, root)
    folders = list_site_dirs(root, adapter)
    if len(folders) < 2:
        _fail(sc, f"make_data wrote {len(folders)} site folder(s); a federation needs at least 2")
    cfg = sc.default_run_config()
    shapes = set()
    for folder in folders:
        if not adapter.can_read(folder):
            _fail(sc, f"the adapter does not recognise the generated site {folder.name}")
        site = adapter.read(folder, strict=True)
        if site.x.dtype.name != "float32" or site.y.dtype.name != "int64" or len(site) < 1:
            _fail(sc, f"{folder.name}: expected float32 x and int64 y, got {site.x.dtype} and {site.y.dtype}")
        if not set(site.y.tolist()) <= {0, 1}:
            _fail(sc, f"{folder.name}: labels other than 0 and 1")
        shapes.add(site.x.shape[1:])
        split = sc.split(site, cfg)
        parts = [split.train, split.test, *([split.val] if split.val is not None else [])]
        if len(split.train) < 1 or sum(len(p) for p in parts) > len(site):
            _fail(sc, f"{folder.name}: the split of {len(site)} records gave {[len(p) for p in parts]}")
    if len(shapes) != 1:
        _fail(sc, f"the generated sites hold features of different shapes: {sorted(shapes)}")


def task_cases(sc: Scenario, tmp_path: Path) -> list[TaskCase]:
    """The scenario's task (and one per model it recommends settings for) on a small slice of its first site."""
    root = generated_sites(sc, tmp_path)
    adapter = sc.adapter_for(None, root)
    data = adapter.read(list_site_dirs(root, adapter)[0], strict=True)
    if is_raw(data):  # a table read through its schema: encoded as the federation would (here from this site alone)
        data = federated_preprocessing([SiteSplit(data.name, data, data)])[0][0].train
    data = small_slice(data, TASK_RECORDS)
    cases = []
    for model in ("", *sc.model_defaults):
        values: dict[str, Any] = {"local-epochs": 1, **({"model": model} if model else {})}
        cfg, params = sc.configure(values)
        name = sc.name + (f" (model={model})" if model else "")
        cases.append(TaskCase(name, sc.make_task(params), data, cfg))
    return cases


def check_task_on_sites(sc: Scenario, tmp_path: Path) -> None:
    """``make_task`` builds a task that passes every task check on the scenario's own data."""
    failures = [line for case in task_cases(sc, tmp_path) for line in task_failures(case)]
    if failures:
        _fail(sc, "the task fails its checks:\n  " + "\n  ".join(failures))


CHECKS: tuple[Check, ...] = (
    check_identity,
    check_policy,
    check_recommended_settings,
    check_generated_sites,
    check_task_on_sites,
)


def scenario_checks(name: str | None = None) -> Iterator[tuple[Scenario, Check]]:
    """Every (scenario, check) pair of the scenario ``name``, or of every registered one, for pytest."""
    scenarios = [registry.get(name)] if name is not None else list(registry.available().values())
    for sc in scenarios:
        for check in CHECKS:
            yield sc, check
