"""The suite's Flower ClientApp: a site's gate, then statistics, training, evaluation and run end on its data."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from flcore import keys
from flcore.config import RunConfig
from flcore.data.preprocess import is_raw
from flcore.data.site import FeatureStats, SiteSplit
from flcore.exceptions import ConfigError
from flcore.federation.collective import COLLECTIVE, worker_args
from flcore.federation.mods.attack import attack_mod
from flcore.federation.mods.compression import compression_mod
from flcore.federation.mods.dropout import dropout_mod
from flcore.federation.mods.secagg import is_secagg_fit, secagg_client_mod, secagg_fit
from flcore.federation.plan import Refused, decode, refusal_error_reply, refusal_reply, site_record
from flcore.federation.preprocessing import summary_reply
from flcore.federation.sitedata import SiteGovernanceFn, SiteLoader, folder_governance, folder_site_loader
from flcore.federation.strategies.averaging import array_view
from flcore.governance.rules import Refusal
from flcore.governance.siteguard import SiteGovernance, admit, ledger_of, plan_changed, run_facts, site_dp
from flcore.learning.privacy import DpSgd, steps_per_epoch
from flcore.learning.xgbsession import SessionFailed

# --------------------------------------------------------------------------------------
# The site's gate: every message of a run passes it first
# --------------------------------------------------------------------------------------

_ADMITTED: set[tuple[str, str]] = set()  # (run id, site) already through the site's gate in this process
_DP_STATE = "flsuite-dp"
_PLAN_STATE = "flsuite-plan"


class SiteRun(NamedTuple):
    """A message's run as this site serves it: the settings it carries, the site's data and policy."""

    scenario: Any
    cfg: RunConfig
    params: Any
    split: SiteSplit
    gov: SiteGovernance
    run_id: str


@dataclass(frozen=True)
class _SiteAccess:
    """How this ClientApp reaches its site: the data loader, the governance and the torch threads."""

    load_site: SiteLoader | None = None
    governance: SiteGovernanceFn | None = None
    torch_threads: int | None = None

    def open(self, config: ConfigRecord, context: Context, *, raw: bool = False) -> SiteRun:
        """Decode the message's run, load the site, and pass the site's gate (:class:`Refused` if not).

        With ``raw``, a table still waiting for the federation's preprocessing is given as it is (to summarise it).
        """
        import torch

        # Setting the thread count again costs ~2 ms a message.
        if self.torch_threads and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        scenario, cfg, params = decode(config)
        split = (
            self.load_site(context, cfg)
            if self.load_site
            else folder_site_loader(context, config, (scenario, cfg, params))
        )
        if is_raw(split.train) and not raw:
            raise ConfigError(
                f"{split.name}: the coordinator sent no preprocessing for this table (an older flsuite?)."
            )
        gov = (self.governance or folder_governance)(context, cfg, scenario, split)
        run_id = str(config.get(keys.RUN_ID, "unspecified"))
        run = run_facts(scenario, cfg, params)
        if (run_id, split.name) not in _ADMITTED:
            refusals = admit(gov, run, run_id, scenario.site_noun)
            if refusals:
                raise Refused(refusals)
            _ADMITTED.add((run_id, split.name))
        _pin_plan(context, run_id, run.plan_hash, split.name, gov)
        return SiteRun(scenario, cfg, params, split, gov, run_id)


def _pin_plan(context: Context, run_id: str, plan: str, site: str, gov: SiteGovernance) -> None:
    """The first plan a site serves in a run is the run's plan: a later message may not change it.

    (The noise a site calibrated, and the epsilon it reserved, hold only for that plan.)
    """
    record = context.state.config_records.get(_PLAN_STATE) or ConfigRecord()
    pinned = str(record.get(run_id, plan))
    if pinned != plan:
        raise Refused([plan_changed(gov, run_id, pinned, plan)])
    record[run_id] = plan
    context.state[_PLAN_STATE] = record


def _dp_steps(context: Context, run: SiteRun, config: ConfigRecord, n: int) -> int:
    """DP-SGD steps this site has taken in the run.

    The count lives in the node's run state and, for a site with a privacy
    ledger, in the ledger (written before each reply), so it survives a restarted
    SuperNode and a resumed coordinator (a new Flower run, with fresh state). A
    resumed run also carries the last completed round: the site then charges
    itself for every round before it, whether it trained in them or not.
    """
    state = context.state.config_records.get(_DP_STATE)
    steps = int(state.get(run.run_id, 0)) if state is not None else 0  # type: ignore[arg-type]
    ledger = ledger_of(run.gov)
    if ledger is not None:
        steps = max(steps, ledger.steps(run.run_id))
    resumed = int(config.get(keys.RESUMED_AFTER, 0))  # type: ignore[arg-type]
    if resumed > 0:
        per_round = run.cfg.local_epochs * steps_per_epoch(site_dp(run.cfg, n, 0).sample_rate)
        steps = max(steps, resumed * per_round)
    return steps


# --------------------------------------------------------------------------------------
# What the site answers
# --------------------------------------------------------------------------------------


def _feature_stats(site: _SiteAccess, msg: Message, context: Context) -> Message:
    """Answer the statistics query: the site's feature sums and counts (never rows)."""
    try:
        split = site.open(msg.content[keys.CONFIG], context).split  # type: ignore[arg-type]
    except Refused as refused:
        return refusal_reply(msg, refused.refusals)
    stats = FeatureStats.of(split.train.x, split.train.y)
    arrays = ArrayRecord({keys.STAT_SUM: Array(stats.total), keys.STAT_SUMSQ: Array(stats.total_sq)})
    metrics = MetricRecord({keys.NUM_EXAMPLES: stats.count, keys.NUM_POSITIVE: stats.positives})
    record = site_record(split.name)  # with what the model's input is (for the exported model's manifest)
    names = list(split.train.info.get("feature_names", []) or [])  # type: ignore[call-overload]
    schema = split.train.info.get("schema")  # a table's schema (or the one its contract amounts to)
    record[keys.INPUT_JSON] = json.dumps(
        {"shape": list(split.train.x.shape[1:]), "feature_names": names, "schema": schema}
    )
    content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics, keys.SITE: record})
    return Message(content=content, reply_to=msg)


def _table_summary(site: _SiteAccess, msg: Message, context: Context) -> Message:
    """Answer the summary query: the training rows' counts, sums and category sets (never rows)."""
    try:
        return summary_reply(site.open(msg.content[keys.CONFIG], context, raw=True).split, msg)  # type: ignore[arg-type]
    except Refused as refused:
        return refusal_reply(msg, refused.refusals)


def _run_end(site: _SiteAccess, msg: Message, context: Context) -> Message:
    """Settle the run in the site's ledger at the epsilon it really spent."""
    try:
        run = site.open(msg.content[keys.CONFIG], context)  # type: ignore[arg-type]
    except Refused as refused:
        return refusal_reply(msg, refused.refusals)
    cfg = run.cfg
    conf: ConfigRecord = msg.content.config_records[keys.CONFIG]
    spent, noise, steps = 0.0, 0.0, None
    if cfg.privacy == "dp":
        n = _training_records(run.scenario.make_task(run.params), run.split)
        dp = site_dp(cfg, n, _dp_steps(context, run, conf, n))
        spent, noise, steps = dp.epsilon(), dp.noise_multiplier, dp.steps
    elif cfg.privacy == "client-dp":
        # Central DP: the noise is the coordinator's, which the site cannot check; it stays charged in full.
        spent = max(cfg.dp_epsilon, float(conf.get(keys.DP_EPSILON, 0.0)))  # type: ignore[union-attr,arg-type]
    ledger = ledger_of(run.gov)
    if ledger is not None and cfg.privacy != "none":
        ledger.record(run.run_id, spent, final=True, steps=steps)
    metrics = MetricRecord({keys.DP_EPSILON: spent, keys.DP_NOISE: noise})
    return Message(content=RecordDict({keys.METRICS: metrics, keys.SITE: site_record(run.split.name)}), reply_to=msg)


def _round_dp(context: Context, run: SiteRun, config: ConfigRecord, server_round: int, n: int) -> DpSgd:
    """DP-SGD for this round at the site's own noise; refused if it would take the run past its planned steps."""
    cfg = run.cfg
    dp = site_dp(cfg, n, _dp_steps(context, run, config, n))
    if dp.steps + cfg.local_epochs * steps_per_epoch(dp.sample_rate) > dp.planned_steps:
        reason = (
            f"round {server_round} would take DP-SGD past the {dp.planned_steps} steps the plan "
            f"allows ({cfg.num_server_rounds} rounds), and so past epsilon {cfg.dp_epsilon:g}."
        )
        fix = "The coordinator asked for more rounds than planned; start a new run."
        raise Refused([Refusal("max-epsilon-per-run", run.split.name, run.gov.policy.source, reason, fix)])
    return dp


def _charge_dp(context: Context, run: SiteRun, dp: DpSgd, values: dict[str, Any]) -> None:
    """Keep the steps taken in the node's state and ledger, and report the epsilon spent so far."""
    record = context.state.config_records.get(_DP_STATE) or ConfigRecord()
    record[run.run_id] = dp.steps
    context.state[_DP_STATE] = record
    values[keys.DP_EPSILON] = dp.epsilon()
    ledger = ledger_of(run.gov)
    if ledger is not None:
        ledger.record(run.run_id, values[keys.DP_EPSILON], steps=dp.steps)


def _train_core(
    site: _SiteAccess, config: ConfigRecord, arrays: ArrayRecord, context: Context
) -> tuple[ArrayRecord, dict[str, Any], str]:
    """Train one round at this site: what it sends back, the reply's metrics, the site's name."""
    run = site.open(config, context)
    cfg, split = run.cfg, run.split
    server_round = int(config[keys.SERVER_ROUND])  # type: ignore[arg-type]
    task = run.scenario.make_task(run.params)
    model = _model_from(task, split, arrays)
    mu = float(config.get(keys.PROXIMAL_MU, 0.0))  # type: ignore[arg-type]
    n = _training_records(task, split)
    dp = _round_dp(context, run, config, server_round, n) if cfg.privacy == "dp" else None
    if COLLECTIVE in config:  # fedxgb-hist: grow the round's trees together with the other sites
        communicator = worker_args(json.loads(str(config[COLLECTIVE])), split.name, context.node_config)
        out = task.fit_together(model, split.train, cfg, communicator, seed=cfg.seed)
    else:
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
        _charge_dp(context, run, dp, values)
    return sent, values, split.name


def _train(site: _SiteAccess, msg: Message, context: Context) -> Message:
    """Answer a train message: the site's update and its metrics (or, under SecAgg+, its masked update)."""
    if is_secagg_fit(msg):  # the masked-update stage of SecAgg+ (legacy FitIns content)
        return secagg_fit(msg, context, partial(_train_core, site))
    try:
        sent, values, name = _train_core(site, msg.content[keys.CONFIG], msg.content[keys.ARRAYS], context)  # type: ignore[arg-type]
    except Refused as refused:
        return refusal_error_reply(msg, refused.refusals)
    except SessionFailed as failed:  # fedxgb-hist: the coordinator retries the round; the reason reaches its log
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(failed)), reply_to=msg)
    content = RecordDict({keys.ARRAYS: sent, keys.METRICS: MetricRecord(values), keys.SITE: site_record(name)})
    return Message(content=content, reply_to=msg)


def _evaluate(site: _SiteAccess, msg: Message, context: Context) -> Message:
    """Answer an evaluate message: the global model's scores on the site's test data."""
    try:
        run = site.open(msg.content[keys.CONFIG], context)  # type: ignore[arg-type]
    except Refused as refused:
        return refusal_error_reply(msg, refused.refusals)
    split = run.split
    task = run.scenario.make_task(run.params)
    model = _model_from(task, split, msg.content[keys.ARRAYS])  # type: ignore[arg-type]
    threshold = None
    if split.val is not None and len(split.val):
        threshold = task.choose_threshold(split.val.y, task.predict(model, split.val.x))
    scores = task.score(split.test.y, task.predict(model, split.test.x), threshold)
    values: dict[str, Any] = {keys.NUM_EXAMPLES: len(split.test), keys.UNIT_WEIGHT: 1.0}
    for name, value in scores.items():
        if name in ("n", "n_positive"):  # counts, not metrics: averaging them means nothing
            continue
        values["eval-loss" if name == "loss" else name] = float("nan") if value is None else float(value)
    content = RecordDict({keys.METRICS: MetricRecord(values), keys.SITE: site_record(split.name)})
    return Message(content=content, reply_to=msg)


def _model_from(task: Any, split: SiteSplit, arrays: ArrayRecord) -> Any:
    model = task.init_model(FeatureStats.of(split.train.x[:1]), 0)
    task.load_model_arrays(model, arrays)
    return model


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


def _training_records(task: Any, split: SiteSplit) -> int:
    """Records the task trains on (anomaly detection trains on the normal ones only): DP-SGD's ``n``."""
    count = getattr(task, "training_records", None)
    return int(count(split.train)) if count is not None else len(split.train)


def _site_seed(seed: int, server_round: int, site: str) -> int:
    return zlib.crc32(f"{seed}/{server_round}/{site}".encode()) & 0x7FFFFFFF


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
        Add :func:`flcore.federation.mods.dropout.dropout_mod` (simulation only; deployed devices drop
        out by themselves).
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
    site = _SiteAccess(load_site, governance, torch_threads)
    # The dropout draw comes first: an offline device does not even decode its message.
    # The attack acts on the plain update, inside compression (an attacking site's reply is what it trains).
    app = ClientApp(
        mods=[*([dropout_mod] if simulate_dropout else []), compression_mod, *([attack_mod] if simulate_attack else [])]
    )
    app.query(keys.QUERY_TABLE_SUMMARY)(partial(_table_summary, site))
    app.query(keys.QUERY_FEATURE_STATS)(partial(_feature_stats, site))
    app.query(keys.QUERY_RUN_END)(partial(_run_end, site))
    app.train(mods=[secagg_client_mod])(partial(_train, site))
    app.evaluate()(partial(_evaluate, site))
    return app


#: The ClientApp of ``flwr run .`` and deployed SuperNodes (``[tool.flwr.app.components]``).
client_app = make_client_app()
