"""A run's exported models: they reload, score as the run scored them, and refuse any byte changed since."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tabular_run import HELD_OUT, LABEL, TRAINED, TabularRun, tabular_run

from flcore.cli import main
from flcore.config import RunConfig, apply_settings
from flcore.data.preprocess import Preprocessing
from flcore.data.schema import TableSchema
from flcore.data.site import SiteData
from flcore.exceptions import DataValidationError
from flcore.experiment.prepare import prepare_data
from flcore.learning.artifact import FORMAT, manifest_digest, read_model, write_model
from flcore.serving.model import TrainedModel, load_model

ATOL = 1e-6


# -- the runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TabularRun:
    """Tabular MLP (torch, binary) on two banks."""
    return tabular_run(tmp_path_factory)


def small_run(out: Path, scenario: str, data: Path, *settings: str) -> Path:
    args = ["run", scenario, "--data", str(data), "--engine", "inprocess", "--rounds", "2", "--out", str(out)]
    args += ["--quiet", "--no-report", *[a for s in settings for a in ("--set", s)]]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def xgb_out(run: TabularRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tabular XGBoost (fedxgb-bagging: fedxgb-hist needs three banks) on the same two banks."""
    settings = ("model=xgboost", "strategy=fedxgb-bagging", "local-epochs=1")
    return small_run(tmp_path_factory.mktemp("xgb") / "out", "tabular", run.data, *settings)


@pytest.fixture(scope="module")
def finance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """finance-five-banks with its reference contract (128 numeric features, ``label``)."""
    root = tmp_path_factory.mktemp("finance")
    assert main(["data", "make", "finance-five-banks", "--out", str(root / "banks"), "--scale", "0.05"]) == 0
    return root / "banks", small_run(root / "out", "finance-five-banks", root / "banks", "local-epochs=1")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """iot-vibration-fleet: an anomaly detector, each device with its own threshold."""
    root = tmp_path_factory.mktemp("fleet")
    assert main(["data", "make", "iot-vibration-fleet", "--out", str(root / "fleet"), "--devices", "4"]) == 0
    return root / "fleet", small_run(root / "out", "iot-vibration-fleet", root / "fleet", "local-epochs=1")


def arm_folders(models: Path) -> list[tuple[str, Path, str | None]]:
    """(test_scores column, model folder, the only site it scores or None) for every exported model."""
    local = sorted(p for p in (models / "local_only").iterdir() if p.is_dir())
    return [("federated", models / "federated", None), ("centralised", models / "centralised", None)] + [
        ("local_only", p, p.name) for p in local
    ]


def table_of(site_dir: Path) -> Path:
    (table,) = [p for p in site_dir.iterdir() if p.suffix in (".csv", ".parquet")]
    return table


def assert_scores_match_the_run_on_tables(models: Path, data: Path) -> None:
    """Each model scores each site's table file as test_scores.csv recorded for that site's test records."""
    recorded = pd.read_csv(models / "test_scores.csv")
    assert set(recorded.site) and len(recorded) > 0
    for column, folder, only in arm_folders(models):
        model = load_model(folder)
        for site in [only] if only else sorted(set(recorded.site)):
            want = recorded[recorded.site == site]
            got = model.scores(table_of(data / site))
            joined = want.merge(got, on="record", validate="one_to_one", suffixes=("", "_scored"))
            assert len(joined) == len(want), (column, site)
            np.testing.assert_allclose(joined["score"], joined[column], rtol=0, atol=ATOL, err_msg=f"{column} {site}")
            np.testing.assert_array_equal(joined["label_scored"].astype(int), joined["label"])


def reproduced_test_splits(model: TrainedModel, data: Path) -> dict[str, SiteData]:
    """The run's own test splits, read and split again with the settings the manifest records."""
    cfg = apply_settings(RunConfig(), model.manifest["config"])
    prepared = prepare_data(model.scenario, cfg, data, lambda _: None, model.params)
    return {s.name: s.test for s in prepared.splits}


# -- every task's model scores as the run did ------------------------------------------------


def test_tabular_mlp_models_score_the_banks_tables_as_the_run_did(run: TabularRun) -> None:
    assert_scores_match_the_run_on_tables(run.models, run.data)


def test_xgboost_models_score_the_banks_tables_as_the_run_did(run: TabularRun, xgb_out: Path) -> None:
    model = load_model(xgb_out)
    assert model.manifest["task"]["family"] == "xgboost"
    assert set(model.manifest["files"]) == {"model.json"}
    assert_scores_match_the_run_on_tables(xgb_out / "models", run.data)


def test_finance_reference_models_score_the_banks_tables_as_the_run_did(finance: tuple[Path, Path]) -> None:
    data, out = finance
    model = load_model(out)
    assert model.manifest["scenario"] == "finance-five-banks"
    assert model.feature_names == [f"f{i:03d}" for i in range(128)] and model.manifest["input"]["shape"] == [128]
    assert_scores_match_the_run_on_tables(out / "models", data)


def test_anomaly_detectors_score_the_run_test_windows_as_the_run_did(fleet: tuple[Path, Path]) -> None:
    data, out = fleet
    recorded = pd.read_csv(out / "models" / "test_scores.csv")
    results = json.loads((out / "results.json").read_text())
    tests = reproduced_test_splits(load_model(out), data)
    assert sorted(tests) == sorted(set(recorded.site))
    for column, folder, only in arm_folders(out / "models"):
        model = load_model(folder)
        if only:  # a device's own model: the threshold it calibrated
            assert model.threshold == results["arms"]["local_only"]["per_site"][only]["threshold"]
        else:  # a global model: no single threshold, each device calibrates its own
            assert model.threshold is None
            assert model.manifest["threshold"]["per_site"] == {
                s: m["threshold"] for s, m in results["arms"][column]["per_site"].items()
            }
        for site in [only] if only else sorted(tests):
            test = tests[site]
            want = recorded[recorded.site == site]
            ids = test.ids if test.ids is not None else [f"{site}:{i}" for i in range(len(test))]
            assert list(want.record) == list(ids)
            np.testing.assert_allclose(model.predict_proba(test), want[column], rtol=0, atol=ATOL)


def test_an_anomaly_detectors_manifest_does_not_call_its_score_an_estimate_of_the_label(
    fleet: tuple[Path, Path],
) -> None:
    manifest = load_model(fleet[1]).manifest
    assert "estimate that the label is 1" not in manifest["label"], manifest["label"]


@pytest.mark.parametrize("which", ["mlp", "xgboost", "finance", "fleet"])
def test_a_model_written_again_from_what_was_read_is_the_same_model(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out, data = {
        "mlp": lambda: (request.getfixturevalue("run").out, request.getfixturevalue("run").table(TRAINED[0])),
        "xgboost": lambda: (request.getfixturevalue("xgb_out"), request.getfixturevalue("run").table(TRAINED[0])),
        "finance": lambda: (request.getfixturevalue("finance")[1], request.getfixturevalue("finance")[0] / "bank_a"),
        "fleet": lambda: (request.getfixturevalue("fleet")[1], None),
    }[which]()
    folder = out / "models" / "federated"
    manifest, files = read_model(folder)
    body = {k: v for k, v in manifest.items() if k not in ("format", "files", "digest")}
    written = write_model(tmp_path / "copy", files, body)
    assert written["digest"] == manifest["digest"] and written["files"] == manifest["files"]
    for name in files:
        assert (tmp_path / "copy" / name).read_bytes() == (folder / name).read_bytes()
    original, copy = load_model(folder), load_model(tmp_path / "copy")
    if data is None:  # the fleet: its first device's test windows
        fleet_dir = request.getfixturevalue("fleet")[0]
        data = next(iter(reproduced_test_splits(original, fleet_dir).values()))
    np.testing.assert_array_equal(original.predict_proba(data), copy.predict_proba(data))


# -- the manifest --------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_manifest_says_what_the_model_is_and_how_to_use_it(run: TabularRun) -> None:
    results = json.loads((run.out / "results.json").read_text())
    folder = run.models / "federated"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["scenario"] == "tabular" and manifest["arm"] == "federated"
    assert sorted(manifest["trained_on"]) == sorted(TRAINED)
    prep = Preprocessing.from_json(manifest["preprocessing"])
    assert manifest["input"]["feature_names"] == prep.feature_names and manifest["input"]["shape"] == [
        len(prep.feature_names)
    ]
    assert "merchant_category=grocery" in prep.feature_names and LABEL not in prep.columns
    assert manifest["schema"] == TableSchema.load(run.data / "schema.toml").to_dict()
    assert LABEL in manifest["label"] and "'1'" in manifest["label"]
    union = results["arms"]["federated"]["union"]
    assert manifest["threshold"]["value"] == union["threshold"] and 0.0 <= union["threshold"] <= 1.0
    assert manifest["metrics"]["test"] == union
    assert manifest["metrics"]["per_site"] == results["arms"]["federated"]["per_site"]
    plan = manifest["plan"]
    assert plan == results["governance"]["plan"] and plan.startswith("sha256:") and len(plan) == len("sha256:") + 64
    assert manifest["privacy"]["mode"] == results["governance"]["privacy"] == "none"
    assert manifest["config"]["num-server-rounds"] == 2 and manifest["run_id"]
    # Every file's SHA-256, and the manifest's own digest, computed here.
    assert manifest["files"] == {n: sha256((folder / n).read_bytes()) for n in ("model.safetensors",)}
    body = {k: v for k, v in manifest.items() if k != "digest"}
    assert manifest["digest"] == sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    assert manifest["digest"] == manifest_digest(manifest)


def test_results_and_the_audit_trail_record_every_models_digest(run: TabularRun) -> None:
    results = json.loads((run.out / "results.json").read_text())
    audit = [json.loads(line) for line in (run.out / "audit.jsonl").read_text().splitlines()]
    (models_entry,) = [e for e in audit if e["kind"] == "models"]
    digests = {}
    for _, folder, site in arm_folders(run.models):
        key = f"local_only/{site}" if site else folder.name
        digests[key] = json.loads((folder / "manifest.json").read_text())["digest"]
        entry = results["models"]["local_only"][site] if site else results["models"][folder.name]
        assert entry["digest"] == digests[key] and (run.out / entry["path"]).resolve() == folder.resolve()
    assert models_entry["digests"] == digests
    assert sorted(k for k in digests if k.startswith("local_only/")) == [f"local_only/{s}" for s in sorted(TRAINED)]


def test_local_only_models_carry_their_own_sites_threshold(run: TabularRun) -> None:
    results = json.loads((run.out / "results.json").read_text())
    for site in TRAINED:
        model = load_model(run.models / "local_only" / site)
        assert model.manifest["site"] == site and model.manifest["trained_on"] == [site]
        assert model.threshold == results["arms"]["local_only"]["per_site"][site]["threshold"]
        assert model.manifest["privacy"] == {"mode": "none"}
        assert site in repr(model)


def test_a_run_folder_loads_as_its_federated_model(run: TabularRun) -> None:
    model = load_model(run.out)
    assert model.folder == run.models / "federated" and model.manifest["arm"] == "federated"
    with pytest.raises(DataValidationError, match=r"no manifest\.json: this is not a model folder"):
        load_model(run.models)


# -- tampering -----------------------------------------------------------------------------


def copy_model(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["torch", "xgboost"])
def test_a_changed_byte_in_the_weights_is_refused(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = request.getfixturevalue("run").out if which == "torch" else request.getfixturevalue("xgb_out")
    folder = copy_model(out / "models" / "federated", tmp_path)
    name = "model.safetensors" if which == "torch" else "model.json"
    flip_byte(folder / name, (folder / name).stat().st_size // 2)
    with pytest.raises(DataValidationError, match=r"SHA-256 differs from the manifest's: it was altered") as err:
        load_model(folder)
    assert err.value.path == str(folder / name)


def test_a_changed_byte_in_the_manifest_is_refused(run: TabularRun, tmp_path: Path) -> None:
    folder = copy_model(run.models / "federated", tmp_path)
    manifest = folder / "manifest.json"
    text = manifest.read_bytes()
    flip_byte(manifest, text.index(b'"value": ') + len(b'"value": ') + 3)  # a digit of the threshold
    with pytest.raises(DataValidationError, match="does not match its digest: it was altered") as err:
        load_model(folder)
    assert err.value.field == "digest" and err.value.path == str(manifest)
    manifest.write_bytes(text)
    flip_byte(manifest, 0)  # no longer JSON
    with pytest.raises(DataValidationError, match="the manifest is not valid JSON"):
        load_model(folder)


def test_a_missing_weight_file_is_refused(run: TabularRun, tmp_path: Path) -> None:
    folder = copy_model(run.models / "federated", tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(DataValidationError, match="the model file cannot be read"):
        load_model(folder)


def rewrite(folder: Path, change: dict[str, object], files: dict[str, bytes] | None = None) -> None:
    """A forger's edit: the manifest (and files) changed, every hash recomputed."""
    manifest, old = read_model(folder)
    body = {k: v for k, v in manifest.items() if k not in ("format", "files", "digest")}
    write_model(folder, files or old, {**body, **change})


def test_weights_that_do_not_fit_the_manifests_model_are_refused(
    run: TabularRun, xgb_out: Path, tmp_path: Path
) -> None:
    torch_model = copy_model(run.models / "federated", tmp_path / "torch")
    manifest = json.loads((torch_model / "manifest.json").read_text())
    rewrite(torch_model, {"input": {**manifest["input"], "shape": [manifest["input"]["shape"][0] + 3]}})
    with pytest.raises(DataValidationError, match="the weights do not fit the model the manifest describes"):
        load_model(torch_model)
    trees = copy_model(xgb_out / "models" / "federated", tmp_path / "trees")
    rewrite(trees, {}, {"model.json": b'{"learner": "no trees here"}'})
    with pytest.raises(DataValidationError, match="not a usable tree ensemble"):
        load_model(trees)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "flsuite-model/0"}, r"the manifest's format is 'flsuite-model/0', not 'flsuite-model/1'"),
        ({"files": {"../model.safetensors": "0" * 64}}, r"names a file outside the folder"),
    ],
    ids=["format", "outside"],
)
def test_a_manifest_of_another_format_or_naming_outside_files_is_refused(
    run: TabularRun, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    folder = copy_model(run.models / "federated", tmp_path)
    manifest = {**json.loads((folder / "manifest.json").read_text()), **change}
    manifest["digest"] = manifest_digest(manifest)  # consistent, so that only the change is at fault
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataValidationError, match=message):
        load_model(folder)


def predict(model: Path, data: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["predict", str(model), "--data", str(data), "--out", str(out)])
    return code, " ".join(capsys.readouterr().err.split())


def test_predict_with_a_tampered_model_exits_2_without_traceback(
    run: TabularRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_model(run.models / "federated", tmp_path)
    flip_byte(folder / "model.safetensors", 100)
    code, err = predict(folder, run.table(HELD_OUT), tmp_path / "scores.csv", capsys)
    assert code == 2 and err.startswith("flsuite: error: Invalid data in")
    assert "SHA-256 differs" in err and "Traceback" not in err
    assert not (tmp_path / "scores.csv").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns=["amount"]), r"'amount'.* (is not in the table|missing)"),
        (lambda f: f.rename(columns={"distance_km": "distance"}), r"'distance_km'.* (is not in the table|missing)"),
    ],
    ids=["column-missing", "column-renamed"],
)
def test_predict_on_a_table_of_another_schema_exits_2_naming_the_difference(
    run: TabularRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: object, message: str
) -> None:
    table = tmp_path / "transactions.csv"
    edit(run.frame(HELD_OUT)).to_csv(table, index=False)  # type: ignore[operator]
    code, err = predict(run.out, table, tmp_path / "scores.csv", capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"flsuite: error: Invalid data in {table}")
    assert re.search(message, err), err


def test_predict_with_a_20_feature_model_on_the_128_feature_table_exits_2(
    run: TabularRun, finance: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = finance
    code, err = predict(run.out, table_of(data / "bank_a"), tmp_path / "scores.csv", capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(r"'amount'.* (is not in the table|missing)", err), err
    # And the other way round: the 128-feature model on a bank's own 20-number export.
    code, err = predict(out, run.table(HELD_OUT), tmp_path / "scores.csv", capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(r"'f000'.* (is not in the table|missing)|expected exactly 128 feature columns", err), err


# -- the user's path, in a fresh process ---------------------------------------------------------


def test_make_check_run_predict_in_fresh_processes(tmp_path: Path) -> None:
    """Done when: data make tabular -> site check -> run -> predict on a bank's table without its label.

    The first three steps share one fresh interpreter (the CLI's ``main``, as the console script calls it);
    ``flsuite predict`` runs in a second one, so the model folder is all it has.
    """
    env = {**os.environ, "FLSUITE_CACHE": str(tmp_path / "cache")}
    data, out = tmp_path / "banks", tmp_path / "out"
    steps = [
        ["data", "make", "tabular", "--out", str(data), "--scale", "0.1"],
        ["site", "check", "--domain", "tabular", "--data", str(data)],
        [
            "run",
            "tabular",
            "--data",
            str(data),
            "--engine",
            "inprocess",
            "--rounds",
            "2",
            "--set",
            "local-epochs=1",
            "--out",
            str(out),
            "--quiet",
            "--no-report",
        ],
    ]
    script = (
        "import sys\nfrom flcore.cli import main\n"
        f"for argv in {steps!r}:\n"
        "    code = main(argv)\n"
        "    if code:\n"
        "        sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing blocks training" in done.stdout and "Traceback" not in done.stderr
    bank = "bank_north"
    new = tmp_path / "new" / "transactions.csv"
    new.parent.mkdir()
    pd.read_csv(data / bank / "transactions.csv").drop(columns=[LABEL]).to_csv(new, index=False)
    flsuite = Path(sys.executable).with_name("flsuite")
    predict = [str(flsuite), "predict", str(out), "--data", str(new), "--out", str(tmp_path / "scores.csv")]
    done = subprocess.run(predict, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "scored" in done.stdout
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores.columns) == ["record", "score", "decision"] and len(scores) == len(pd.read_csv(new))
    recorded = pd.read_csv(out / "models" / "test_scores.csv")
    recorded = recorded[recorded.site == bank]
    joined = recorded.merge(scores, on="record", validate="one_to_one")
    assert len(joined) == len(recorded) > 0
    np.testing.assert_allclose(joined["score"], joined["federated"], rtol=0, atol=ATOL)
    threshold = json.loads((out / "models" / "federated" / "manifest.json").read_text())["threshold"]["value"]
    np.testing.assert_array_equal(scores["decision"], (scores["score"] >= threshold).astype(int))
