"""A ClientApp's site: where its data come from (prepared splits, or its folder) and which policy governs it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context

from flcore import keys
from flcore import scenario as scenario_registry
from flcore.config import RunConfig
from flcore.data.preprocess import Preprocessing, encode_split, is_raw
from flcore.data.site import SiteSplit, list_site_dirs
from flcore.data.splitfiles import SITE_CACHE, load_split
from flcore.exceptions import ConfigError
from flcore.federation.plan import data_root
from flcore.governance.siteguard import SiteGovernance, split_facts

SiteLoader = Callable[[Context, RunConfig], SiteSplit]
SiteGovernanceFn = Callable[[Context, RunConfig, Any, SiteSplit], SiteGovernance]


def prepared_site_loader(prepared: list[str]) -> SiteLoader:
    """Loader for simulation: virtual node ``partition-id`` reads ``prepared[partition-id]``."""

    def load(context: Context, cfg: RunConfig) -> SiteSplit:
        path = prepared[int(context.node_config["partition-id"])]
        return SITE_CACHE.get((path, cfg.seed, cfg.test_fraction), lambda: load_split(Path(path)))

    return load


def folder_site_loader(context: Context, config: ConfigRecord, run: tuple[Any, RunConfig, Any]) -> SiteSplit:
    """Loader for deployment and ``flwr run``: a site folder read through the run's adapter.

    A deployed SuperNode names its own folder in its node config (``data-dir``); in
    ``flwr run`` simulation, virtual node ``partition-id`` takes the matching
    sub-folder of the run config's ``data-dir`` (synthetic data when empty). A table
    read through a schema is encoded with the federation's preprocessing once the
    message carries it (:mod:`flcore.federation.preprocessing`), raw until then.
    """
    scenario, cfg, params = run
    if cfg.partition != "natural":
        raise ConfigError(
            f"partition={cfg.partition} re-splits pooled data, which a deployed site never has. "
            "Use partition=natural here, or `flsuite run` for partitioned simulations."
        )
    site_dir = site_dir_of(context, cfg, scenario)
    # Modification times are in the key so that a long-lived SuperNode sees changed data,
    # whether files were replaced (folder mtimes) or rewritten in place (file mtimes), at any depth.
    stamp = _tree_stamp(site_dir)
    prep = config.get(keys.PREPROCESSING)
    key = (f"{site_dir}@{stamp}", cfg.seed, cfg.test_fraction, cfg.val_fraction, cfg.data_mode, prep, str(params))

    def make() -> SiteSplit:
        site = scenario.adapter_for(params, None).read(site_dir, strict=cfg.data_mode == "strict")
        split = scenario.split(site, cfg)  # the site's gate (siteguard) checks it before any use
        return encode_split(split, Preprocessing.from_json(json.loads(str(prep)))) if prep and is_raw(site) else split

    return SITE_CACHE.get(key, make)


def site_dir_of(context: Context, cfg: RunConfig, scenario: scenario_registry.Scenario) -> Path:
    """The site folder a node serves: its node config's ``data-dir``, else its partition of the run's data."""
    node = context.node_config
    if "data-dir" in node:
        return Path(str(node["data-dir"]))
    root = data_root(scenario, str(context.run_config.get("data-dir", "")), cfg.seed)
    return list_site_dirs(root, scenario.adapter)[int(node["partition-id"])]


def folder_governance(context: Context, cfg: RunConfig, scenario: Any, split: SiteSplit) -> SiteGovernance:
    """A deployed site's policy: the node config's ``policy`` file, else ``policy.toml`` in its folder."""
    site_dir = site_dir_of(context, cfg, scenario)
    policy_file = str(context.node_config.get("policy", ""))
    return SiteGovernance.of(split.name, site_dir, scenario.policy, split_facts(split), policy_file)


def prepared_governance(items: list[SiteGovernance]) -> SiteGovernanceFn:
    """Simulation: virtual node ``partition-id`` is governed by ``items[partition-id]``."""
    return lambda context, cfg, scenario, split: items[int(context.node_config["partition-id"])]


def _tree_stamp(folder: Path) -> int:
    """Latest modification time (ns) of the folder, its sub-folders and their files."""
    latest = folder.stat().st_mtime_ns
    for root, _, files in os.walk(folder):
        latest = max(latest, Path(root).stat().st_mtime_ns, *(Path(root, f).stat().st_mtime_ns for f in files))
    return latest
