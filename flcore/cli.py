"""The ``flsuite`` command line: its arguments, and the command each one runs (in :mod:`flcore.commands`)."""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Callable

from flcore.config import ROBUSTNESS_ATTACKS, ROBUSTNESS_STRATEGIES
from flcore.exceptions import FlsuiteUserError


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``name`` of ``flcore.commands.<module>``, imported when it runs so that ``--help`` stays fast."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(f"flcore.commands.{module}"), name)(args))

    return run


def _add_setting_options(p: argparse.ArgumentParser, default_out: str) -> None:
    """The scenario, its settings (``--rounds``, ``--seed``, ``--set``), the output folder and the policy."""
    p.add_argument("scenario")
    p.add_argument("--rounds", type=int, help="federated rounds (num-server-rounds)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting (see `flsuite settings SCENARIO`)")
    p.add_argument("--out", help=f"output folder (default: {default_out})")
    p.add_argument("--policy", help="federation policy (TOML) over the domain's defaults; sites add their own")
    p.add_argument(
        "--schema",
        help="tables: the sites' schema file (label, features, categories, missing values); default DATA/schema.toml",
    )


def _add_engine_option(p: argparse.ArgumentParser) -> None:
    """Which engine runs the federated arm: Flower's simulation engine, or the same apps in this process."""
    p.add_argument(
        "--engine",
        default="simulation",
        help="who runs the federated arm: simulation (Flower's simulation engine, on Ray; default) or inprocess "
        "(the same ServerApp and ClientApp in this process, no Ray: quicker to start for small runs)",
    )


def _add_run_options(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options `run` and `serve` share: the scenario, its settings, outputs, governance, resume."""
    _add_setting_options(p, default_out)
    p.add_argument("--strategy", help="aggregation strategy (see `flsuite strategies`)")
    p.add_argument("--audit", help="audit trail to append to (default: OUT/audit.jsonl)")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start a new run even where OUT holds an unfinished run's checkpoint (and, with --seeds, run finished "
        "seeds again; overwriting their results also needs --force)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite the results of a finished run in OUT (without it, such a folder is refused)",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue an interrupted run from the checkpoint in DIR (its output folder) after its last completed "
        "round, with its own settings; results go to DIR unless --out is given",
    )


def _add_coordinator_options(p: argparse.ArgumentParser) -> None:
    """The options `coordinator start` and `serve` share: certificates, sites, the Fleet address."""
    p.add_argument("--certs", help="folder made by `flsuite certs init` (TLS certificate and site public keys)")
    p.add_argument("--sites", help="register only these sites (comma-separated; default: every key in CERTS/sites)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address the sites connect to (default 127.0.0.1; 0.0.0.0 for all)"
    )
    p.add_argument("--port", type=int, default=9092, help="the Fleet API's port, for the sites (default 9092)")
    p.add_argument(
        "--xgb-port",
        type=int,
        default=9094,
        help="strategy=fedxgb-hist: the port of XGBoost's federated server (mutual TLS; default 9094)",
    )
    p.add_argument("--insecure", action="store_true", help="plain-text transport (trials on one machine only)")


def _add_submit_options(p: argparse.ArgumentParser) -> None:
    """The options `submit` and `serve` share: who must connect, and for how long to wait."""
    p.add_argument("--num-sites", type=int, help="sites that must connect before round 1 (default: registered keys)")
    p.add_argument("--wait", type=float, default=300.0, help="seconds to wait for every site to connect (default 300)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(
        prog="flsuite",
        description="Federated learning for hospitals, banks and industrial fleets, on Flower.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("scenarios", help="list the registered scenarios")
    s.set_defaults(fn=_command("catalog", "cmd_scenarios"))
    s = sub.add_parser("strategies", help="list the aggregation strategies")
    s.set_defaults(fn=_command("catalog", "cmd_strategies"))
    s = sub.add_parser("settings", help="list a scenario's settings with their recommended values")
    s.add_argument("scenario")
    s.set_defaults(fn=_command("catalog", "cmd_settings"))

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    m = dsub.add_parser("make", help="write a scenario's synthetic sites in the real format")
    m.add_argument("scenario")
    m.add_argument("--out", required=True, help="output directory (one sub-folder per site)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--scale", type=float, default=1.0, help="multiply every site's size (e.g. 0.1)")
    m.add_argument(
        "--format", choices=("parquet", "csv", "dicom", "npy"), help="file format (default: the scenario's own)"
    )
    m.add_argument("--devices", type=int, help="iot: number of devices in the fleet (default 200)")
    m.add_argument("--force", action="store_true", help="write into a non-empty directory")
    m.add_argument(
        "--with-identifiers",
        action="store_true",
        help="medical: write made-up patient identifiers into some files, to exercise `flsuite site check`",
    )
    m.set_defaults(fn=_command("data", "cmd_data_make"))

    st = sub.add_parser("site", help="site-side utilities")
    stsub = st.add_subparsers(dest="site_command", required=True)
    c = stsub.add_parser("check", help="validate a site's data and scan it for direct identifiers (exit 2 on findings)")
    c.add_argument("--domain", required=True, help="finance, medical, iot or tabular")
    c.add_argument("--data", required=True, help="a site folder, or a directory with one sub-folder per site")
    c.add_argument("--lenient", action="store_true", help="report unusable files as skipped instead of failing")
    c.add_argument("--schema", help="tables: the schema file to read them with (default: DATA/schema.toml if present)")
    c.set_defaults(fn=_command("data", "cmd_site_check"))
    j = stsub.add_parser(
        "join", help="check this site, then run its Flower SuperNode against the coordinator's SuperLink"
    )
    j.add_argument("--superlink", required=True, metavar="HOST:PORT", help="the coordinator's SuperLink address")
    j.add_argument("--domain", required=True, help="finance, medical, iot or tabular")
    j.add_argument("--data", required=True, help="this site's data folder")
    j.add_argument("--policy", help="this site's governance policy (default: policy.toml in the data folder)")
    j.add_argument("--key", help="this site's private key (sites/<name>.key from `flsuite certs init`)")
    j.add_argument("--ca", help="the pilot CA certificate (ca.crt) that signed the SuperLink's certificate")
    j.add_argument("--port", type=int, help="local port of the SuperNode's own API (default: a free port)")
    j.add_argument("--insecure", action="store_true", help="plain-text transport (trials on one machine only)")
    j.add_argument("--lenient", action="store_true", help="skip unusable files instead of failing the check")
    j.add_argument("--schema", help="tables: the federation's schema file, to check this site as the run reads it")
    j.add_argument(
        "--clientapp",
        choices=("warm", "per-message"),
        help="warm (default): one worker imports the ClientApp once and forks a process per message; "
        "per-message: Flower's own, a new flwr-clientapp process with all its imports for every message",
    )
    j.set_defaults(fn=_command("deploy", "cmd_site_join"))

    ce = sub.add_parser("certs", help="pilot certificates and site keys for a deployment")
    cesub = ce.add_subparsers(dest="certs_command", required=True)
    ci = cesub.add_parser("init", help="create a pilot CA, the SuperLink's TLS certificate and one key pair per site")
    ci.add_argument("--out", required=True, help="new folder for the certificates and keys")
    ci.add_argument("--sites", required=True, help="comma-separated site names, e.g. hospital_a,hospital_b")
    ci.add_argument(
        "--host",
        action="append",
        help="a name or address sites use to reach the SuperLink (repeatable; localhost and 127.0.0.1 always)",
    )
    ci.add_argument("--days", type=int, default=365, help="validity of the certificates (default 365)")
    ci.set_defaults(fn=_command("deploy", "cmd_certs_init"))

    co = sub.add_parser("coordinator", help="the federation's long-lived coordinator service")
    cosub = co.add_subparsers(dest="coordinator_command", required=True)
    cs = cosub.add_parser(
        "start",
        help="run the SuperLink (persistent state, Control API on loopback) and its Fleet gateway until stopped",
    )
    cs.add_argument(
        "--state", required=True, help="the service's folder: Flower's database, logs (kept across restarts)"
    )
    _add_coordinator_options(cs)
    cs.add_argument(
        "--control",
        default="127.0.0.1:9093",
        metavar="HOST:PORT",
        help="where the SuperLink's Control API listens (default 127.0.0.1:9093; keep it off the network)",
    )
    cs.set_defaults(fn=_command("deploy", "cmd_coordinator_start"))

    sb = sub.add_parser("submit", help="submit a run to a running coordinator service and follow it to its end")
    _add_run_options(sb, "runs/SCENARIO-deployed")
    sb.add_argument("--coordinator", required=True, metavar="STATE", help="the coordinator's --state folder")
    _add_submit_options(sb)
    sb.set_defaults(fn=_command("deploy", "cmd_submit"))

    sv = sub.add_parser(
        "serve", help="one run on a coordinator of its own (TLS, site authentication), stopped when the run ends"
    )
    _add_run_options(sv, "runs/SCENARIO-deployed")
    _add_coordinator_options(sv)
    _add_submit_options(sv)
    sv.set_defaults(fn=_command("deploy", "cmd_serve"))

    r = sub.add_parser("run", help="run federated, centralised and local-only arms; write results.json")
    _add_run_options(r, "runs/SCENARIO")
    r.add_argument("--data", help="directory with one sub-folder per site (default: synthetic)")
    r.add_argument("--quiet", action="store_true", help="print only the summary")
    r.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="run every arm under N seeds (SEED, SEED+1, ...; each changes the data split, initial weights and "
        "sampling): each seed in OUT/seed-S, mean and 95%% intervals over seeds in OUT/results.json",
    )
    r.add_argument("--no-report", action="store_true", help="do not write report.md and report.html")
    _add_engine_option(r)
    r.set_defaults(fn=_command("run", "cmd_run"))

    pr = sub.add_parser("predict", help="score new records with a run's model (a table, a site folder, recordings)")
    pr.add_argument("model", help="a model folder (OUT/models/<arm>) or a run folder (its federated model)")
    pr.add_argument("--data", required=True, help="a table file or a folder in the format the model was trained on")
    pr.add_argument("--out", required=True, help="the scores file to write (.csv or .parquet)")
    pr.add_argument("--lenient", action="store_true", help="skip unusable records instead of failing")
    pr.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    pr.set_defaults(fn=_command("model", "cmd_predict"))
    ev = sub.add_parser("evaluate", help="external validation: a run's model on labelled sites that did not train it")
    ev.add_argument("model", help="a model folder (OUT/models/<arm>) or a run folder (its federated model)")
    ev.add_argument("--data", required=True, help="a site folder, or a folder with one sub-folder per site")
    ev.add_argument("--out", help="folder for evaluation.json and evaluation.md (default: runs/evaluation)")
    ev.add_argument("--lenient", action="store_true", help="skip unusable records instead of failing")
    ev.add_argument("--force", action="store_true", help="overwrite an evaluation in --out")
    ev.set_defaults(fn=_command("model", "cmd_evaluate"))

    rp = sub.add_parser("report", help="write report.md and a self-contained report.html from run folders")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `flsuite run` (or results.json)")
    rp.add_argument("--out", help="output folder (default: the run folder; for several, runs/comparison)")
    rp.set_defaults(fn=_command("report", "cmd_report"))

    sw = sub.add_parser("sweep", help="run strategies over the same seeds and rank them where differences exceed noise")
    _add_setting_options(sw, "runs/SCENARIO-sweep")
    sw.add_argument("--strategies", required=True, help="comma-separated strategy names (see `flsuite strategies`)")
    sw.add_argument("--seeds", type=int, default=5, metavar="N", help="seeds per strategy (default 5)")
    sw.add_argument("--data", help="directory with one sub-folder per site (default: synthetic)")
    sw.add_argument(
        "--fresh",
        action="store_true",
        help="run every seed again, even where finished results exist (overwriting them also needs --force)",
    )
    sw.add_argument(
        "--force",
        action="store_true",
        help="overwrite finished results in OUT/STRATEGY that this sweep runs again (other settings, or --fresh)",
    )
    sw.add_argument("--quiet", action="store_true", help="print only the summaries")
    _add_engine_option(sw)
    sw.set_defaults(fn=_command("sweep", "cmd_sweep"))

    rb = sub.add_parser(
        "robustness", help="compare strategies under simulated attacks (federated arm only); write a table"
    )
    _add_setting_options(rb, "runs/SCENARIO-robustness")
    rb.add_argument("--strategies", default=",".join(ROBUSTNESS_STRATEGIES), help="comma-separated strategy names")
    rb.add_argument(
        "--attacks",
        default=",".join(ROBUSTNESS_ATTACKS),
        help="comma-separated attacks (scale, sign-flip, noise, nan, inf); the clean run is always included",
    )
    rb.add_argument("--data", help="directory with one sub-folder per site (default: synthetic)")
    rb.add_argument("--quiet", action="store_true", help="print only the table")
    _add_engine_option(rb)
    rb.set_defaults(fn=_command("sweep", "cmd_robustness"))

    pl = sub.add_parser("plan", help="show a run's training plan and its hash, or approve it in a site policy")
    pl.add_argument("scenario")
    pl.add_argument("--rounds", type=int, help="federated rounds (num-server-rounds)")
    pl.add_argument("--strategy", help="aggregation strategy")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting, as for `flsuite run`")
    pl.add_argument("--policy", help="federation policy (TOML), as for `flsuite run`")
    pl.add_argument("--approve", metavar="POLICY", help="add the plan's hash to this site policy's approved_plans")
    pl.set_defaults(fn=_command("governance", "cmd_plan"))

    po = sub.add_parser("policy", help="governance policies")
    posub = po.add_subparsers(dest="policy_command", required=True)
    ps = posub.add_parser("show", help="print a domain's policy (or a file over it) as TOML, a template for a site")
    ps.add_argument("--domain", required=True, help="finance, medical or iot")
    ps.add_argument("--policy", help="a policy file to apply over the domain's defaults")
    ps.set_defaults(fn=_command("governance", "cmd_policy_show"))

    a = sub.add_parser("audit", help="audit-trail utilities")
    asub = a.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="check an audit trail's hash chain (exit 1 if altered)")
    v.add_argument("file")
    v.add_argument("--head", help="hash of the last entry as recorded elsewhere (results.json), to detect truncation")
    v.set_defaults(fn=_command("governance", "cmd_audit_verify"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flsuite`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except FlsuiteUserError as err:
        text = textwrap.fill(str(err), width=100, break_long_words=False, break_on_hyphens=False)
        print(f"flsuite: error: {text}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("flsuite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
