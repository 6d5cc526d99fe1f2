"""What travels between ServerApp and ClientApp: the federation plan, its encoding in every message, refusals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

from flcore import keys
from flcore import scenario as scenario_registry
from flcore.config import RunConfig, from_json, refuse_attack_outside_simulation, settings_of, to_dict, to_json
from flcore.data.site import FeatureStats, list_site_dirs
from flcore.federation.checkpoint import Checkpoint
from flcore.federation.collective import TlsFiles
from flcore.federation.monitor import FederationMonitor, RoundRecord
from flcore.governance.policy import load_policy
from flcore.governance.rules import Refusal
from flcore.governance.siteguard import resolve_privacy


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
    #: The SuperLink's database holding the sites' key registrations (a deployment with site keys): the
    #: run names each site by its registration (:mod:`flcore.federation.registry`), not by what it says.
    registry: Path | None = None
    #: Kept in the checkpoint for whoever resumes (e.g. the data folder the run read).
    meta: dict[str, Any] = field(default_factory=dict)
    #: Simulation with ``attack`` set: the attacking sites (drawn once the sites have named themselves).
    attackers: list[str] = field(default_factory=list)
    #: Tables read through a schema: the federation's preprocessing as JSON (sent in every message once
    #: fitted), and what each site disclosed for it (:mod:`flcore.federation.preprocessing`).
    preprocessing: str | None = None
    disclosures: list[dict[str, Any]] = field(default_factory=list)
    #: A deployment's ``fedxgb-hist``: the coordinator's certificates for XGBoost's federated server, and its port.
    collective_tls: TlsFiles | None = None
    collective_port: int = 0


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
    #: The model's input as the sites describe it: ``shape`` and ``feature_names`` (for an exported model).
    model_input: dict[str, Any] | None = None
    #: Registered site -> the other name its replies gave it (a deployment with site keys; empty when all agree).
    misnamed: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# The run's settings, in every message
# --------------------------------------------------------------------------------------


def common_config(plan: FederationPlan, **extra: Any) -> ConfigRecord:
    """The config every message of the run carries: scenario, settings, parameters, run id (and ``extra``)."""
    resumed = {keys.RESUMED_AFTER: plan.resume.round} if plan.resume is not None else {}
    prep = {keys.PREPROCESSING: plan.preprocessing} if plan.preprocessing is not None else {}
    return ConfigRecord(
        {
            keys.SCENARIO: plan.scenario,
            keys.RUN_JSON: to_json(plan.cfg),
            keys.PARAMS_JSON: json.dumps(to_dict(plan.params), sort_keys=True),
            keys.RUN_ID: plan.run_id,
            **resumed,
            **prep,
            **extra,
        }
    )


def decode(config: ConfigRecord) -> tuple[scenario_registry.Scenario, RunConfig, Any]:
    """Inverse of :func:`common_config`: the scenario, its run settings and its domain parameters."""
    return _decode_texts(str(config[keys.SCENARIO]), str(config[keys.RUN_JSON]), str(config[keys.PARAMS_JSON]))


@lru_cache(maxsize=16)
def _decode_texts(name: str, run_json: str, params_json: str) -> tuple[scenario_registry.Scenario, RunConfig, Any]:
    # Every message of a run carries the same settings; checking them again costs ms per message in a
    # fleet. The settings objects are frozen dataclasses, so sharing them between messages is safe.
    scenario = scenario_registry.get(name)
    cfg = from_json(RunConfig, run_json)
    params = scenario.params_from_dict(json.loads(params_json))
    return scenario, cfg, params


def site_record(name: str) -> ConfigRecord:
    """The record in every reply that names the site that answered."""
    return ConfigRecord({keys.SITE_NAME: name})


# --------------------------------------------------------------------------------------
# Refusals: a site's governance saying no, on the wire
# --------------------------------------------------------------------------------------


class Refused(Exception):
    """Raised inside the ClientApp when the site refuses a message; its handler answers with the refusals."""

    def __init__(self, refusals: list[Refusal]) -> None:
        super().__init__(refusals[0].text())
        self.refusals = refusals


def refusal_reply(msg: Message, refusals: list[Refusal]) -> Message:
    """A refusal in reply to a query: the refusals as JSON, which :func:`refusals_in` reads."""
    record = ConfigRecord({keys.REFUSAL: json.dumps([r.to_json() for r in refusals])})
    return Message(content=RecordDict({keys.REFUSAL: record}), reply_to=msg)


def refusal_error_reply(msg: Message, refusals: list[Refusal]) -> Message:
    """A refusal in reply to train or evaluate: an error, which strategies count as a failed site."""
    reason = "refused by its governance policy: " + "; ".join(r.text() for r in refusals)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def refusals_in(reply: Message) -> list[Refusal]:
    """The refusals a site sent instead of an answer (empty for a normal reply)."""
    if reply.has_error() or keys.REFUSAL not in reply.content.config_records:
        return []
    raw = reply.content.config_records[keys.REFUSAL][keys.REFUSAL]
    return [Refusal(**r) for r in json.loads(str(raw))]


# --------------------------------------------------------------------------------------
# The plan of a deployed run, from the Flower run config
# --------------------------------------------------------------------------------------


def plan_from_run_config(run_config: dict[str, Any]) -> tuple[FederationPlan, Path]:
    """Read ``[tool.flwr.app.config]`` once into a typed plan and an output folder.

    ``policy-file`` names the federation's policy over the domain's defaults (it
    sets the privacy budget a run plans for); each site applies its own as well.
    """
    scenario = scenario_registry.get(str(run_config.get("scenario", "finance-five-banks")))
    values = {k: v for k, v in run_config.items() if k in settings_of(RunConfig) or k in settings_of(scenario.params)}
    cfg, params = scenario.configure(values)
    data_dir = str(run_config.get("data-dir", ""))
    if data_dir or not run_config.get("num-sites-expected"):  # `flwr run` over local (or synthetic) site folders
        params = scenario.with_table_schema(params, data_root(scenario, data_dir, cfg.seed))
    policy_file = str(run_config.get("policy-file", ""))
    policy = load_policy(policy_file, scenario.policy) if policy_file else scenario.policy
    cfg = resolve_privacy(cfg, policy)
    refuse_attack_outside_simulation(cfg)
    num_sites = int(run_config.get("num-sites-expected", 0)) or len(
        list_site_dirs(data_root(scenario, str(run_config.get("data-dir", "")), cfg.seed), scenario.adapter)
    )
    out = Path(str(run_config.get("out-dir", "runs/flwr-run")))
    return FederationPlan(scenario.name, cfg, params, num_sites), out


def data_root(scenario: scenario_registry.Scenario, data_dir: str, seed: int) -> Path:
    """``data_dir`` if given, else the scenario's synthetic sites (:func:`flcore.scenario.synthetic_data`)."""
    return Path(data_dir) if data_dir else scenario_registry.synthetic_data(scenario, seed)
