"""The suite's Flower ServerApp and ClientApp (Message API), domain-agnostic.

The ServerApp first asks every site for feature sums (never rows) to build the
shared standardisation, then runs the configured strategy from
:mod:`flcore.federation.strategies`. The ClientApp trains and evaluates the scenario's task on
its site's data. Both are built by factories for the in-process simulation runner
(:mod:`flcore.federation.engines`); the module-level ``client_app`` serves ``flwr run .`` and
deployed SuperNodes, configured from the Flower run config (the ServerApp Flower loads
by name is :mod:`flcore.experiment.deployed`'s ``server_app``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
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
from flcore.config import RunConfig, from_json, refuse_attack_outside_simulation, settings_of, to_dict, to_json
from flcore.data.site import FeatureStats, SiteData, SiteSplit, list_site_dirs
from flcore.exceptions import ConfigError, FlsuiteError
from flcore.federation.checkpoint import (
    RESUME_EXEMPT,
    Checkpoint,
    CheckpointError,
    capture_strategy,
    restore_strategy,
    write_checkpoint,
)
from flcore.federation.codecs import compression_mod
from flcore.federation.mods.attack import ATTACKERS, attack_mod, choose_attackers
from flcore.federation.mods.secagg import is_secagg_fit, run_secagg_rounds, secagg_client_mod, secagg_fit
from flcore.federation.monitor import FederationMonitor, MonitoredGrid, RoundRecord, arrays_digest
from flcore.federation.preflight import check_federation
from flcore.federation.rounds import QuorumError, run_rounds, wait_for_sites
from flcore.federation.strategies import build_strategy, min_evaluate_per_round, min_sites_per_round
from flcore.federation.strategies.averaging import array_view
from flcore.governance.policy import GovernanceError, Refusal, refusal_error
from flcore.governance.siteguard import (
    SiteGovernance,
    admit,
    ledger_of,
    plan_changed,
    resolve_privacy,
    run_facts,
    site_dp,
    split_facts,
)
from flcore.keys import RUN_JSON
from flcore.learning.privacy import steps_per_epoch
from flcore.outputs import atomic_write

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
    val = split.val
    with atomic_write(path, "wb", permissions=0o600) as handle:  # a site's records: its owner reads them
        np.savez(
            handle,
            name=np.asarray(split.name),
            x_train=split.train.x,
            y_train=split.train.y,
            x_test=split.test.x,
            y_test=split.test.y,
            x_val=val.x if val is not None else np.zeros((0, *split.train.x.shape[1:]), dtype=split.train.x.dtype),
            y_val=val.y if val is not None else np.zeros(0, dtype=split.train.y.dtype),
        )


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
    site_dir = _site_dir(context, cfg, scenario)
    # Modification times are in the key so that a long-lived SuperNode sees changed data,
    # whether files were replaced (folder mtimes) or rewritten in place (file mtimes), at any depth.
    stamp = _tree_stamp(site_dir)
    key = (f"{site_dir}@{stamp}", cfg.seed, cfg.test_fraction, cfg.val_fraction, cfg.data_mode)

    def make() -> SiteSplit:
        site = scenario.adapter.read(site_dir, strict=cfg.data_mode == "strict")
        return scenario.split(site, cfg)  # the site's gate (siteguard) checks it before any use

    return _SITE_CACHE.get(key, make)


def _site_dir(context: Context, cfg: RunConfig, scenario: scenario_registry.Scenario) -> Path:
    node = context.node_config
    if "data-dir" in node:
        return Path(str(node["data-dir"]))
    root = _data_root(scenario, str(context.run_config.get("data-dir", "")), cfg.seed)
    return list_site_dirs(root, scenario.adapter)[int(node["partition-id"])]


SiteGovernanceFn = Callable[[Context, RunConfig, Any, SiteSplit], SiteGovernance]


def _folder_governance(context: Context, cfg: RunConfig, scenario: Any, split: SiteSplit) -> SiteGovernance:
    """A deployed site's policy: the node config's ``policy`` file, else ``policy.toml`` in its folder."""
    site_dir = _site_dir(context, cfg, scenario)
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
    return _decode_texts(str(config[keys.SCENARIO]), str(config[RUN_JSON]), str(config[keys.PARAMS_JSON]))


@lru_cache(maxsize=16)
def _decode_texts(name: str, run_json: str, params_json: str) -> tuple[scenario_registry.Scenario, RunConfig, Any]:
    # Every message of a run carries the same settings; checking them again costs ms per message in a
    # fleet. The settings objects are frozen dataclasses, so sharing them between messages is safe.
    scenario = scenario_registry.get(name)
    cfg = from_json(RunConfig, run_json)
    params = scenario.params_from_dict(json.loads(params_json))
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


class _Refused(Exception):
    def __init__(self, refusals: list[Refusal]) -> None:
        super().__init__(refusals[0].text())
        self.refusals = refusals


def _refusal_reply(msg: Message, refusals: list[Refusal]) -> Message:
    record = ConfigRecord({keys.REFUSAL: json.dumps([r.to_json() for r in refusals])})
    return Message(content=RecordDict({keys.REFUSAL: record}), reply_to=msg)


def _refusal_error(msg: Message, refusals: list[Refusal]) -> Message:
    """A refusal in reply to train or evaluate: an error, which strategies count as a failed site."""
    reason = "refused by its governance policy: " + "; ".join(r.text() for r in refusals)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def refusals_in(reply: Message) -> list[Refusal]:
    """The refusals a site sent instead of an answer (empty for a normal reply)."""
    if reply.has_error() or keys.REFUSAL not in reply.content.config_records:
        return []
    raw = reply.content.config_records[keys.REFUSAL][keys.REFUSAL]
    return [Refusal(**r) for r in json.loads(str(raw))]


_ADMITTED: set[tuple[str, str]] = set()  # (run id, site) already through the site's gate in this process
_DP_STATE = "flsuite-dp"
_PLAN_STATE = "flsuite-plan"


def _pin_plan(context: Context, run_id: str, plan: str, site: str, gov: SiteGovernance) -> None:
    """The first plan a site serves in a run is the run's plan: a later message may not change it.

    (The noise a site calibrated, and the epsilon it reserved, hold only for that plan.)
    """
    record = context.state.config_records.get(_PLAN_STATE) or ConfigRecord()
    pinned = str(record.get(run_id, plan))
    if pinned != plan:
        raise _Refused([plan_changed(gov, run_id, pinned, plan)])
    record[run_id] = plan
    context.state[_PLAN_STATE] = record


DP_NOISE = "dp-noise-multiplier"


def _update_norm(before: ArrayRecord, after: ArrayRecord) -> float | None:
    """L2 norm of ``after - before`` over the floating-point arrays both hold (None if none: trees)."""
    total, found = 0.0, False
    for name, arr in before.items():
        old = array_view(arr)  # type: ignore[arg-type]
        if not np.issubdtype(old.dtype, np.floating) or name not in after:
            continue
        new = array_view(after[name])  # type: ignore[arg-type]
        if new.shape != old.shape:
            continue
        diff = new.astype(np.float64) - old
        total += float(np.dot(diff.ravel(), diff.ravel()))
        found = True
    return float(np.sqrt(total)) if found else None


def make_client_app(
    load_site: SiteLoader | None = None,
    torch_threads: int | None = None,
    simulate_dropout: bool = False,
    governance: SiteGovernanceFn | None = None,
    simulate_attack: bool = False,
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
    governance : callable, optional
        ``governance(context, cfg, scenario, split) -> SiteGovernance``: the site's
        policy and ledger. Defaults to the node config's ``policy`` file, else
        ``policy.toml`` in the site folder, over the domain's defaults.
    simulate_attack : bool
        Add :func:`flcore.federation.mods.attack.attack_mod` (simulation only): the sites named in the
        train config's ``attackers`` replace their update as ``attack`` says.

    Before it answers any message of a run, the site runs its own gate
    (:func:`flcore.governance.siteguard.admit`) and answers with its refusals instead if the run
    breaks its policy; under ``privacy=dp`` it trains with DP-SGD at the noise it
    calibrates itself, and records the epsilon spent in its ledger.
    """
    # The dropout draw comes first: an offline device does not even decode its message.
    # The attack acts on the plain update, inside compression (an attacking site's reply is what it trains).
    app = ClientApp(
        mods=[*([dropout_mod] if simulate_dropout else []), compression_mod, *([attack_mod] if simulate_attack else [])]
    )

    def site_for(msg: Message, context: Context) -> tuple[Any, RunConfig, Any, SiteSplit, SiteGovernance, str]:
        return site_for_config(msg.content[keys.CONFIG], context)  # type: ignore[arg-type]

    def site_for_config(
        config: ConfigRecord, context: Context
    ) -> tuple[Any, RunConfig, Any, SiteSplit, SiteGovernance, str]:
        import torch

        if torch_threads and torch.get_num_threads() != torch_threads:  # setting it again costs ~2 ms a message
            torch.set_num_threads(torch_threads)
        scenario, cfg, params = _decode(config)
        split = load_site(context, cfg) if load_site else _folder_site_loader(context, cfg, scenario)
        gov = (governance or _folder_governance)(context, cfg, scenario, split)
        run_id = str(config.get(keys.RUN_ID, "unspecified"))
        run = run_facts(scenario, cfg, params)
        if (run_id, split.name) not in _ADMITTED:
            refusals = admit(gov, run, run_id, scenario.site_noun)
            if refusals:
                raise _Refused(refusals)
            _ADMITTED.add((run_id, split.name))
        _pin_plan(context, run_id, run.plan_hash, split.name, gov)
        return scenario, cfg, params, split, gov, run_id

    def model_from(task: Any, split: SiteSplit, arrays: ArrayRecord) -> Any:
        model = task.init_model(FeatureStats.of(split.train.x[:1]), 0)
        task.load_model_arrays(model, arrays)
        return model

    def dp_steps(
        context: Context, run_id: str, config: ConfigRecord, cfg: RunConfig, n: int, gov: SiteGovernance
    ) -> int:
        """DP-SGD steps this site has taken in the run.

        The count lives in the node's run state and, for a site with a privacy
        ledger, in the ledger (written before each reply), so it survives a restarted
        SuperNode and a resumed coordinator (a new Flower run, with fresh state). A
        resumed run also carries the last completed round: the site then charges
        itself for every round before it, whether it trained in them or not.
        """
        state = context.state.config_records.get(_DP_STATE)
        steps = int(state.get(run_id, 0)) if state is not None else 0  # type: ignore[arg-type]
        ledger = ledger_of(gov)
        if ledger is not None:
            steps = max(steps, ledger.steps(run_id))
        resumed = int(config.get(keys.RESUMED_AFTER, 0))  # type: ignore[arg-type]
        if resumed > 0:
            per_round = cfg.local_epochs * steps_per_epoch(site_dp(cfg, n, 0).sample_rate)
            steps = max(steps, resumed * per_round)
        return steps

    @app.query(keys.QUERY_FEATURE_STATS)
    def query(msg: Message, context: Context) -> Message:
        try:
            _, _, _, split, _, _ = site_for(msg, context)
        except _Refused as refused:
            return _refusal_reply(msg, refused.refusals)
        stats = FeatureStats.of(split.train.x, split.train.y)
        content = RecordDict(
            {
                keys.ARRAYS: ArrayRecord({keys.STAT_SUM: Array(stats.total), keys.STAT_SUMSQ: Array(stats.total_sq)}),
                keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: stats.count, keys.NUM_POSITIVE: stats.positives}),
                keys.SITE: _site_record(split.name),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.query(keys.QUERY_RUN_END)
    def run_end(msg: Message, context: Context) -> Message:
        """Settle the run in the site's ledger at the epsilon it really spent."""
        try:
            scenario, cfg, params, split, gov, run_id = site_for(msg, context)
        except _Refused as refused:
            return _refusal_reply(msg, refused.refusals)
        conf: ConfigRecord = msg.content.config_records[keys.CONFIG]
        spent, noise, steps = 0.0, 0.0, None
        if cfg.privacy == "dp":
            n = _training_records(scenario.make_task(params), split)
            dp = site_dp(cfg, n, dp_steps(context, run_id, conf, cfg, n, gov))
            spent, noise, steps = dp.epsilon(), dp.noise_multiplier, dp.steps
        elif cfg.privacy == "client-dp":
            # Central DP: the noise is the coordinator's, which the site cannot check; it stays charged in full.
            spent = max(cfg.dp_epsilon, float(conf.get(keys.DP_EPSILON, 0.0)))  # type: ignore[union-attr,arg-type]
        ledger = ledger_of(gov)
        if ledger is not None and cfg.privacy != "none":
            ledger.record(run_id, spent, final=True, steps=steps)
        metrics = MetricRecord({keys.DP_EPSILON: spent, DP_NOISE: noise})
        return Message(content=RecordDict({keys.METRICS: metrics, keys.SITE: _site_record(split.name)}), reply_to=msg)

    def train_core(
        config: ConfigRecord, arrays: ArrayRecord, context: Context
    ) -> tuple[ArrayRecord, dict[str, Any], str]:
        """Train one round at this site: what it sends back, the reply's metrics, the site's name."""
        scenario, cfg, params, split, gov, run_id = site_for_config(config, context)
        server_round = int(config[keys.SERVER_ROUND])  # type: ignore[arg-type]
        task = scenario.make_task(params)
        model = model_from(task, split, arrays)
        mu = float(config.get(keys.PROXIMAL_MU, 0.0))  # type: ignore[arg-type]
        n = _training_records(task, split)
        dp = site_dp(cfg, n, dp_steps(context, run_id, config, cfg, n, gov)) if cfg.privacy == "dp" else None
        if dp is not None and dp.steps + cfg.local_epochs * steps_per_epoch(dp.sample_rate) > dp.planned_steps:
            raise _Refused(
                [
                    Refusal(
                        "max-epsilon-per-run",
                        split.name,
                        gov.policy.source,
                        f"round {server_round} would take DP-SGD past the {dp.planned_steps} steps the plan "
                        f"allows ({cfg.num_server_rounds} rounds), and so past epsilon {cfg.dp_epsilon:g}.",
                        "The coordinator asked for more rounds than planned; start a new run.",
                    )
                ]
            )
        out = task.fit(
            model,
            split.train,
            cfg,
            first_round=server_round - 1,
            num_rounds=1,
            seed=_site_seed(cfg.seed, server_round, split.name),
            proximal_mu=mu,
            dp=dp,
        )
        values: dict[str, Any] = {keys.NUM_EXAMPLES: len(split.train), keys.UNIT_WEIGHT: 1.0, **out}
        sent = task.update_arrays(model, cfg)
        norm = _update_norm(arrays, sent)
        if norm is not None:
            values[keys.UPDATE_NORM] = norm
        if dp is not None:
            record = context.state.config_records.get(_DP_STATE) or ConfigRecord()
            record[run_id] = dp.steps
            context.state[_DP_STATE] = record
            values[keys.DP_EPSILON] = dp.epsilon()
            ledger = ledger_of(gov)
            if ledger is not None:
                ledger.record(run_id, values[keys.DP_EPSILON], steps=dp.steps)
        return sent, values, split.name

    @app.train(mods=[secagg_client_mod])
    def train(msg: Message, context: Context) -> Message:
        if is_secagg_fit(msg):  # the masked-update stage of SecAgg+ (legacy FitIns content)
            return secagg_fit(msg, context, train_core)
        try:
            sent, values, name = train_core(msg.content[keys.CONFIG], msg.content[keys.ARRAYS], context)  # type: ignore[arg-type]
        except _Refused as refused:
            return _refusal_error(msg, refused.refusals)
        content = RecordDict(
            {
                keys.ARRAYS: sent,
                keys.METRICS: MetricRecord(values),
                keys.SITE: _site_record(name),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        try:
            scenario, _, params, split, _, _ = site_for(msg, context)
        except _Refused as refused:
            return _refusal_error(msg, refused.refusals)
        task = scenario.make_task(params)
        model = model_from(task, split, msg.content[keys.ARRAYS])  # type: ignore[arg-type]
        threshold = None
        if split.val is not None and len(split.val):
            threshold = task.choose_threshold(split.val.y, task.predict(model, split.val.x))
        scores = task.score(split.test.y, task.predict(model, split.test.x), threshold)
        values: dict[str, Any] = {keys.NUM_EXAMPLES: len(split.test), keys.UNIT_WEIGHT: 1.0}
        for name, value in scores.items():
            if name in ("n", "n_positive"):  # counts, not metrics: averaging them means nothing
                continue
            values["eval-loss" if name == "loss" else name] = float("nan") if value is None else float(value)
        content = RecordDict({keys.METRICS: MetricRecord(values), keys.SITE: _site_record(split.name)})
        return Message(content=content, reply_to=msg)

    return app


def _training_records(task: Any, split: SiteSplit) -> int:
    """Records the task trains on (anomaly detection trains on the normal ones only): DP-SGD's ``n``."""
    count = getattr(task, "training_records", None)
    return int(count(split.train)) if count is not None else len(split.train)


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
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    audit: Any = None  # flcore.governance.audit.AuditTrail, or None
    #: Where the checkpoint is written after every completed round (None: no checkpoint).
    checkpoint: Path | None = None
    #: The checkpoint this run resumes from (its run id, model, strategy state and history).
    resume: Checkpoint | None = None
    #: Kept in the checkpoint for whoever resumes (e.g. the data folder the run read).
    meta: dict[str, Any] = field(default_factory=dict)
    #: Simulation with ``attack`` set: the attacking sites (drawn once the sites have named themselves).
    attackers: list[str] = field(default_factory=list)


@dataclass
class FederationOutcome:
    """What the ServerApp hands back: the final model and the per-round records."""

    #: The final global model, as the task's :meth:`~flcore.learning.task.Task.load_model_arrays` reads it.
    arrays: ArrayRecord | None = None
    monitor: FederationMonitor | None = None
    feature_stats: FeatureStats | None = None
    sites: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    privacy: dict[str, Any] = field(default_factory=dict)
    #: The sites that attacked, in an attack simulation.
    attackers: list[str] = field(default_factory=list)


def _common_config(plan: FederationPlan, **extra: Any) -> ConfigRecord:
    resumed = {keys.RESUMED_AFTER: plan.resume.round} if plan.resume is not None else {}
    return ConfigRecord(
        {
            keys.SCENARIO: plan.scenario,
            RUN_JSON: to_json(plan.cfg),
            keys.PARAMS_JSON: json.dumps(to_dict(plan.params), sort_keys=True),
            keys.RUN_ID: plan.run_id,
            **resumed,
            **extra,
        }
    )


def _wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
    # Flower samples from the nodes connected at that moment: wait for all of them.
    ids = wait_for_sites(grid, n, timeout_s)
    if len(ids) < n:
        raise FlsuiteError(
            f"Only {len(ids)} of {n} sites connected within {timeout_s:.0f} s. "
            "Check that every site's SuperNode is running and can reach the SuperLink."
        )
    return ids


def collect_feature_stats(
    grid: Grid, node_ids: list[int], config: ConfigRecord, timeout: float
) -> tuple[FeatureStats, dict[int, str], dict[str, int]]:
    """Ask every site for its feature sums and combine them (no row leaves a site).

    Returns the pooled statistics, each node's site name, and each site's number of
    training examples.
    """
    content = RecordDict({keys.CONFIG: config})
    messages = [
        Message(content=content, message_type=f"{keys.QUERY_KIND}.{keys.QUERY_FEATURE_STATS}", dst_node_id=n)
        for n in node_ids
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    refusals = [r for reply in replies for r in refusals_in(reply)]
    if refusals:
        raise refusal_error(refusals)
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
    counts = {names[n]: p.count for n, p in zip(names, parts, strict=True)}
    return FeatureStats.combine(parts), names, counts


def run_federation(grid: Grid, plan: FederationPlan, context: Context | None = None) -> FederationOutcome:
    """The ServerApp's work: statistics round (each site's gate runs first), the strategy's rounds, run end.

    A site that refuses the run answers with its refusals; they are written to the
    audit trail and stop the run before round 1 (:class:`GovernanceError`).
    """
    t0 = time.perf_counter()
    cfg = plan.cfg
    random.seed(cfg.seed)  # Flower's node sampling uses the `random` module
    scenario = scenario_registry.get(plan.scenario)
    monitor = FederationMonitor(on_round=_audited(plan.on_round, plan.audit))
    mgrid = MonitoredGrid(grid, monitor)
    node_ids = sorted(_wait_for_nodes(grid, plan.num_sites, plan.connect_timeout_s))
    common = _common_config(plan)
    # Settings the federation cannot run fail before any site reserves budget for the run.
    check_federation(cfg, plan.num_sites)
    try:
        stats, names, site_counts = collect_feature_stats(mgrid, node_ids, common, timeout=plan.connect_timeout_s)
    except GovernanceError as err:
        if plan.audit is not None:
            for r in err.refusals:
                plan.audit.append("refusal", run=plan.run_id, by="site", **r.to_json())
        _end_run(mgrid, node_ids, plan, monitor)  # sites that admitted the run settle it at what it spent: 0
        raise refusal_error(err.refusals, scenario.site_noun) from None
    mgrid.name_nodes(names)
    sites = sorted(names.values())
    if cfg.attack != "none":
        plan.attackers = choose_attackers(sites, cfg.attack_sites, cfg.seed)
        if plan.audit is not None:
            plan.audit.append("attack-simulation", run=plan.run_id, attack=cfg.attack, sites=plan.attackers)
    if plan.audit is not None:
        plan.audit.append("gate", run=plan.run_id, by="sites", decision="pass", sites=sites)

    task = scenario.make_task(plan.params)
    model = task.init_model(stats, cfg.seed)
    initial = task.model_arrays(model)
    if cfg.secure_aggregation == "secagg+":
        if plan.resume is not None:
            raise CheckpointError(
                "A secure-aggregation=secagg+ run cannot be resumed: Flower's SecAgg+ workflow always starts at "
                "round 1 and is not checkpointed. Start a new run."
            )
        shared = dict(_common_config(plan).items())
        final = run_secagg_rounds(mgrid, context, cfg, initial, shared, monitor, max(site_counts.values()))
    else:
        final = _run_strategy(mgrid, plan, monitor, initial, sites, t0)
    privacy = _end_run(mgrid, node_ids, plan, monitor)
    return FederationOutcome(
        arrays=final,
        monitor=monitor,
        feature_stats=stats,
        sites=sites,
        wall_time_s=time.perf_counter() - t0 + (plan.resume.wall_time_s if plan.resume is not None else 0.0),
        privacy=privacy,
        attackers=list(plan.attackers),
    )


def _run_strategy(
    grid: MonitoredGrid,
    plan: FederationPlan,
    monitor: FederationMonitor,
    initial: ArrayRecord,
    sites: list[str],
    t0: float,
) -> ArrayRecord:
    """The strategy's rounds (from the checkpoint's next round when resuming), checkpointed after each."""
    cfg = plan.cfg
    strategy = build_strategy(
        cfg,
        plan.num_sites,
        on_reject=monitor.record_rejection,
        train_metrics_aggr_fn=monitor.aggregate_train,
        evaluate_metrics_aggr_fn=monitor.aggregate_evaluate,
    )
    inner: Any = strategy
    while inner is not None and not hasattr(inner, "spent_epsilon"):  # the DP wrapper, under any other
        inner = getattr(inner, "strategy", None)
    monitor.client_privacy = inner
    first, arrays = 1, initial
    resume = plan.resume
    if resume is not None:
        check_resumable(resume, plan)
        restore_strategy(strategy, resume.strategy_state)
        monitor.restore(resume.monitor)
        first, arrays = resume.round + 1, resume.array_record
        if plan.audit is not None:
            plan.audit.append(
                "resume", run=plan.run_id, after_round=resume.round, model=arrays_digest(arrays), sites=sites
            )
    earlier = resume.wall_time_s if resume is not None else 0.0

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        monitor.end_round(server_round, arrays)
        if plan.checkpoint is None:
            return
        digest = write_checkpoint(
            plan.checkpoint,
            Checkpoint(
                run_id=plan.run_id,
                scenario=plan.scenario,
                config=to_dict(cfg),
                params=to_dict(plan.params),
                round=server_round,
                arrays={k: a.numpy() for k, a in arrays.items()},  # type: ignore[union-attr]
                strategy_state=capture_strategy(strategy),
                monitor=monitor.state(),
                sites=sites,
                wall_time_s=earlier + time.perf_counter() - t0,
                extra=plan.meta,
            ),
        )
        if plan.audit is not None:
            plan.audit.append("checkpoint", run=plan.run_id, round=server_round, file=digest)

    def names(ids: Any) -> list[str]:
        return [grid.site_name(n) for n in ids]

    quorum = min_sites_per_round(cfg, plan.num_sites)
    if cfg.privacy == "client-dp":
        # Flower's client-level DP wrapper is calibrated for a fixed number of sites per round.
        quorum = max(quorum, int(plan.num_sites * cfg.fraction_train))

    try:
        return run_rounds(
            strategy,
            grid,
            arrays,
            first_round=first,
            num_rounds=cfg.num_server_rounds,
            timeout=cfg.reply_timeout,
            min_sites=quorum,
            min_evaluate=min(quorum, min_evaluate_per_round(cfg, plan.num_sites)),
            seed=cfg.seed,
            train_config=_common_config(plan, **({ATTACKERS: ",".join(plan.attackers)} if plan.attackers else {})),
            evaluate_config=_common_config(plan),
            after_round=after_round,
            site_names=names,
        )
    except QuorumError as err:
        if plan.audit is not None:
            plan.audit.append(
                "quorum-lost",
                run=plan.run_id,
                round=err.server_round,
                answered=err.answered,
                needed=err.needed,
                missing=err.missing,
                rejected=err.rejected,
            )
        done = err.server_round - 1
        hint = (
            f" Rounds 1-{done} are checkpointed in {plan.checkpoint}; once the sites are back, resume with --resume."
            if plan.checkpoint is not None and done >= 1
            else ""
        )
        raise QuorumError(
            err.server_round, err.answered, err.needed, err.missing, str(err) + hint, rejected=err.rejected
        ) from None


def check_resumable(resume: Checkpoint, plan: FederationPlan) -> None:
    """Refuse a checkpoint that does not belong to this plan, or a run this version cannot resume."""
    now = {k: v for k, v in to_dict(plan.cfg).items() if k not in RESUME_EXEMPT}
    then = {k: v for k, v in resume.config.items() if k not in RESUME_EXEMPT}
    if resume.scenario != plan.scenario or then != now or resume.params != to_dict(plan.params):
        changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
        raise CheckpointError(
            f"The checkpoint of run {resume.run_id} was written for {resume.scenario} with other settings "
            f"({', '.join(changed) or 'domain parameters'} differ). Resume with the checkpoint's own settings."
        )
    if plan.cfg.privacy == "client-dp":
        raise CheckpointError(
            "A privacy=client-dp run cannot be resumed: the coordinator's privacy accountant is not checkpointed. "
            "Start a new run (the sites' ledgers keep this run's reservation)."
        )


def _end_run(grid: Grid, node_ids: list[int], plan: FederationPlan, monitor: FederationMonitor) -> dict[str, Any]:
    """Tell every site the run is over, so each settles its privacy ledger; collect what each spent.

    Without privacy there is nothing to settle and no message is sent (in a fleet of
    thousands of devices, that query round costs seconds).
    """
    cfg = plan.cfg
    if cfg.privacy == "none":
        return {"mode": "none"}
    extra: dict[str, Any] = {}
    client = monitor.client_privacy
    if cfg.privacy == "client-dp" and client is not None:
        extra[keys.DP_EPSILON] = client.spent_epsilon()
    content = RecordDict({keys.CONFIG: _common_config(plan, **extra)})
    connected = set(grid.get_node_ids())  # a site that dropped out is not waited for
    messages = [
        Message(content=content, message_type=f"{keys.QUERY_KIND}.{keys.QUERY_RUN_END}", dst_node_id=n)
        for n in node_ids
        if n in connected
    ]
    per_site: dict[str, float | None] = {}
    noise: dict[str, float] = {}
    for reply in grid.send_and_receive(messages, timeout=min(cfg.reply_timeout, plan.connect_timeout_s)):
        if reply.has_error() or keys.METRICS not in reply.content.metric_records:
            continue
        site = str(reply.content[keys.SITE][keys.SITE_NAME])  # type: ignore[index]
        per_site[site] = float(reply.content[keys.METRICS][keys.DP_EPSILON])  # type: ignore[index,arg-type]
        noise[site] = float(reply.content[keys.METRICS].get(DP_NOISE, 0.0))  # type: ignore[union-attr,arg-type]
    from flcore.learning.privacy import CLIENT_ACCOUNTANT, SAMPLE_ACCOUNTANT

    out: dict[str, Any] = {
        "mode": cfg.privacy,
        "unit": "record" if cfg.privacy == "dp" else "site",
        "target_epsilon": cfg.dp_epsilon,
        "delta": cfg.dp_delta,
        "per_site_epsilon": dict(sorted(per_site.items())),
        "epsilon": max((v for v in per_site.values() if v is not None), default=None),
        "accountant": SAMPLE_ACCOUNTANT if cfg.privacy == "dp" else CLIENT_ACCOUNTANT,
        "per_round_epsilon": [r.epsilon for r in monitor.rounds],
    }
    if cfg.privacy == "dp":
        out["max_grad_norm"] = cfg.dp_max_grad_norm
        out["per_site_noise_multiplier"] = dict(sorted(noise.items()))
    elif client is not None:
        out.update(client.to_json())
        out["epsilon"] = client.spent_epsilon()
    if plan.audit is not None:
        plan.audit.append("privacy", run=plan.run_id, **out)
    return out


def _audited(on_round: Callable[[RoundRecord], None] | None, audit: Any) -> Callable[[RoundRecord], None] | None:
    """Progress callback that also writes each finished round to the audit trail."""
    if audit is None:
        return on_round

    def record(rec: RoundRecord) -> None:
        audit.append(
            "round",
            round=rec.round,
            sites=sorted(rec.per_site_train),
            samples={s: int(m.get(keys.NUM_EXAMPLES, 0)) for s, m in sorted(rec.per_site_train.items())},
            update_norms={s: m.get(keys.UPDATE_NORM) for s, m in sorted(rec.per_site_train.items())},
            epsilon=rec.epsilon,
            aggregate=rec.aggregate_hash,
            sampled=rec.sampled,
            failed=rec.failures,
            dropped=rec.dropouts,
            missing=rec.missing,
            rejected=rec.rejected,
        )
        if on_round is not None:
            on_round(rec)

    return record


def make_server_app(plan: FederationPlan, outcome: FederationOutcome) -> ServerApp:
    """ServerApp for in-process simulation; fills ``outcome`` when done."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        done = run_federation(grid, plan, context)
        outcome.__dict__.update(done.__dict__)

    return app


# --------------------------------------------------------------------------------------
# Module-level apps for `flwr run .` and deployed SuperNodes
# --------------------------------------------------------------------------------------

client_app = make_client_app()


def plan_from_run_config(run_config: dict[str, Any]) -> tuple[FederationPlan, Path]:
    """Read ``[tool.flwr.app.config]`` once into a typed plan and an output folder.

    ``policy-file`` names the federation's policy over the domain's defaults (it
    sets the privacy budget a run plans for); each site applies its own as well.
    """
    from flcore.governance.policy import load_policy

    scenario = scenario_registry.get(str(run_config.get("scenario", "finance-five-banks")))
    values = {k: v for k, v in run_config.items() if k in settings_of(RunConfig) or k in settings_of(scenario.params)}
    cfg, params = scenario.configure(values)
    policy_file = str(run_config.get("policy-file", ""))
    policy = load_policy(policy_file, scenario.policy) if policy_file else scenario.policy
    cfg = resolve_privacy(cfg, policy)
    refuse_attack_outside_simulation(cfg)
    num_sites = int(run_config.get("num-sites-expected", 0)) or len(
        list_site_dirs(_data_root(scenario, str(run_config.get("data-dir", "")), cfg.seed), scenario.adapter)
    )
    out = Path(str(run_config.get("out-dir", "runs/flwr-run")))
    return FederationPlan(scenario.name, cfg, params, num_sites), out
