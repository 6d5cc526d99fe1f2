"""Differential privacy: DP-SGD calibration and training, client-level plans, and each site's privacy ledger."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from domains.medical.scenario import CLINICAL, make_clinical_task
from domains.medical.synthetic import write_clinical
from flcore.cli import main
from flcore.data.site import SITE_POLICY_FILE, FeatureStats, SiteData
from flcore.exceptions import GovernanceError
from flcore.experiment.gate import gate
from flcore.experiment.prepare import prepare_data
from flcore.governance.ledger import LedgerError, PrivacyLedger
from flcore.governance.siteguard import resolve_privacy
from flcore.learning.privacy import (
    SAMPLE_ACCOUNTANT,
    ClientDpPlan,
    DpSgd,
    client_epsilon,
    sample_epsilon,
    sample_rate_for,
    steps_per_epoch,
)

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


def quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------------------
# 7. Sample-level DP-SGD
# --------------------------------------------------------------------------------------


def test_calibrate_plans_at_most_the_target_and_close_to_it() -> None:
    planned = {}
    for target in (0.5, 4.0):
        dp = DpSgd.calibrate(200, batch_size=32, epochs=4, target_epsilon=target, delta=1e-5, max_grad_norm=1.0)
        assert dp.sample_rate == pytest.approx(0.16)
        assert dp.planned_steps == 4 * math.ceil(200 / 32)
        assert dp.steps == 0 and dp.epsilon() == 0.0
        assert 0.95 * target <= dp.planned_epsilon() <= target
        assert dp.max_grad_norm == 1.0 and dp.delta == 1e-5
        planned[target] = dp
    assert planned[0.5].noise_multiplier > planned[4.0].noise_multiplier


def test_epsilon_grows_with_steps_and_reaches_the_plan() -> None:
    dp = DpSgd.calibrate(200, batch_size=32, epochs=4, target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0)
    spent = [dataclasses.replace(dp, steps=s).epsilon() for s in (0, 1, 7, 14, dp.planned_steps)]
    assert spent[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(spent))
    assert spent[-1] == pytest.approx(dp.planned_epsilon())
    assert dataclasses.replace(dp, steps=2 * dp.planned_steps).epsilon() > dp.planned_epsilon()
    assert dp.to_json()["epsilon"] == 0.0 and dp.to_json()["planned_steps"] == 28
    # More noise, or a smaller sampling rate, spends less for the same steps.
    assert sample_epsilon(2.0, 0.16, 28, 1e-5) < sample_epsilon(1.0, 0.16, 28, 1e-5)
    assert sample_epsilon(1.0, 0.05, 28, 1e-5) < sample_epsilon(1.0, 0.16, 28, 1e-5)


def test_sample_rate_and_steps_per_epoch() -> None:
    assert sample_rate_for(200, 32) == pytest.approx(0.16)
    assert sample_rate_for(10, 32) == 1.0  # a site smaller than a batch: every record every step
    assert steps_per_epoch(0.16) == 7 and steps_per_epoch(1.0) == 1 and steps_per_epoch(0.5) == 2
    with pytest.raises(ValueError, match="empty site"):
        sample_rate_for(0, 32)


def tiny_site(n: int = 120, seed: int = 0) -> SiteData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0.3).astype(np.int64)
    return SiteData("hospital-a", x, y)


def dp_train(
    site: SiteData, *, sigma: float | None = None, seed: int = 0, epochs: int = 2
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], DpSgd]:
    """Weights before and after ``epochs`` of DP-SGD on ``site`` (noise calibrated to epsilon 1, or ``sigma``)."""
    cfg, params = CLINICAL.configure({"local-epochs": str(epochs), "batch-size": "32"})
    task = make_clinical_task(params)
    model = task.init_model(FeatureStats.of(site.x, site.y), 0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if sigma is None:
        dp = DpSgd.calibrate(len(site), batch_size=32, epochs=epochs, target_epsilon=1.0, delta=1e-5, max_grad_norm=1.0)
    else:
        q = sample_rate_for(len(site), 32)
        dp = DpSgd(sigma, 1.0, q, 1e-5, epochs * steps_per_epoch(q))
    task.fit(model, site, cfg, first_round=0, num_rounds=1, seed=seed, dp=dp)
    return before, model.state_dict(), dp


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k].float() - b[k].float()) ** 2).sum() for k in a if a[k].is_floating_point()) ** 0.5)


def test_dp_training_advances_the_steps_and_changes_the_model() -> None:
    site = tiny_site()
    before, after, dp = dp_train(site, epochs=2)
    assert dp.steps == 2 * math.ceil(len(site) / 32) == dp.planned_steps
    assert dp.epsilon() == pytest.approx(dp.planned_epsilon()) and dp.epsilon() <= 1.0
    assert set(after) == set(before)  # Opacus's wrapper leaves no trace in the state dict
    assert distance(before, after) > 1e-3


def test_dp_training_adds_noise() -> None:
    site = tiny_site()
    _, first, _ = dp_train(site, sigma=1.0, seed=0)
    _, again, _ = dp_train(site, sigma=1.0, seed=0)
    _, other, _ = dp_train(site, sigma=1.0, seed=1)
    # The noise and the Poisson samples come from a secret seed, not the run's: a coordinator that knows
    # the seed cannot regenerate them, so two runs with the same seed differ.
    assert distance(first, again) > 1e-3
    assert distance(first, other) > 1e-3
    # Only the noise scale differs between these (the samples differ too, but far less than the noise).
    _, nearly_none, _ = dp_train(site, sigma=1e-6)
    _, much, _ = dp_train(site, sigma=10.0)
    assert distance(nearly_none, first) > 1e-3
    assert distance(nearly_none, much) > 3 * distance(nearly_none, first)


# --------------------------------------------------------------------------------------
# 8. The privacy ledger
# --------------------------------------------------------------------------------------


def test_ledger_reserves_records_and_settles(tmp_path: Path) -> None:
    path = tmp_path / "hospital-a" / ".flsuite" / "privacy-ledger.json"
    ledger = PrivacyLedger(path, "hospital-a")
    assert ledger.entries() == [] and ledger.spent() == 0.0 and ledger.runs() == 0
    ledger.reserve("run-1", 0.5, 1e-5, "sha256:p1", "dp")
    assert ledger.spent() == 0.5  # an open run counts at what it reserved
    ledger.record("run-1", 0.2)
    assert ledger.spent() == 0.5 and ledger.entries()[0]["status"] == "reserved"
    ledger.record("run-1", 0.45, final=True)
    assert ledger.spent() == pytest.approx(0.45)  # settled: what it really spent
    ledger.reserve("run-1", 9.0, 1e-5, "sha256:p1", "dp")  # a second reservation of a run is a no-op
    assert ledger.runs() == 1 and ledger.spent() == pytest.approx(0.45)
    ledger.reserve("run-2", 0.3, 1e-6, "sha256:p2", "client-dp")
    assert ledger.spent() == pytest.approx(0.75)
    again = PrivacyLedger(path, "hospital-a")  # another process reads the same file
    assert [(e["run"], e["status"], e["mode"]) for e in again.entries()] == [
        ("run-1", "spent", "dp"),
        ("run-2", "reserved", "client-dp"),
    ]
    assert again.entries()[0] == {
        "run": "run-1",
        "plan": "sha256:p1",
        "mode": "dp",
        "status": "spent",
        "reserved": 0.5,
        "epsilon": 0.45,
        "delta": 1e-5,
    }
    assert json.loads(path.read_text(encoding="utf-8"))["site"] == "hospital-a"
    with pytest.raises(LedgerError, match=r"Run run-3 has no reservation in the privacy ledger .*privacy-ledger\.json"):
        ledger.record("run-3", 0.1)


@pytest.mark.parametrize("text", ["{not json", '{"site": "hospital-a"}', '{"entries": 5}', "[1, 2]"])
def test_corrupt_ledger_is_refused_naming_its_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "privacy-ledger.json"
    path.write_text(text, encoding="utf-8")
    ledger = PrivacyLedger(path, "hospital-a")
    message = rf"privacy ledger {path} of site 'hospital-a' cannot be read .*restored from a backup"
    with pytest.raises(LedgerError, match=message):
        ledger.spent()
    with pytest.raises(LedgerError, match=message):
        ledger.reserve("run-1", 0.5, 1e-5, "sha256:p", "dp")
    assert path.read_text(encoding="utf-8") == text  # never overwritten


# --------------------------------------------------------------------------------------
# 9. The ledger across two runs of the CLI
# --------------------------------------------------------------------------------------

EPSILON = 0.5


def ledger_of(data: Path, site: str) -> PrivacyLedger:
    return PrivacyLedger(data / site / ".flsuite" / "privacy-ledger.json", site)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two short DP runs of medical-clinical on the same hospitals; the ledgers after each."""
    root = tmp_path_factory.mktemp("ledger-runs")
    data = root / "data"
    write_clinical(data, seed=0)
    out: dict[str, Any] = {"data": data, "results": [], "entries": []}
    for i in (1, 2):
        args = ["run", "medical-clinical", "--data", str(data), "--out", str(root / f"out{i}"), "--quiet"]
        args += ["--engine", "inprocess"]
        sets = ["--rounds", "2", "--set", "privacy=dp", "--set", f"dp-epsilon={EPSILON}"]
        assert main([*args, *sets]) == 0
        out["results"].append(json.loads((root / f"out{i}" / "results.json").read_text(encoding="utf-8")))
        out["entries"].append({s: ledger_of(data, s).entries() for s in HOSPITALS})
        out.setdefault("audit", []).append(root / f"out{i}" / "audit.jsonl")
    return out


def test_first_run_settles_one_entry_per_hospital(two_runs: dict[str, Any]) -> None:
    results = two_runs["results"][0]
    for site in HOSPITALS:
        (entry,) = two_runs["entries"][0][site]
        assert entry["status"] == "spent" and entry["mode"] == "dp"
        assert entry["reserved"] == EPSILON
        assert 0 < entry["epsilon"] <= EPSILON
        assert entry["delta"] == 1e-5
        assert entry["run"] == results["governance"]["run"]
        assert entry["plan"] == results["governance"]["plan"]
        assert entry["epsilon"] == pytest.approx(results["arms"]["federated"]["privacy"]["per_site_epsilon"][site])
        assert results["governance"]["sites"][site]["epsilon_spent_before"] == 0.0


def test_second_run_adds_a_second_entry_and_spent_is_the_sum(two_runs: dict[str, Any]) -> None:
    data, results = two_runs["data"], two_runs["results"][1]
    for site in HOSPITALS:
        entries = two_runs["entries"][1][site]
        assert [e["status"] for e in entries] == ["spent", "spent"]
        assert entries[0] == two_runs["entries"][0][site][0]  # the first run's entry is untouched
        assert entries[1]["run"] == results["governance"]["run"] != entries[0]["run"]
        assert ledger_of(data, site).spent() == pytest.approx(entries[0]["epsilon"] + entries[1]["epsilon"])
        before = results["governance"]["sites"][site]["epsilon_spent_before"]
        assert before == pytest.approx(entries[0]["epsilon"])


@pytest.mark.parametrize("run", [0, 1])
def test_results_report_the_privacy_spent(two_runs: dict[str, Any], run: int) -> None:
    results = two_runs["results"][run]
    privacy = results["arms"]["federated"]["privacy"]
    assert privacy["mode"] == "dp" and privacy["unit"] == "record"
    assert privacy["accountant"] == SAMPLE_ACCOUNTANT
    assert privacy["delta"] == 1e-5 and privacy["target_epsilon"] == EPSILON
    assert sorted(privacy["per_site_epsilon"]) == HOSPITALS
    assert 0 < privacy["epsilon"] <= EPSILON
    assert privacy["epsilon"] == max(privacy["per_site_epsilon"].values())
    rounds = privacy["per_round_epsilon"]
    assert len(rounds) == 2 and all(a <= b for a, b in itertools.pairwise(rounds))
    assert rounds[-1] == pytest.approx(privacy["epsilon"])
    gov = results["governance"]
    assert gov["decision"] == "pass" and gov["privacy"] == "dp" and gov["epsilon"] == EPSILON
    assert main(["audit", "verify", str(two_runs["audit"][run]), "--head", gov["audit"]["head"]]) == 0


def test_third_run_against_the_total_budget(two_runs: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(two_runs["data"], data)  # ledgers included
    (data / "hospital-a" / SITE_POLICY_FILE).write_text("max_epsilon_total = 1.0\n", encoding="utf-8")
    spent = ledger_of(data, "hospital-a").spent()
    cfg, params = CLINICAL.configure({"privacy": "dp", "dp-epsilon": str(EPSILON), "num-server-rounds": "2"})
    cfg = resolve_privacy(cfg, CLINICAL.policy)
    prepared = prepare_data(CLINICAL, cfg, data, quiet, params)
    if 1.0 - spent < EPSILON:
        with pytest.raises(GovernanceError, match=r"'max-epsilon-total' refuses hospital 'hospital-a'"):
            gate(CLINICAL, cfg, params, prepared.governance, CLINICAL.policy)
    else:
        record = gate(CLINICAL, cfg, params, prepared.governance, CLINICAL.policy)
        assert record["sites"]["hospital-a"]["epsilon_spent_before"] == pytest.approx(spent)
    # A smaller epsilon fits in what is left; the gate reserves nothing.
    left = 1.0 - spent
    smaller = dataclasses.replace(cfg, dp_epsilon=left / 2)
    record = gate(CLINICAL, smaller, params, prepared.governance, CLINICAL.policy)
    assert record["decision"] == "pass" and record["sites"]["hospital-a"]["epsilon_budget"] == 1.0
    assert ledger_of(data, "hospital-a").runs() == 2


def test_third_run_past_the_budget_is_refused_by_the_cli(
    two_runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(two_runs["data"], data)
    spent = ledger_of(data, "hospital-b").spent()
    budget = round(spent + EPSILON / 2, 6)  # a quarter left: too little for a run of epsilon 0.5
    (data / "hospital-b" / SITE_POLICY_FILE).write_text(f"[privacy]\nmax-epsilon-total = {budget}\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["run", "medical-clinical", "--data", str(data), "--out", str(out), "--quiet", "--rounds", "2"]
    args += ["--engine", "inprocess"]
    assert main([*args, "--set", "privacy=dp", "--set", f"dp-epsilon={EPSILON}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Governance rule 'max-epsilon-total' refuses hospital 'hospital-b'" in err
    assert f"{spent:.4g} of {budget:g} already spent" in err
    assert not (out / "results.json").exists()
    entries = [json.loads(line) for line in (out / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(e["rule"], e["site"]) for e in entries if e["kind"] == "refusal"] == [("max-epsilon-total", "hospital-b")]
    assert ledger_of(data, "hospital-b").runs() == 2  # nothing reserved
    assert main(["audit", "verify", str(out / "audit.jsonl")]) == 0


# --------------------------------------------------------------------------------------
# 10. Client-level DP
# --------------------------------------------------------------------------------------


def test_client_dp_plan_stays_within_the_target() -> None:
    for target in (1.0, 4.0):
        plan = ClientDpPlan.calibrate(
            target_epsilon=target, delta=1e-5, rounds=10, sampled_sites=50, population=200, clip=1.0
        )
        assert plan.planned_epsilon() <= target
        assert plan.planned_epsilon() >= 0.9 * target  # the smallest noise to 1%, not any noise that fits
        assert (plan.clipping_norm, plan.rounds, plan.sampled_sites, plan.population) == (1.0, 10, 50, 200)


def test_client_epsilon_falls_with_noise_and_grows_with_rounds() -> None:
    eps = [client_epsilon(z, 10, 50, 200, 1e-5) for z in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in itertools.pairwise(eps))
    assert client_epsilon(2.0, 20, 50, 200, 1e-5) > client_epsilon(2.0, 10, 50, 200, 1e-5)
