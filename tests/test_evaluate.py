"""External validation: a run's model scored on labelled banks that did not train it (`flsuite evaluate`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from tabular_run import HELD_OUT, LABEL, TRAINED, TabularRun, tabular_run

from domains.tabular.synthetic import bank_table
from flcore.cli import main
from flcore.serving.model import load_model

NEW_BANK = "bank_west"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TabularRun:
    return tabular_run(tmp_path_factory)


@pytest.fixture(scope="module")
def external(run: TabularRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two banks the model never saw: the held-out synthetic bank and a new one generated here."""
    root = tmp_path_factory.mktemp("external")
    shutil.copytree(run.banks / HELD_OUT, root / HELD_OUT)
    (root / NEW_BANK).mkdir()
    bank_table(150, 0.08, 0.2, np.random.default_rng(7)).to_csv(root / NEW_BANK / "transactions.csv", index=False)
    return root


def evaluate(model: Path, data: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["evaluate", str(model), "--data", str(data), "--out", str(out), *extra])
    return code, " ".join(capsys.readouterr().err.split())


def by_hand(model_dir: Path, data: Path, sites: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-site and union ROC-AUC, sensitivity and specificity from sklearn on the model's own scores."""
    model = load_model(model_dir)
    t = model.threshold
    assert t is not None

    def metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
        return {
            "n": len(y),
            "n_positive": int(y.sum()),
            "roc_auc": roc_auc_score(y, s),
            "sensitivity": float(np.mean(s[y == 1] >= t)),
            "specificity": float(np.mean(s[y == 0] < t)),
        }

    per_site, ys, ss = {}, [], []
    for site in sites:
        table = data / site / "transactions.csv"
        y = pd.read_csv(table)[LABEL].to_numpy()
        s = model.predict_proba(table)
        assert len(s) == len(y)  # missing values imputed: every row scored
        per_site[site] = metrics(y, s)
        ys.append(y)
        ss.append(s)
    return per_site, metrics(np.concatenate(ys), np.concatenate(ss))


@pytest.mark.parametrize("arm", ["federated", f"local_only/{TRAINED[0]}"])
def test_evaluation_on_banks_that_did_not_train_the_model_equals_sklearn_by_hand(
    run: TabularRun, external: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arm: str
) -> None:
    model_dir = run.models / arm
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert HELD_OUT not in manifest["trained_on"] and NEW_BANK not in manifest["trained_on"]
    code, err = evaluate(model_dir, external, tmp_path / "ev", capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    sites = sorted([HELD_OUT, NEW_BANK])
    per_site, union = by_hand(model_dir, external, sites)
    assert sorted(doc["per_site"]) == sites
    for site in sites:
        for key, value in per_site[site].items():
            assert doc["per_site"][site][key] == pytest.approx(value, abs=1e-12), (site, key)
        assert doc["data"]["sites"][site]["n"] == per_site[site]["n"]
        assert doc["data"]["sites"][site]["positives"] == per_site[site]["n_positive"]
    for key, value in union.items():
        assert doc["union"][key] == pytest.approx(value, abs=1e-12), key
    assert doc["mean_over_sites"]["roc_auc"] == pytest.approx(np.mean([per_site[s]["roc_auc"] for s in sites]))
    # The model's own operating point, chosen on the training federation's validation data, never here.
    assert doc["threshold"]["value"] == manifest["threshold"]["value"]
    assert doc["model"]["digest"] == manifest["digest"] and doc["model"]["arm"] == manifest["arm"]
    assert doc["model"]["trained_on"] == manifest["trained_on"] and doc["kind"] == "evaluation"
    assert doc["at_training"]["test"] == manifest["metrics"]["test"]


def test_evaluation_md_has_the_per_site_table(
    run: TabularRun, external: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(run.out, external, tmp_path / "ev", capsys)[0] == 0
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    text = (tmp_path / "ev" / "evaluation.md").read_text()
    assert text.startswith("## External validation")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert {HELD_OUT, NEW_BANK, "**all sites**"} <= set(rows)
    for site in (HELD_OUT, NEW_BANK):
        cells = [c.strip() for c in rows[site].strip("|").split("|")]
        n, positives = doc["data"]["sites"][site]["n"], doc["data"]["sites"][site]["positives"]
        assert cells[1:3] == [str(n), str(positives)]
        assert f"{doc['per_site'][site]['roc_auc']:.4f}" in cells
    total = sum(s["n"] for s in doc["data"]["sites"].values())
    assert rows["**all sites**"].startswith(f"| **all sites** | {total} |")
    assert f"{doc['union']['roc_auc']:.4f}" in rows["**all sites**"]
    assert f"trained on {', '.join(sorted(TRAINED))}" in text


def test_one_site_folder_is_evaluated_as_one_site(
    run: TabularRun, external: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(run.out, external / HELD_OUT, tmp_path / "ev", capsys)[0] == 0
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert list(doc["per_site"]) == [HELD_OUT]
    assert doc["union"]["roc_auc"] == pytest.approx(doc["per_site"][HELD_OUT]["roc_auc"])
    # An evaluation is not overwritten unless asked.
    code, err = evaluate(run.out, external / HELD_OUT, tmp_path / "ev", capsys)
    assert code == 2 and "--force" in err
    assert evaluate(run.out, external / HELD_OUT, tmp_path / "ev", capsys, "--force")[0] == 0


def test_unlabelled_data_is_refused_for_evaluation(
    run: TabularRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "data" / HELD_OUT
    site.mkdir(parents=True)
    run.frame(HELD_OUT).drop(columns=[LABEL]).to_csv(site / "transactions.csv", index=False)
    code, err = evaluate(run.out, site, tmp_path / "ev", capsys)
    assert code == 2 and "Traceback" not in err
    assert f"there is no '{LABEL}' column" in err
    assert not (tmp_path / "ev" / "evaluation.json").exists()
    # A few labels missing: refused too, naming the row.
    frame = run.frame(HELD_OUT).astype({LABEL: object})
    frame.loc[4, LABEL] = None
    frame.to_csv(site / "transactions.csv", index=False)
    code, err = evaluate(run.out, site, tmp_path / "ev", capsys)
    assert code == 2 and re.search(r"row 5: .*is_fraud.*empty|row 5: .*empty.*is_fraud", err), err
