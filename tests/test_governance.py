"""Governance: policy files, the gate's rules, refusals before training, training plans, the site's own gate."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.medical.adapters.clinical import ClinicalTableAdapter
from domains.medical.governance import DEFAULT_POLICY
from domains.medical.scenario import CLINICAL
from domains.medical.synthetic import write_clinical
from flcore.cli import main
from flcore.config import to_dict
from flcore.data.site import SITE_POLICY_FILE
from flcore.exceptions import ConfigError, DataValidationError, GovernanceError
from flcore.experiment.gate import gate
from flcore.experiment.prepare import prepare_data
from flcore.governance.audit import AuditTrail
from flcore.governance.ledger import PrivacyLedger
from flcore.governance.plan import approve_plan, plan_hash, training_plan
from flcore.governance.policy import GovernancePolicy, load_policy
from flcore.governance.rules import Finding, RunFacts, check_site
from flcore.governance.siteguard import SiteGovernance, admit, resolve_privacy, run_facts


def quiet(_: str) -> None:
    pass


def clinical_data(root: Path) -> Path:
    """The three medical-clinical hospitals (CSV, every record consented) under ``root``."""
    write_clinical(root, seed=0)
    return root


def run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "medical-clinical",
        "--data",
        str(data),
        "--out",
        str(out),
        "--quiet",
        "--engine",
        "inprocess",
        *extra,
    ]


def audit_entries(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_refused_before_training(
    code: int, err: str, out: Path, rule: str, site: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    """Exit 2, the rule and site on stderr, no results, a refusal in an intact audit trail; returns the refusal."""
    text = " ".join(err.split())  # the CLI wraps its message at 100 columns
    assert code == 2
    assert f"Governance rule '{rule}' refuses hospital '{site}'" in text
    assert "Traceback" not in err
    assert not (out / "results.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl"]
    entries = audit_entries(out / "audit.jsonl")
    gates = [e for e in entries if e["kind"] == "gate"]
    assert len(gates) == 1 and gates[0]["decision"] == "refuse"
    assert gates[0]["sites"][site]["decision"] == "refuse"  # type: ignore[index]
    refusals = [e for e in entries if e["kind"] == "refusal" and e["rule"] == rule and e["site"] == site]
    assert len(refusals) == 1
    refusal = refusals[0]
    assert refusal["problem"] and refusal["fix"] and refusal["policy"]
    assert refusal["run"] == gates[0]["run"]
    assert not [e for e in entries if e["kind"] in ("round", "run-end", "privacy")]
    capsys.readouterr()
    assert main(["audit", "verify", str(out / "audit.jsonl")]) == 0
    assert "chain intact" in capsys.readouterr().out
    return refusal


# --------------------------------------------------------------------------------------
# 1. Policy files
# --------------------------------------------------------------------------------------


def test_load_policy_reads_top_level_and_tables_over_the_domain_defaults(tmp_path: Path) -> None:
    path = tmp_path / "site" / SITE_POLICY_FILE
    path.parent.mkdir()
    path.write_text(
        "# Data office, hospital A\n"
        "min-cohort = 30\n"
        "ledger = 'ledgers/a.json'\n"
        "\n[privacy]\n"
        "max_epsilon_per_run = 0.5\n"
        "max-epsilon-total = 3\n"
        "delta = 1e-6\n"
        "require_dp = true\n"
        "\n[scope]\n"
        "allowed_domains = ['medical']\n"
        "allowed-tasks = ['binary-classification']\n",
        encoding="utf-8",
    )
    policy = load_policy(path, DEFAULT_POLICY)
    assert policy.min_cohort == 30
    assert policy.max_epsilon_per_run == 0.5
    assert policy.max_epsilon_total == 3.0 and isinstance(policy.max_epsilon_total, float)
    assert policy.delta == 1e-6
    assert policy.require_dp is True
    assert policy.allowed_domains == ("medical",)
    assert policy.allowed_tasks == ("binary-classification",)
    assert policy.ledger == str((path.parent / "ledgers" / "a.json").resolve())
    assert policy.source == str(path)
    # Keys the file leaves alone keep the domain's defaults.
    assert policy.require_consent is True and policy.require_deidentified is True and policy.min_positives == 1
    assert GovernancePolicy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_cohrt = 5\n", r"unknown key 'min_cohrt'\. Valid keys: min_cohort, "),
        ("[cohort]\nconsent = true\n", r"unknown key 'consent'"),
        ('min_cohort = "twenty"\n', r"'min_cohort' must be a non-negative integer\. Got 'twenty' instead"),
        ("min_cohort = -3\n", r"'min_cohort' must be a non-negative integer\. Got -3 instead"),
        ("require_dp = 'yes'\n", r"'require_dp' must be true or false\. Got 'yes' instead"),
        ("[privacy]\ndelta = 1.5\n", r"'delta' must be a number in \(0, 1\)\. Got 1\.5 instead"),
        ("delta = 0\n", r"'delta' must be a number in \(0, 1\)\. Got 0 instead"),
        ("max_epsilon_total = true\n", r"'max_epsilon_total' must be a positive number\. Got True instead"),
        ("approved_plans = 'sha256:ab'\n", r"'approved_plans' must be a list of strings"),
        ("min_cohort = \n", r"is not valid TOML"),
        ("[privacy\nrequire_dp = true\n", r"is not valid TOML"),
    ],
)
def test_load_policy_refuses_bad_files_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / SITE_POLICY_FILE
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GovernanceError, match=re.escape(f"Policy file {path}") + r".*" + message):
        load_policy(path, DEFAULT_POLICY)


def test_load_policy_of_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(GovernanceError, match=r"Policy file .*nowhere\.toml does not exist"):
        load_policy(tmp_path / "nowhere.toml")


# --------------------------------------------------------------------------------------
# 2. The gate's rules, one at a time
# --------------------------------------------------------------------------------------

PLAN = "sha256:" + "a" * 64
OTHER_PLAN = "sha256:" + "b" * 64


def facts(**changes: object) -> RunFacts:
    """A DP run of medical-clinical under secure aggregation; ``changes`` override fields."""
    base = RunFacts(
        domain="medical",
        scenario="medical-clinical",
        task="binary-classification",
        plan_hash=PLAN,
        privacy="dp",
        epsilon=0.5,
        delta=1e-5,
        secure_aggregation=True,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


#: A site with enough consented, de-identified records.
GOOD_SITE = {"records": 100, "positives": 10, "consent_recorded": True, "findings": []}

STRICT = GovernancePolicy(
    min_cohort=50,
    min_positives=5,
    require_consent=True,
    max_epsilon_per_run=1.0,
    max_epsilon_total=2.0,
    delta=1e-5,
    require_dp=True,
    require_secure_aggregation=True,
    require_deidentified=True,
    allowed_domains=("medical",),
    allowed_tasks=("medical-clinical",),
    require_approved_plan=True,
    approved_plans=(PLAN,),
    source="strict.toml",
)

FINDINGS = [Finding(f"hospital-a/s{i:02d}.dcm", "(0010,0010) PatientName", "present (8 characters)") for i in range(7)]


@pytest.mark.parametrize(
    ("policy", "run", "site", "rule", "fix"),
    [
        ({"allowed_domains": ("finance",)}, {}, {}, "allowed-domains", "add the domain to allowed_domains"),
        ({"allowed_tasks": ("anomaly-detection",)}, {}, {}, "allowed-tasks", "add it to allowed_tasks"),
        ({"approved_plans": (OTHER_PLAN,)}, {}, {}, "approved-plan", "flsuite plan medical-clinical --approve"),
        ({}, {"secure_aggregation": False}, {}, "secure-aggregation", "--set secure-aggregation=secagg+"),
        ({}, {"privacy": "none", "epsilon": None, "delta": None}, {}, "require-dp", "--set privacy=dp"),
        ({"max_epsilon_per_run": 0.25}, {}, {}, "max-epsilon-per-run", "--set dp-epsilon=0.25"),
        ({"delta": 1e-6}, {}, {}, "delta", "--set dp-delta=1e-06"),
        ({"max_epsilon_total": 1.0}, {}, {"spent_epsilon": 0.75}, "max-epsilon-total", "--set dp-epsilon=0.25"),
        ({"max_epsilon_total": 1.0}, {}, {"spent_epsilon": 1.0}, "max-epsilon-total", "The budget is spent"),
        ({}, {}, {"records": 49}, "min-cohort", "lower min_cohort"),
        ({}, {}, {"positives": 4}, "min-positives", "Add data with positive cases"),
        ({}, {}, {"consent_recorded": None}, "consent", "Add a consent column"),
        ({}, {}, {"consent_recorded": False}, "consent", "Add a consent column"),
        ({}, {}, {"findings": FINDINGS}, "de-identified", "flsuite site check"),
    ],
)
def test_each_rule_refuses_alone_with_a_fix(
    policy: dict[str, object], run: dict[str, object], site: dict[str, object], rule: str, fix: str
) -> None:
    refusals = check_site(
        facts(**run),
        dataclasses.replace(STRICT, **policy),  # type: ignore[arg-type]
        "hospital-a",
        site_noun="hospital",
        **{"spent_epsilon": 0.0, **GOOD_SITE, **site},  # type: ignore[arg-type]
    )
    assert [r.rule for r in refusals] == [rule]
    r = refusals[0]
    assert (r.site, r.policy) == ("hospital-a", "strict.toml")
    assert r.problem and fix in r.fix
    assert r.text("hospital").startswith(
        f"Governance rule '{rule}' refuses hospital 'hospital-a' (policy: strict.toml)"
    )


def test_rule_messages_say_what_was_found() -> None:
    run, site = facts(epsilon=0.5), {**GOOD_SITE, "spent_epsilon": 1.75}
    (total,) = check_site(run, STRICT, "hospital-a", **site)  # type: ignore[arg-type]
    assert "has 0.25 left (1.75 of 2 already spent)" in total.problem
    (cohort,) = check_site(run, STRICT, "hospital-a", **{**GOOD_SITE, "records": 12})  # type: ignore[arg-type]
    assert cohort.problem == "it holds 12 usable records after consent filtering, the policy requires at least 50."
    (deid,) = check_site(run, STRICT, "hospital-a", **{**GOOD_SITE, "findings": FINDINGS})  # type: ignore[arg-type]
    assert deid.problem.startswith("7 direct identifier(s) in 7 file(s): hospital-a/s00.dcm: (0010,0010) PatientName")
    assert deid.problem.endswith("; and 2 more.")
    (plan,) = check_site(facts(plan_hash=OTHER_PLAN), STRICT, "hospital-a", **GOOD_SITE)  # type: ignore[arg-type]
    assert OTHER_PLAN in plan.problem and PLAN[:19] in plan.problem


def test_a_run_meeting_every_rule_passes() -> None:
    assert check_site(facts(), STRICT, "hospital-a", spent_epsilon=1.5, **GOOD_SITE) == []  # type: ignore[arg-type]
    # At the limits exactly: the whole budget left, the per-run cap, the minimum cohort.
    edge = {**GOOD_SITE, "records": 50, "positives": 5}
    assert check_site(facts(epsilon=1.0), STRICT, "hospital-a", spent_epsilon=1.0, **edge) == []  # type: ignore[arg-type]
    # The task may be allowed by its kind as well as by the scenario's name.
    kinds = dataclasses.replace(STRICT, allowed_tasks=("binary-classification",))
    assert check_site(facts(), kinds, "hospital-a", **GOOD_SITE) == []  # type: ignore[arg-type]
    # Facts not known (None) are not checked; the default policy asks for nothing.
    assert check_site(facts(privacy="none", epsilon=None, delta=None), GovernancePolicy(), "x") == []


def test_every_broken_rule_is_reported_in_order() -> None:
    run = facts(domain="finance", plan_hash=OTHER_PLAN, privacy="none", epsilon=None, delta=None)
    bad = {"records": 3, "positives": 0, "consent_recorded": False, "findings": FINDINGS[:1]}
    rules = [r.rule for r in check_site(run, STRICT, "hospital-a", **bad)]  # type: ignore[arg-type]
    assert rules == [
        "allowed-domains",
        "approved-plan",
        "require-dp",
        "min-cohort",
        "min-positives",
        "consent",
        "de-identified",
    ]


def test_epsilon_rules_need_a_dp_run_and_the_total_a_ledger() -> None:
    policy = dataclasses.replace(STRICT, require_dp=False, max_epsilon_per_run=0.1, max_epsilon_total=0.1)
    assert check_site(facts(privacy="none", epsilon=None, delta=None), policy, "h", **GOOD_SITE) == []  # type: ignore[arg-type]
    rules = [r.rule for r in check_site(facts(), policy, "h", spent_epsilon=None, **GOOD_SITE)]  # type: ignore[arg-type]
    assert rules == ["max-epsilon-per-run"]  # no ledger (generated data): the total is not checked


# --------------------------------------------------------------------------------------
# 3. Refusals before training, through the CLI
# --------------------------------------------------------------------------------------


def test_run_over_the_sites_total_budget_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = clinical_data(tmp_path / "data")
    (data / "hospital-a" / SITE_POLICY_FILE).write_text("[privacy]\nmax_epsilon_total = 1.5\n", encoding="utf-8")
    ledger = PrivacyLedger(data / "hospital-a" / ".flsuite" / "privacy-ledger.json", "hospital-a")
    ledger.reserve("past-run", 1.0, 1e-5, OTHER_PLAN, "dp")
    ledger.record("past-run", 1.0, final=True)
    before = ledger.path.read_bytes()
    out = tmp_path / "out"
    code = main(run_args(data, out, "--set", "privacy=dp", "--set", "dp-epsilon=1"))
    err = capsys.readouterr().err
    refusal = assert_refused_before_training(code, err, out, "max-epsilon-total", "hospital-a", capsys)
    assert "0.5 left (1 of 1.5 already spent)" in str(refusal["problem"])
    assert refusal["policy"] == str(data / "hospital-a" / SITE_POLICY_FILE)
    assert ledger.path.read_bytes() == before  # a refused run reserves nothing
    for name in ("hospital-b", "hospital-c"):  # nor at the sites that would have accepted it
        assert not (data / name / ".flsuite" / "privacy-ledger.json").exists()


def test_site_policy_cohort_above_the_records_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = clinical_data(tmp_path / "data")
    (data / "hospital-c" / SITE_POLICY_FILE).write_text("[cohort]\nmin-cohort = 1000\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(run_args(data, out, "--rounds", "1"))
    err = capsys.readouterr().err
    refusal = assert_refused_before_training(code, err, out, "min-cohort", "hospital-c", capsys)
    assert "it holds 99 usable records after consent filtering, the policy requires at least 1000" in str(
        refusal["problem"]
    )


def test_too_few_consented_records_fall_under_the_default_cohort(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = clinical_data(tmp_path / "data")
    path = data / "hospital-c" / "clinical.csv"
    table = pd.read_csv(path)
    keep = np.r_[np.flatnonzero(table["label"] == 1)[:6], np.flatnonzero(table["label"] == 0)[:6]]
    table["consent"] = "no"
    table.loc[keep, "consent"] = "yes"
    table.to_csv(path, index=False)
    out = tmp_path / "out"
    code = main(run_args(data, out, "--rounds", "1"))
    err = capsys.readouterr().err
    refusal = assert_refused_before_training(code, err, out, "min-cohort", "hospital-c", capsys)
    assert "12 usable records after consent filtering" in " ".join(err.split())
    assert "requires at least 20" in str(refusal["problem"])
    assert refusal["policy"] == "defaults"


def test_unapproved_plan_is_refused_and_the_approved_one_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = clinical_data(tmp_path / "data")
    policy = data / "hospital-b" / SITE_POLICY_FILE
    assert main(["plan", "medical-clinical", "--approve", str(policy)]) == 0  # the recommended plan
    assert capsys.readouterr().out.startswith("approved: sha256:")
    approved = load_policy(policy)
    assert approved.require_approved_plan is True and len(approved.approved_plans) == 1

    out = tmp_path / "out"
    code = main(run_args(data, out, "--set", "learning-rate=0.07"))
    err = capsys.readouterr().err
    refusal = assert_refused_before_training(code, err, out, "approved-plan", "hospital-b", capsys)
    assert approved.approved_plans[0] not in str(refusal["problem"])  # a different plan than the one approved
    assert "flsuite plan medical-clinical" in str(refusal["fix"])

    assert main(["plan", "medical-clinical", "--set", "learning-rate=0.07", "--approve", str(policy)]) == 0
    assert len(load_policy(policy).approved_plans) == 2
    cfg, params = CLINICAL.configure({"learning-rate": "0.07"})
    cfg = resolve_privacy(cfg, CLINICAL.policy)
    prepared = prepare_data(CLINICAL, cfg, data, quiet, params)
    record = gate(CLINICAL, cfg, params, prepared.governance, CLINICAL.policy)
    assert record["decision"] == "pass"
    assert record["plan"] == load_policy(policy).approved_plans[1]
    assert record["sites"]["hospital-b"]["policy"] == str(policy)


# --------------------------------------------------------------------------------------
# 4. Training plans
# --------------------------------------------------------------------------------------


def clinical_plan(**values: str) -> str:
    cfg, params = CLINICAL.configure(values)
    return plan_hash(training_plan(CLINICAL, to_dict(cfg), to_dict(params)))


def test_plan_hash_follows_what_is_trained_not_where_or_with_which_seed() -> None:
    base = clinical_plan()
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert clinical_plan() == base
    assert clinical_plan(seed="7") == base
    assert clinical_plan(**{"num-cpus-per-client": "2"}) == base
    assert clinical_plan(**{"learning-rate": "0.07"}) != base
    assert clinical_plan(**{"num-server-rounds": "5"}) != base
    assert clinical_plan(**{"hidden-sizes": "32,16"}) != base
    cfg, params = CLINICAL.configure({})
    assert run_facts(CLINICAL, cfg, params).plan_hash == base
    plan = training_plan(CLINICAL, to_dict(cfg), to_dict(params))
    assert plan["scenario"] == "medical-clinical" and plan["domain"] == "medical"
    assert "seed" not in plan["run_config"] and plan["code"].startswith("sha256:")


def test_approve_plan_is_idempotent_and_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / SITE_POLICY_FILE
    path.write_text(
        "# Data office, hospital A: reviewed 2024-05-02\nmin_cohort = 25\n\n[privacy]\nmax_epsilon_total = 4.0\n",
        encoding="utf-8",
    )
    first, second = clinical_plan(), clinical_plan(**{"learning-rate": "0.07"})
    assert approve_plan(path, first) is True
    text = path.read_text(encoding="utf-8")
    assert approve_plan(path, first) is False
    assert path.read_text(encoding="utf-8") == text
    assert text.startswith("# Data office, hospital A: reviewed 2024-05-02\n")
    policy = load_policy(path)
    assert policy.approved_plans == (first,) and policy.require_approved_plan is True
    assert policy.min_cohort == 25 and policy.max_epsilon_total == 4.0
    assert approve_plan(path, second) is True
    policy = load_policy(path)
    assert policy.approved_plans == (first, second)
    assert policy.min_cohort == 25 and policy.max_epsilon_total == 4.0
    assert path.read_text(encoding="utf-8").count("require_approved_plan") == 1
    assert not list(tmp_path.glob("*.partial"))


def test_approve_plan_creates_a_missing_file_and_respects_an_explicit_switch(tmp_path: Path) -> None:
    new = tmp_path / "new" / SITE_POLICY_FILE
    assert approve_plan(new, PLAN) is True
    assert load_policy(new).approved_plans == (PLAN,) and load_policy(new).require_approved_plan is True
    off = tmp_path / "off.toml"
    off.write_text("require-approved-plan = false\n", encoding="utf-8")
    assert approve_plan(off, PLAN) is True
    assert load_policy(off).require_approved_plan is False  # the file's own choice stands
    assert load_policy(off).approved_plans == (PLAN,)


# --------------------------------------------------------------------------------------
# 5. Records without consent are never loaded
# --------------------------------------------------------------------------------------


def consent_table(n: int = 30, refused: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(n, 3)).round(4), columns=["age_z", "bmi_z", "marker"])
    table.insert(0, "patient_id", [f"p{i:03d}" for i in range(n)])
    table["label"] = (np.arange(n) % 3 == 0).astype(int)
    table["consent"] = "yes"
    rows = np.arange(2, 2 + 5 * refused, 5)[:refused]
    table["marker"] = table["marker"].astype(object)
    table.loc[rows, "consent"] = "no"
    table.loc[rows, "marker"] = "n/a (withdrawn)"
    table.loc[rows, "label"] = 7  # not even a valid label
    return table


def test_records_without_consent_are_dropped_before_their_values_are_read(tmp_path: Path) -> None:
    site = tmp_path / "hospital-a"
    site.mkdir()
    table = consent_table()
    table.to_csv(site / "clinical.csv", index=False)
    data = ClinicalTableAdapter(require_consent=True).read(site)  # strict
    consented = table[table["consent"] == "yes"]
    assert len(data) == 25
    assert data.info["skipped"] == {"no_consent": 5, "invalid": 0}
    assert data.info["records_read"] == 30 and data.info["consent_recorded"] is True
    assert data.info["feature_names"] == ["age_z", "bmi_z", "marker"]
    np.testing.assert_allclose(data.x[:, 2], consented["marker"].astype(float).to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(data.y, consented["label"].to_numpy())


def test_the_same_garbage_in_a_consented_record_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "hospital-a"
    site.mkdir()
    table = consent_table()
    table.loc[2, "consent"] = "yes"
    table.to_csv(site / "clinical.csv", index=False)
    with pytest.raises(DataValidationError, match=r"field 'marker'.*holds text \(e\.g\. a text value in row 3"):
        ClinicalTableAdapter(require_consent=True).read(site)


def test_a_table_without_consent_column_is_refused_when_consent_is_required(tmp_path: Path) -> None:
    site = tmp_path / "hospital-a"
    site.mkdir()
    consent_table(refused=0).drop(columns="consent").to_csv(site / "clinical.csv", index=False)
    with pytest.raises(DataValidationError, match=r"field 'consent'.*consent is required but the table has no"):
        ClinicalTableAdapter(require_consent=True).read(site)
    assert ClinicalTableAdapter().read(site).info["consent_recorded"] is False


# --------------------------------------------------------------------------------------
# 6. The site's own gate
# --------------------------------------------------------------------------------------


def test_site_gate_refuses_by_itself() -> None:
    gov = SiteGovernance("hospital-a", STRICT, None, dict(GOOD_SITE))
    refusals = admit(gov, facts(privacy="none", epsilon=None, delta=None, secure_aggregation=False), "r1", "hospital")
    assert [r.rule for r in refusals] == ["secure-aggregation", "require-dp"]
    assert all(r.site == "hospital-a" and r.policy == "strict.toml" for r in refusals)
    # The same gate on the real scenario: the plan the site recomputes is not the approved one.
    cfg, params = CLINICAL.configure({"privacy": "dp", "dp-epsilon": "0.5", "secure-aggregation": "secagg+"})
    cfg = resolve_privacy(cfg, STRICT)
    assert [r.rule for r in admit(gov, run_facts(CLINICAL, cfg, params), "r2")] == ["approved-plan"]
    approved = dataclasses.replace(gov, policy=dataclasses.replace(STRICT, approved_plans=(clinical_plan(),)))
    assert [r.rule for r in admit(approved, run_facts(CLINICAL, cfg, params), "r3")] == ["approved-plan"]
    plan = run_facts(CLINICAL, cfg, params).plan_hash
    approved = dataclasses.replace(gov, policy=dataclasses.replace(STRICT, approved_plans=(plan,)))
    assert admit(approved, run_facts(CLINICAL, cfg, params), "r4") == []


def test_site_gate_reserves_once_and_refuses_past_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    policy = dataclasses.replace(STRICT, max_epsilon_total=1.0)
    gov = SiteGovernance("hospital-a", policy, str(path), dict(GOOD_SITE))
    assert admit(gov, facts(epsilon=0.6), "run-1") == []
    ledger = PrivacyLedger(path, "hospital-a")
    assert [(e["run"], e["status"], e["reserved"]) for e in ledger.entries()] == [("run-1", "reserved", 0.6)]
    # A second check of the same run: its own reservation does not count against it, nor is it charged twice.
    assert admit(gov, facts(epsilon=0.6), "run-1") == []
    assert ledger.runs() == 1 and ledger.spent() == pytest.approx(0.6)
    (refusal,) = admit(gov, facts(epsilon=0.6), "run-2")
    assert refusal.rule == "max-epsilon-total" and "0.4 left (0.6 of 1 already spent)" in refusal.problem
    assert ledger.runs() == 1  # a refused run reserves nothing
    assert admit(gov, facts(epsilon=0.4), "run-3") == []
    assert ledger.spent() == pytest.approx(1.0)


def test_simulation_stops_when_a_site_refuses_even_if_the_coordinator_did_not_check(tmp_path: Path) -> None:
    from flcore.federation.engines import in_process_simulation

    data = clinical_data(tmp_path / "data")
    cfg, params = CLINICAL.configure({"num-server-rounds": "1", "local-epochs": "1"})
    cfg = resolve_privacy(cfg, CLINICAL.policy)
    prepared = prepare_data(CLINICAL, cfg, data, quiet, params)
    governance = list(prepared.governance)
    strict = dataclasses.replace(governance[1].policy, require_dp=True, source="hospital-b/policy.toml")
    governance[1] = dataclasses.replace(governance[1], policy=strict)
    assert governance[1].site == "hospital-b"
    audit = AuditTrail(tmp_path / "audit.jsonl")
    rounds: list[object] = []
    with pytest.raises(GovernanceError, match=r"Governance rule 'require-dp' refuses \w+ 'hospital-b'") as info:
        in_process_simulation(
            CLINICAL.name,
            cfg,
            params,
            prepared.splits,
            tmp_path / "sim",
            on_round=rounds.append,
            governance=governance,
            run_id="site-gate-e2e",
            audit=audit,
        )
    assert [(r.rule, r.site) for r in info.value.refusals] == [("require-dp", "hospital-b")]
    assert rounds == []  # no round was trained
    entries = audit_entries(tmp_path / "audit.jsonl")
    assert [(e["kind"], e["by"], e["rule"], e["site"]) for e in entries] == [
        ("refusal", "site", "require-dp", "hospital-b")
    ]
    assert entries[0]["run"] == "site-gate-e2e" and entries[0]["policy"] == "hospital-b/policy.toml"


# --------------------------------------------------------------------------------------
# Edge cases found in review
# --------------------------------------------------------------------------------------


def test_approve_plan_into_a_file_without_a_final_line_break(tmp_path: Path) -> None:
    path = tmp_path / SITE_POLICY_FILE
    path.write_text("min_cohort = 25", encoding="utf-8")  # as many editors save it
    assert approve_plan(path, PLAN) is True
    assert load_policy(path).approved_plans == (PLAN,) and load_policy(path).min_cohort == 25


def test_approve_plan_switches_approval_on_when_only_a_comment_names_it(tmp_path: Path) -> None:
    path = tmp_path / SITE_POLICY_FILE
    path.write_text("# require_approved_plan: to be switched on after review\nmin_cohort = 25\n", encoding="utf-8")
    assert approve_plan(path, PLAN) is True
    assert load_policy(path).require_approved_plan is True


def test_the_suggested_epsilon_fits_in_the_budget_left() -> None:
    policy = dataclasses.replace(STRICT, max_epsilon_total=1.0)
    (refusal,) = check_site(facts(epsilon=0.5), policy, "hospital-a", spent_epsilon=0.75004, **GOOD_SITE)  # type: ignore[arg-type]
    suggested = re.search(r"--set dp-epsilon=([0-9.e-]+)", refusal.fix)
    assert suggested is not None
    run = facts(epsilon=float(suggested.group(1)))
    assert check_site(run, policy, "hospital-a", spent_epsilon=0.75004, **GOOD_SITE) == []  # type: ignore[arg-type]


def test_the_toml_error_names_a_command_that_prints_a_valid_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / SITE_POLICY_FILE
    path.write_text("min_cohort = \n", encoding="utf-8")
    with pytest.raises(GovernanceError, match=r"`flsuite policy show --domain D` prints a valid one"):
        load_policy(path)
    capsys.readouterr()
    assert main(["policy", "show", "--domain", "medical"]) == 0
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    assert dataclasses.replace(load_policy(path), source=DEFAULT_POLICY.source) == DEFAULT_POLICY


def test_a_bank_with_one_table_keeps_its_policy_and_ledger(tmp_path: Path) -> None:
    from conftest import make_transactions, write_bank

    from flcore import scenario

    finance = scenario.get("finance-five-banks")
    for i, n in enumerate((250, 200, 150), 1):
        write_bank(tmp_path, f"bank_{i}", make_transactions(n, seed=i, fraud=6))
    (tmp_path / "bank_1" / SITE_POLICY_FILE).write_text("require_dp = true\n", encoding="utf-8")
    cfg, params = finance.configure({})
    prepared = prepare_data(finance, cfg, tmp_path, quiet, params)
    gov = prepared.governance[0]
    assert gov.site == "bank_1"
    assert gov.ledger == str(tmp_path / "bank_1" / ".flsuite" / "privacy-ledger.json")
    assert gov.policy.source == str(tmp_path / "bank_1" / SITE_POLICY_FILE)


def test_repartitioned_real_sites_still_answer_to_their_own_policies(tmp_path: Path) -> None:
    data = clinical_data(tmp_path / "data")
    (data / "hospital-a" / SITE_POLICY_FILE).write_text("require_dp = true\n", encoding="utf-8")
    federation = GovernancePolicy(source="federation.toml")  # asks for nothing by itself
    cfg, params = CLINICAL.configure({"partition": "quantity", "num-sites": "3"})
    with pytest.raises((GovernanceError, ConfigError)):
        prepared = prepare_data(CLINICAL, cfg, data, quiet, params, federation)
        gate(CLINICAL, cfg, params, prepared.governance, federation)


# --------------------------------------------------------------------------------------
# A coordinator cannot change the terms of a run once a site admitted it
# --------------------------------------------------------------------------------------


def test_dp_without_a_positive_epsilon_and_delta_is_refused() -> None:
    for eps, delta in ((0.0, 1e-5), (0.5, 0.0), (None, None)):
        found = check_site(facts(epsilon=eps, delta=delta), STRICT, "hospital-a", **GOOD_SITE)  # type: ignore[arg-type]
        assert [r.rule for r in found] == ["dp-parameters"]


def test_a_site_refuses_a_changed_plan_within_a_run(tmp_path: Path) -> None:
    policy = dataclasses.replace(STRICT, max_epsilon_total=5.0)
    gov = SiteGovernance("hospital-a", policy, str(tmp_path / "ledger.json"), dict(GOOD_SITE))
    assert admit(gov, facts(), "run-1") == []
    assert admit(gov, facts(), "run-1") == []  # the same plan again: fine, not charged twice
    assert PrivacyLedger(tmp_path / "ledger.json", "hospital-a").spent() == pytest.approx(0.5)
    changed = facts(plan_hash="sha256:" + "b" * 64)
    assert [r.rule for r in admit(gov, changed, "run-1")] == ["approved-plan", "plan-changed"]


def test_the_budget_check_and_the_reservation_are_one_step(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json", "hospital-a")
    assert ledger.reserve("run-1", 0.6, 1e-5, PLAN, "dp", budget=1.0)
    assert not ledger.reserve("run-2", 0.6, 1e-5, PLAN, "dp", budget=1.0)  # would pass the budget: not charged
    assert ledger.runs() == 1 and ledger.spent() == pytest.approx(0.6)
    ledger.record("run-1", 0.7)
    ledger.record("run-1", 0.1, final=True)  # a site that lost count cannot lower what was recorded
    assert ledger.spent() == pytest.approx(0.7)


def test_client_dp_accounts_for_the_sites_flower_really_samples() -> None:
    from flcore.federation.strategies import build_strategy
    from flcore.federation.strategies.dp import ClientLevelDp

    cfg = CLINICAL.configure({"privacy": "client-dp", "fraction-train": "0.2", "min-sites": "2"})[0]
    cfg = resolve_privacy(cfg, DEFAULT_POLICY)
    strategy = build_strategy(cfg, 5).strategy  # type: ignore[attr-defined]  # under the non-finite screen
    assert isinstance(strategy, ClientLevelDp)
    assert strategy.num_sampled_clients == 2 == strategy.plan.sampled_sites  # max(0.2 x 5, min-sites)
