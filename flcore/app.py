"""The suite's Flower ServerApp and ClientApp (Message API), domain-agnostic.

The ServerApp first asks every site for feature sums (never rows) to build the
shared standardisation, then runs the configured strategy from
:mod:`flcore.strategies`. The ClientApp trains and evaluates the scenario's task on
its site's data. Both are built by factories for the in-process simulation runner
(:mod:`flcore.simulation`); the module-level ``server_app`` and ``client_app`` serve
``flwr run .`` and deployed SuperNodes, configured from the Flower run config.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from flcore import keys
from flcore import scenario as scenario_registry
from flcore.compression import compression_mod
from flcore.config import RunConfig, apply_settings, settings_of, to_dict, to_json
from flcore.data import FeatureStats, SiteData, SiteSplit, list_site_dirs
from flcore.exceptions import ConfigError, FlsuiteError
from flcore.governance import check_deidentified, check_min_cohort
from flcore.monitor import FederationMonitor, MonitoredGrid, RoundRecord
from flcore.strategies import build_strategy

RUN_JSON = "run-json"


# --------------------------------------------------------------------------------------
# Site data on the client side
# --------------------------------------------------------------------------------------

SiteLoader = Callable[[Context, RunConfig], SiteSplit]


class _SplitCache:
    """Prepared site splits kept between messages, least recently used evicted beyond ``max_bytes``.

    A simulation worker serves many virtual sites in turn (hundreds of devices); a
    SuperNode serves one. Both reuse the decoded data across rounds without letting
    a large fleet grow a worker's memory without bound.
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], tuple[SiteSplit, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[object, ...], make: Callable[[], SiteSplit]) -> SiteSplit:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        split = make()
        size = sum(int(p.x.nbytes + p.y.nbytes) for p in (split.train, split.test, split.val) if p is not None)
        self._items[key] = (split, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= old
        return split

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


_SITE_CACHE = _SplitCache()


def save_split(split: SiteSplit, path: Path) -> None:
    """Write a prepared site split (train and test arrays) as one ``.npz`` file."""
    tmp = path.with_suffix(".partial.npz")
    val = split.val
    np.savez(
        tmp,
        name=np.asarray(split.name),
        x_train=split.train.x,
        y_train=split.train.y,
        x_test=split.test.x,
        y_test=split.test.y,
        x_val=val.x if val is not None else np.zeros((0, *split.train.x.shape[1:]), dtype=split.train.x.dtype),
        y_val=val.y if val is not None else np.zeros(0, dtype=split.train.y.dtype),
    )
    tmp.replace(path)


def load_split(path: Path) -> SiteSplit:
    """Inverse of :func:`save_split`."""
    with np.load(path) as z:
        name = str(z["name"])
        val = SiteData(name, z["x_val"], z["y_val"], str(path)) if len(z["y_val"]) else None
        return SiteSplit(
            name,
            SiteData(name, z["x_train"], z["y_train"], str(path)),
            SiteData(name, z["x_test"], z["y_test"], str(path)),
            val,
        )


def prepared_site_loader(prepared: list[str]) -> SiteLoader:
    """Loader for simulation: virtual node ``partition-id`` reads ``prepared[partition-id]``."""

    def load(context: Context, cfg: RunConfig) -> SiteSplit:
        path = prepared[int(context.node_config["partition-id"])]
        return _SITE_CACHE.get((path, cfg.seed, cfg.test_fraction), lambda: load_split(Path(path)))

    return load


def _folder_site_loader(context: Context, cfg: RunConfig, scenario: scenario_registry.Scenario) -> SiteSplit:
    """Loader for deployment and ``flwr run``: a site folder read through the adapter.

    A deployed SuperNode names its own folder in its node config (``data-dir``); in
    ``flwr run`` simulation, virtual node ``partition-id`` takes the matching
    sub-folder of the run config's ``data-dir`` (synthetic data when empty).
    """
    if cfg.partition != "natural":
        raise ConfigError(
            f"partition={cfg.partition} re-splits pooled data, which a deployed site never has. "
            "Use partition=natural here, or `flsuite run` for partitioned simulations."
        )
    node = context.node_config
    if "data-dir" in node:
        site_dir = Path(str(node["data-dir"]))
    else:
        root = _data_root(scenario, str(context.run_config.get("data-dir", "")), cfg.seed)
        site_dir = list_site_dirs(root, scenario.adapter)[int(node["partition-id"])]
    # Modification times are in the key so that a long-lived SuperNode sees changed data,
    # whether files were replaced (folder mtimes) or rewritten in place (file mtimes), at any depth.
    stamp = _tree_stamp(site_dir)
    key = (f"{site_dir}@{stamp}", cfg.seed, cfg.test_fraction, cfg.val_fraction, cfg.data_mode)

    def make() -> SiteSplit:
        site = scenario.adapter.read(site_dir, strict=cfg.data_mode == "strict")
        # The site enforces the policy itself: a coordinator cannot skip it.
        check_deidentified(site, scenario.policy, scenario.site_noun)
        check_min_cohort([site], scenario.policy, scenario.site_noun)
        return scenario.split(site, cfg)

    return _SITE_CACHE.get(key, make)


def _tree_stamp(folder: Path) -> int:
    """Latest modification time (ns) of the folder, its sub-folders and their files."""
    latest = folder.stat().st_mtime_ns
    for root, _, files in os.walk(folder):
        latest = max(latest, Path(root).stat().st_mtime_ns, *(Path(root, f).stat().st_mtime_ns for f in files))
    return latest


def _data_root(scenario: scenario_registry.Scenario, data_dir: str, seed: int) -> Path:
    """``data_dir`` if given, else synthetic data generated once into a per-user cache."""
    if data_dir:
        return Path(data_dir)
    cache = Path(os.environ.get("FLSUITE_CACHE", Path.home() / ".cache" / "flsuite"))
    root = cache / f"{scenario.name}-seed{seed}"
    if not root.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".partial-"))
        scenario.make_data(tmp, seed)
        try:
            tmp.rename(root)  # atomic; a concurrent generator may have won the race
        except OSError:
            pass
    return root


# --------------------------------------------------------------------------------------
# ClientApp
# --------------------------------------------------------------------------------------


def _decode(config: ConfigRecord) -> tuple[scenario_registry.Scenario, RunConfig, Any]:
    scenario = scenario_registry.get(str(config[keys.SCENARIO]))
    cfg = apply_settings(RunConfig(), json.loads(str(config[RUN_JSON])))
    params = scenario.params_from_dict(json.loads(str(config[keys.PARAMS_JSON])))
    return scenario, cfg, params


def _site_seed(seed: int, server_round: int, site: str) -> int:
    return zlib.crc32(f"{seed}/{server_round}/{site}".encode()) & 0x7FFFFFFF


def _site_record(name: str) -> ConfigRecord:
    return ConfigRecord({keys.SITE_NAME: name})


def dropout_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Simulation only: a sampled site fails to answer with probability ``dropout-rate``.

    Devices in a fleet go offline (power, network, maintenance). The draw depends on
    the seed, the round and the virtual node, so a run is reproducible and a device
    that is offline for training is offline for that round's evaluation too. The
    reply is an error, as Flower delivers for a node that cannot be reached, and the
    strategy aggregates the replies it has.
    """
    if msg.metadata.message_type not in (MessageType.TRAIN, MessageType.EVALUATE):
        return call_next(msg, context)
    config = msg.content.config_records.get(keys.CONFIG)
    if config is None or RUN_JSON not in config:
        return call_next(msg, context)
    run = json.loads(str(config[RUN_JSON]))
    rate = float(run.get("dropout-rate", 0.0))
    server_round = int(config.get(keys.SERVER_ROUND, 0))  # type: ignore[arg-type]
    node = context.node_config.get("partition-id", context.node_id)
    if rate > 0 and dropout_draw(int(run.get("seed", 0)), server_round, str(node)) < rate:
        reason = f"simulated dropout: node {node} offline in round {server_round} (dropout-rate={rate})"
        return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason), reply_to=msg)
    return call_next(msg, context)


def dropout_draw(seed: int, server_round: int, node: str) -> float:
    """A uniform number in [0, 1) fixed by seed, round and node, independent across rounds and nodes.

    A cryptographic hash, not CRC32: CRC is linear, so the sets of nodes it drops in
    different rounds would overlap far more (or less) than independent draws do.
    """
    digest = hashlib.blake2b(f"dropout/{seed}/{server_round}/{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def make_client_app(
    load_site: SiteLoader | None = None, torch_threads: int | None = None, simulate_dropout: bool = False
) -> ClientApp:
    """Build the ClientApp.

    Parameters
    ----------
    load_site : callable, optional
        ``load_site(context, cfg) -> SiteSplit``. Defaults to reading the site folder
        through the scenario's adapter (deployment and ``flwr run``).
    torch_threads : int, optional
        Threads torch may use in this process (1 per virtual client in simulation).
    simulate_dropout : bool
        Add :func:`dropout_mod` (simulation only; deployed devices drop out by themselves).
    """
    # The dropout draw comes first: an offline device does not even decode its message.
    app = ClientApp(mods=[*([dropout_mod] if simulate_dropout else []), compression_mod])

    def site_for(msg: Message, context: Context) -> tuple[Any, RunConfig, Any, SiteSplit]:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        scenario, cfg, params = _decode(msg.content[keys.CONFIG])  # type: ignore[arg-type]
        split = load_site(context, cfg) if load_site else _folder_site_loader(context, cfg, scenario)
        return scenario, cfg, params, split

    def model_from(task: Any, split: SiteSplit, arrays: ArrayRecord) -> Any:
        model = task.init_model(FeatureStats.of(split.train.x[:1]), 0)
        model.load_state_dict(arrays.to_torch_state_dict())
        return model

    @app.query(keys.QUERY_FEATURE_STATS)
    def query(msg: Message, context: Context) -> Message:
        _, _, _, split = site_for(msg, context)
        stats = FeatureStats.of(split.train.x, split.train.y)
        content = RecordDict(
            {
                keys.ARRAYS: ArrayRecord({keys.STAT_SUM: Array(stats.total), keys.STAT_SUMSQ: Array(stats.total_sq)}),
                keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: stats.count, keys.NUM_POSITIVE: stats.positives}),
                keys.SITE: _site_record(split.name),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        scenario, cfg, params, split = site_for(msg, context)
        conf = msg.content[keys.CONFIG]
        server_round = int(conf[keys.SERVER_ROUND])  # type: ignore[index,arg-type]
        task = scenario.make_task(params)
        model = model_from(task, split, msg.content[keys.ARRAYS])  # type: ignore[arg-type]
        mu = float(conf.get(keys.PROXIMAL_MU, 0.0))  # type: ignore[union-attr,arg-type]
        out = task.fit(
            model,
            split.train,
            cfg,
            first_round=server_round - 1,
            num_rounds=1,
            seed=_site_seed(cfg.seed, server_round, split.name),
            proximal_mu=mu,
        )
        metrics = MetricRecord({keys.NUM_EXAMPLES: len(split.train), **out})
        content = RecordDict(
            {
                keys.ARRAYS: ArrayRecord(model.state_dict()),
                keys.METRICS: metrics,
                keys.SITE: _site_record(split.name),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        scenario, _, params, split = site_for(msg, context)
        task = scenario.make_task(params)
        model = model_from(task, split, msg.content[keys.ARRAYS])  # type: ignore[arg-type]
        threshold = None
        if split.val is not None and len(split.val):
            threshold = task.choose_threshold(split.val.y, task.predict(model, split.val.x))
        scores = task.score(split.test.y, task.predict(model, split.test.x), threshold)
        values: dict[str, Any] = {keys.NUM_EXAMPLES: len(split.test)}
        for name, value in scores.items():
            if name in ("n", "n_positive"):  # counts, not metrics: averaging them means nothing
                continue
            values["eval-loss" if name == "loss" else name] = float("nan") if value is None else float(value)
        content = RecordDict({keys.METRICS: MetricRecord(values), keys.SITE: _site_record(split.name)})
        return Message(content=content, reply_to=msg)

    return app


# --------------------------------------------------------------------------------------
# ServerApp
# --------------------------------------------------------------------------------------


@dataclass
class FederationPlan:
    """What the ServerApp runs: a scenario with its settings, for a number of sites."""

    scenario: str
    cfg: RunConfig
    params: Any
    num_sites: int
    connect_timeout_s: float = 120.0
    on_round: Callable[[RoundRecord], None] | None = None


@dataclass
class FederationOutcome:
    """What the ServerApp hands back: the final model and the per-round records."""

    state_dict: dict[str, Any] = field(default_factory=dict)
    monitor: FederationMonitor | None = None
    feature_stats: FeatureStats | None = None
    sites: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def _common_config(plan: FederationPlan) -> ConfigRecord:
    return ConfigRecord(
        {
            keys.SCENARIO: plan.scenario,
            RUN_JSON: to_json(plan.cfg),
            keys.PARAMS_JSON: json.dumps(to_dict(plan.params), sort_keys=True),
        }
    )


def _wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
    # Flower samples from the nodes connected at that moment: wait for all of them.
    deadline = time.monotonic() + timeout_s
    while len(ids := list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise FlsuiteError(
                f"Only {len(ids)} of {n} sites connected within {timeout_s:.0f} s. "
                "Check that every site's SuperNode is running and can reach the SuperLink."
            )
        time.sleep(0.05)
    return ids


def collect_feature_stats(
    grid: Grid, node_ids: list[int], config: ConfigRecord, timeout: float
) -> tuple[FeatureStats, dict[int, str]]:
    """Ask every site for its feature sums and combine them (no row leaves a site).

    Returns the pooled statistics and each node's site name.
    """
    content = RecordDict({keys.CONFIG: config})
    messages = [
        Message(content=content, message_type=f"{keys.QUERY_KIND}.{keys.QUERY_FEATURE_STATS}", dst_node_id=n)
        for n in node_ids
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    parts, names = [], {}
    for reply in replies:
        if reply.has_error():
            raise FlsuiteError(f"A site failed while computing feature statistics: {reply.error.reason}")
        arrays = reply.content[keys.ARRAYS]
        metrics = reply.content[keys.METRICS]
        parts.append(
            FeatureStats(
                count=int(metrics[keys.NUM_EXAMPLES]),  # type: ignore[index,arg-type]
                total=arrays[keys.STAT_SUM].numpy(),  # type: ignore[index,union-attr]
                total_sq=arrays[keys.STAT_SUMSQ].numpy(),  # type: ignore[index,union-attr]
                positives=int(metrics[keys.NUM_POSITIVE]),  # type: ignore[index,arg-type]
            )
        )
        names[reply.metadata.src_node_id] = str(reply.content[keys.SITE][keys.SITE_NAME])  # type: ignore[index]
    if len(parts) < len(node_ids):
        raise FlsuiteError(f"Only {len(parts)} of {len(node_ids)} sites returned feature statistics.")
    return FeatureStats.combine(parts), names


def run_federation(grid: Grid, plan: FederationPlan) -> FederationOutcome:
    """The ServerApp's work: statistics round, then the strategy's rounds."""
    t0 = time.perf_counter()
    cfg = plan.cfg
    random.seed(cfg.seed)  # Flower's node sampling uses the `random` module
    scenario = scenario_registry.get(plan.scenario)
    monitor = FederationMonitor(on_round=plan.on_round)
    mgrid = MonitoredGrid(grid, monitor)
    node_ids = sorted(_wait_for_nodes(grid, plan.num_sites, plan.connect_timeout_s))
    common = _common_config(plan)
    stats, names = collect_feature_stats(mgrid, node_ids, common, timeout=plan.connect_timeout_s)
    mgrid.name_nodes(names)
    sites = sorted(names.values())

    task = scenario.make_task(plan.params)
    model = task.init_model(stats, cfg.seed)
    strategy = build_strategy(
        cfg,
        plan.num_sites,
        train_metrics_aggr_fn=monitor.aggregate_train,
        evaluate_metrics_aggr_fn=monitor.aggregate_evaluate,
    )
    result = strategy.start(
        grid=mgrid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_server_rounds,
        train_config=_common_config(plan),
        evaluate_config=_common_config(plan),
        evaluate_fn=monitor.end_round,
    )
    final = result.arrays if len(result.arrays) else ArrayRecord(model.state_dict())
    return FederationOutcome(
        state_dict=final.to_torch_state_dict(),
        monitor=monitor,
        feature_stats=stats,
        sites=sites,
        wall_time_s=time.perf_counter() - t0,
    )


def make_server_app(plan: FederationPlan, outcome: FederationOutcome) -> ServerApp:
    """ServerApp for in-process simulation; fills ``outcome`` when done."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        done = run_federation(grid, plan)
        outcome.__dict__.update(done.__dict__)

    return app


# --------------------------------------------------------------------------------------
# Module-level apps for `flwr run .` and deployed SuperNodes
# --------------------------------------------------------------------------------------

server_app = ServerApp()
client_app = make_client_app()


def plan_from_run_config(run_config: dict[str, Any]) -> tuple[FederationPlan, Path]:
    """Read ``[tool.flwr.app.config]`` once into a typed plan and an output folder."""
    scenario = scenario_registry.get(str(run_config.get("scenario", "finance-five-banks")))
    values = {k: v for k, v in run_config.items() if k in settings_of(RunConfig) or k in settings_of(scenario.params)}
    cfg, params = scenario.configure(values)
    num_sites = int(run_config.get("num-sites-expected", 0)) or len(
        list_site_dirs(_data_root(scenario, str(run_config.get("data-dir", "")), cfg.seed), scenario.adapter)
    )
    out = Path(str(run_config.get("out-dir", "runs/flwr-run")))
    return FederationPlan(scenario.name, cfg, params, num_sites), out


@server_app.main()
def _flwr_run_main(grid: Grid, context: Context) -> None:
    from flcore.results import federated_only_results, write_json

    plan, out = plan_from_run_config(dict(context.run_config))
    outcome = run_federation(grid, plan)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "federated.json", federated_only_results(plan, outcome))
