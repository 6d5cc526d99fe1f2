"""Secure aggregation with Flower's SecAgg+: the coordinator sees only the weighted sum of the sites' updates.

Flower 1.41 runs SecAgg+ only on its legacy workflow path: the server drives
``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` with a ``LegacyContext``
and a legacy ``FedAvg``; each site's train handler carries ``secaggplus_mod``,
which answers the protocol's key-exchange and unmasking stages itself and hands
the handler only the stage that trains (legacy ``FitIns`` content). Here the
suite's own Message-API ServerApp runs the feature-statistics query first and its
own evaluation after every round; only the training rounds go through SecAgg+.

What is secret-shared is each site's *update* (trained weights minus the global
model), weighted by its example count: updates are small, so SecAgg+'s fixed-point
encoding (values clipped to ``clipping_range`` then quantised) loses little, and
the fixed standardisation buffers, whose update is zero, are not distorted. The
coordinator adds the unmasked weighted mean update to the global model, which is
FedAvg within quantisation error (``tests/test_secagg.py``). Example counts and
training metrics travel in clear, as in Flower.

Paper: Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", CCS 2020.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from flcore import keys
from flcore.config import RunConfig, from_json
from flcore.exceptions import ConfigError

#: ConfigRecord that marks a SecAgg+ protocol message.
SECAGG_RECORD = "secaggplus_configs"
#: Fit-config key carrying the model's state-dict key order (legacy parameters are an unnamed list).
ARRAY_NAMES = "array-names"
#: Each value of a weighted update is clipped to this range before quantisation.
CLIPPING_RANGE = 8.0
#: Quantisation levels over the clipping range (Flower's default).
QUANTIZATION_RANGE = 2**22


def check_secagg(cfg: RunConfig, num_sites: int) -> None:
    """Refuse settings SecAgg+ cannot serve, before any work.

    Raises
    ------
    ConfigError
        For a strategy other than FedAvg, client-level DP, update compression, or
        fewer than three sites per round.
    """
    if cfg.secure_aggregation == "none":
        return
    if cfg.strategy not in ("fedavg", "fedavg-sizeweighted"):
        raise ConfigError(
            f"secure-aggregation=secagg+ needs strategy=fedavg or fedavg-sizeweighted, not {cfg.strategy}: the "
            "coordinator sees only the weighted sum of the updates, which robust rules (median, Krum) and server "
            "optimisers with per-site terms cannot use."
        )
    if cfg.privacy == "client-dp":
        raise ConfigError(
            "secure-aggregation=secagg+ cannot combine with privacy=client-dp: server-side clipping needs each "
            "site's update. Use privacy=dp (DP-SGD at the sites), which composes with secure aggregation."
        )
    if cfg.update_compression != "none":
        raise ConfigError("secure-aggregation=secagg+ quantises updates itself; set update-compression=none.")
    if max(1, int(num_sites * cfg.fraction_train)) < 3:
        raise ConfigError(
            f"secure-aggregation=secagg+ needs at least 3 sites per round; fraction-train={cfg.fraction_train} of "
            f"{num_sites} sites samples fewer. With two sites, each could subtract its own update from the sum."
        )


# --------------------------------------------------------------------------------------
# Site side
# --------------------------------------------------------------------------------------


def secagg_client_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ protocol messages; every other train message passes through."""
    if SECAGG_RECORD in msg.content.config_records:
        from flwr.client.mod import secaggplus_mod

        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def is_secagg_fit(msg: Message) -> bool:
    """Whether a train message is SecAgg+'s training stage (legacy ``FitIns`` content)."""
    return "fitins.parameters" in msg.content.array_records


def secagg_weight(cfg: RunConfig, n: int) -> int:
    """A site's aggregation weight: its example count, or ``n^(1+beta)`` for fedavg-sizeweighted (at least 1)."""
    if cfg.strategy == "fedavg-sizeweighted":
        return max(1, round(n ** (1.0 + cfg.size_weight_beta)))
    return max(1, n)


TrainCore = Callable[[ConfigRecord, ArrayRecord, Context], tuple[Any, dict[str, Any], str]]


def secagg_fit(msg: Message, context: Context, train_core: TrainCore) -> Message:
    """Train as usual, and answer with the update (not the weights) for ``secaggplus_mod`` to mask."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

    fitins = recorddict_to_fitins(msg.content, keep_input=True)
    config = ConfigRecord(dict(fitins.config))  # type: ignore[arg-type]
    names = json.loads(str(config[ARRAY_NAMES]))
    sent = parameters_to_ndarrays(fitins.parameters)
    arrays = ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in zip(names, sent, strict=True)})
    state, values, site = train_core(config, arrays, context)
    update = [
        (state[n].numpy().astype(np.float64) - a.astype(np.float64)).astype(np.float32)  # type: ignore[union-attr]
        for n, a in zip(names, sent, strict=True)
    ]
    metrics = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
    metrics[keys.SITE_NAME] = site  # type: ignore[assignment]
    run = from_json(RunConfig, str(config[keys.RUN_JSON]))
    weight = secagg_weight(run, int(values[keys.NUM_EXAMPLES]))  # SecAgg+ weighs each update by this count
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), weight, metrics)  # type: ignore[arg-type]
    return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


# --------------------------------------------------------------------------------------
# Coordinator side
# --------------------------------------------------------------------------------------


def run_secagg_rounds(
    grid: Any,
    context: Context | None,
    cfg: RunConfig,
    initial: ArrayRecord,
    common: dict[str, Any],
    monitor: Any,
    max_examples: int,
) -> ArrayRecord:
    """Run ``cfg.num_server_rounds`` rounds of FedAvg whose aggregation is SecAgg+; return the final model.

    Parameters
    ----------
    grid : Grid
        The (monitored) grid.
    context : Context, optional
        The ServerApp's context (a fresh one when None).
    initial : ArrayRecord
        The initial global model.
    common : dict
        Config values every site needs (scenario, run config, params, run id).
    monitor : FederationMonitor
        Receives per-site training metrics and evaluation, and closes each round.
    max_examples : int
        Largest training-set size among the sites: SecAgg+'s weights are
        ``weight / max_weight`` (:func:`secagg_weight`), so no weighted value exceeds its update.
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    names = list(initial.keys())
    dtypes = {n: initial[n].numpy().dtype for n in names}  # type: ignore[union-attr]
    current = [initial[n].numpy() for n in names]  # type: ignore[union-attr]
    num_nodes = len(list(grid.get_node_ids()))
    per_round = max(1, int(num_nodes * cfg.fraction_train))

    def fit_config(server_round: int) -> dict[str, Any]:
        return {**common, keys.SERVER_ROUND: server_round, ARRAY_NAMES: json.dumps(names)}

    def fit_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        records = []
        for _, m in results:
            site = str(m.get(keys.SITE_NAME, "?"))
            values: dict[str, Any] = {k: v for k, v in m.items() if k != keys.SITE_NAME and isinstance(v, (int, float))}
            records.append(
                RecordDict({keys.METRICS: MetricRecord(values), keys.SITE: ConfigRecord({keys.SITE_NAME: site})})
            )
        return dict(monitor.aggregate_train(records, keys.NUM_EXAMPLES))

    class UpdateFedAvg(LegacyFedAvg):  # type: ignore[misc]
        """Legacy FedAvg over updates: SecAgg+ hands it the weighted mean update; add it to the model."""

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is None:
                return None, metrics
            mean_update = parameters_to_ndarrays(params)
            new = [
                (np.asarray(c, dtype=np.float64) + u).astype(dtypes[n])
                for n, c, u in zip(names, current, mean_update, strict=True)
            ]
            current[:] = new
            return ndarrays_to_parameters(new), metrics

    strategy = UpdateFedAvg(
        fraction_fit=cfg.fraction_train,
        fraction_evaluate=0.0,
        min_fit_clients=min(per_round, num_nodes),
        min_available_clients=num_nodes,
        initial_parameters=ndarrays_to_parameters(current),
        on_fit_config_fn=fit_config,
        fit_metrics_aggregation_fn=fit_metrics,
        accept_failures=True,
    )

    def evaluate(grid_: Any, ctx: Any) -> None:
        server_round = int(ctx.state.config_records["config"]["current_round"])
        arrays = ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in zip(names, current, strict=True)})
        config = ConfigRecord({**common, keys.SERVER_ROUND: server_round})
        content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config})
        ids = list(grid_.get_node_ids())
        if cfg.fraction_evaluate > 0:
            messages = [Message(content=content, message_type="evaluate", dst_node_id=n) for n in ids]
            replies = [r for r in grid_.send_and_receive(messages) if not r.has_error()]
            records = [r.content for r in replies if keys.METRICS in r.content.metric_records]
            if records:
                monitor.aggregate_evaluate(records, keys.NUM_EXAMPLES)
        monitor.end_round(server_round, arrays)

    if context is None:
        context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.num_server_rounds), strategy=strategy)
    shares = per_round
    threshold = max(2, math.ceil(2 * per_round / 3))
    if threshold >= shares:
        threshold = shares - 1
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=threshold,
            max_weight=float(max(1, secagg_weight(cfg, max_examples))),
            clipping_range=CLIPPING_RANGE,
            quantization_range=QUANTIZATION_RANGE,
        ),
        evaluate_workflow=evaluate,
    )
    workflow(grid, legacy)
    return ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in zip(names, current, strict=True)})
