"""The deployed ServerApp (``flsuite serve``, ``flwr run .``): the federation, checkpoints, results, audit, status.

Flower loads :data:`server_app` by name (``[tool.flwr.app.components]`` of the app
project ``flsuite serve`` submits, or of this repository's pyproject for ``flwr run``).
It runs the federation from the run config, checkpoints every round, writes
``results.json`` and the audit trail into the output folder, and reports its progress
and its end in ``run-status.json`` there, which ``flsuite serve`` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flcore import scenario
from flcore.exceptions import FlsuiteUserError
from flcore.experiment.export import MODELS, export_federated, label_meaning
from flcore.experiment.histcost import collective_record
from flcore.experiment.progress import round_line
from flcore.experiment.results import federated_only_results, preprocessing_record, write_json
from flcore.experiment.scoring import federated_model
from flcore.experiment.status import PROGRESS_FILE, RESULTS_FILE, STATUS_FILE, write_status
from flcore.federation.checkpoint import CHECKPOINT_FILE, read_checkpoint
from flcore.federation.collective import TlsFiles
from flcore.federation.plan import plan_from_run_config
from flcore.federation.serverapp import run_federation
from flcore.governance.audit import AuditTrail
from flcore.governance.siteguard import run_facts

server_app = ServerApp()


@server_app.main()
def _flwr_run_main(grid: Grid, context: Context) -> None:
    serverapp_main(grid, context)


def serverapp_main(grid: Any, context: Any) -> None:
    """The deployed ServerApp (and ``flwr run``): the federation, checkpoints, results, audit, status.

    Run-config keys beyond the settings: ``scenario``, ``out-dir``,
    ``num-sites-expected``, ``wait-for-sites`` (seconds), ``policy-file`` (the
    federation's policy), ``audit-file``, ``resume-from`` (a checkpoint) and ``site-registry``
    (the SuperLink's database: sites are named by their key's registration).
    """
    run_config = dict(context.run_config)
    out = Path(str(run_config.get("out-dir", "runs/flwr-run")))
    out.mkdir(parents=True, exist_ok=True)
    status = out / STATUS_FILE
    try:
        plan, _ = plan_from_run_config(run_config)
        task_metric = _primary_metric(plan)
        progress = out / PROGRESS_FILE

        def say(line: str) -> None:
            with progress.open("a") as fh:
                fh.write(line + "\n")

        plan.on_round = round_line(plan.cfg.num_server_rounds, task_metric, say)
        plan.checkpoint = out / CHECKPOINT_FILE
        plan.connect_timeout_s = float(run_config.get("wait-for-sites", plan.connect_timeout_s))
        if run_config.get("audit-file"):
            plan.audit = AuditTrail(Path(str(run_config["audit-file"])))
        if run_config.get("site-registry"):
            plan.registry = Path(str(run_config["site-registry"]))
        if run_config.get("xgb-server-cert"):  # fedxgb-hist: XGBoost's federated server, with the run's TLS
            plan.collective_tls = TlsFiles(
                Path(str(run_config["xgb-server-cert"])),
                Path(str(run_config["xgb-server-key"])),
                Path(str(run_config["xgb-ca"])),
            )
            plan.collective_port = int(run_config.get("xgb-port", 9094))
        if run_config.get("resume-from"):
            plan.resume = read_checkpoint(Path(str(run_config["resume-from"])))
            plan.run_id = plan.resume.run_id
        write_status(status, "running", run=plan.run_id)
        outcome = run_federation(grid, plan, context)
        results = federated_only_results(plan, outcome)
        results["primary_metric"] = task_metric
        if plan.cfg.strategy == "fedxgb-hist" and outcome.monitor is not None:
            results["collective"] = collective_record(outcome.monitor.rounds, plan.cfg, plan.params, deployed=True)
        results["run_id"] = plan.run_id
        results["privacy"] = outcome.privacy
        results["site_names"] = {
            "source": "coordinator registrations" if plan.registry is not None else "sites' own reports",
            "misnamed": outcome.misnamed,  # registered name -> the other name the site gave itself
        }
        if plan.preprocessing is not None:
            result = json.loads(plan.preprocessing)
            results["governance"] = {"preprocessing": preprocessing_record(plan.disclosures, result)}
        models = _export(out / MODELS, plan, outcome)
        if models:
            results["models"] = models
        if plan.audit is not None:
            last = outcome.monitor.rounds[-1].aggregate_hash if outcome.monitor and outcome.monitor.rounds else None
            if models:
                plan.audit.append("models", run=plan.run_id, digests={"federated": models["federated"]["digest"]})
            plan.audit.append("run-end", run=plan.run_id, model=last)
            seq, head = plan.audit.head()
            results["audit"] = {"path": str(plan.audit.path), "entries": seq, "head": head}
        write_json(out / RESULTS_FILE, results)
        write_status(status, "completed", run=plan.run_id, results=str(out / RESULTS_FILE))
    except FlsuiteUserError as err:
        write_status(status, "failed", error=str(err), exit_code=err.exit_code)
        raise
    except BaseException as err:  # recorded in run-status.json, which `serve` reports, then raised on
        write_status(status, "failed", error=f"{type(err).__name__}: {err}", exit_code=1)
        raise


def _export(out: Path, plan: Any, outcome: Any) -> dict[str, Any]:
    """The federated model, written to ``OUT/models/federated`` (none when the sites did not describe its input)."""
    if outcome.model_input is None or outcome.arrays is None:
        return {}
    sc = scenario.get(plan.scenario)
    task = sc.make_task(plan.params)
    prep = json.loads(plan.preprocessing) if plan.preprocessing is not None else None
    rounds = outcome.monitor.rounds if outcome.monitor is not None else []
    context = {
        "run_id": plan.run_id,
        "plan": run_facts(sc, plan.cfg, plan.params).plan_hash,
        "schema": outcome.model_input.get("schema"),
        "preprocessing": prep,
        "label": label_meaning(outcome.model_input.get("schema"), task),
        "privacy": outcome.privacy,
        "input": outcome.model_input,
        "sites": outcome.sites,
        "metrics": rounds[-1].evaluate if rounds else {},
    }
    model = federated_model(task, outcome, plan.cfg.seed)
    return export_federated(out, sc, plan.cfg, plan.params, task, model, context)


def _primary_metric(plan: Any) -> str:
    return str(scenario.get(plan.scenario).make_task(plan.params).primary_metric)
