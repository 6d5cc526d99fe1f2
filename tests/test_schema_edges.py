"""Edges of reading tables through a schema, and of the schema travelling with a run: typos, empty labels, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from tabular_run import HELD_OUT, LABEL, TabularRun, tabular_run

from flcore import scenario as registry
from flcore.cli import main
from flcore.data.schema import TableSchema
from flcore.data.schematable import SchemaTableAdapter
from flcore.data.site import UNLABELLED
from flcore.exceptions import DataValidationError
from flcore.federation.plan import plan_from_run_config
from flcore.learning.artifact import MANIFEST, manifest_digest, read_model
from flcore.serving.evaluate import evaluate_model
from flcore.serving.model import load_model


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TabularRun:
    return tabular_run(tmp_path_factory)


def _site(tmp_path: Path, frame: pd.DataFrame, suffix: str = ".parquet") -> Path:
    folder = tmp_path / "bank"
    folder.mkdir(exist_ok=True)
    path = folder / f"t{suffix}"
    frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(path, index=False)
    return folder


def _frame(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame({"amount": [float(i) for i in range(n)], "y": [i % 2 == 0 for i in range(n)]})


def test_an_empty_label_in_a_nullable_boolean_column_is_no_negative(tmp_path: Path) -> None:
    frame = _frame()
    frame["y"] = pd.array([True, False, pd.NA, False, True, False, True, False], dtype="boolean")
    folder = _site(tmp_path, frame)
    adapter = SchemaTableAdapter(TableSchema(label="y", positive="true", negative=None))
    with pytest.raises(DataValidationError, match=r"row 3: 'y' is an empty value") as err:
        adapter.read(folder)
    assert err.value.field == "y"
    lenient = adapter.read(folder, strict=False)
    assert len(lenient) == 7 and lenient.info["skipped"]["invalid"] == 1


def test_a_positive_value_that_no_row_holds_is_refused_as_a_likely_typo(tmp_path: Path) -> None:
    folder = _site(tmp_path, pd.DataFrame({"amount": [1.0, 2.0, 3.0], "y": ["no", "no", "yes"]}))
    adapter = SchemaTableAdapter(TableSchema(label="y", positive="Y-E-S", negative=None))
    with pytest.raises(DataValidationError, match=r"no row of 'y' holds the schema's positive value 'Y-E-S'.*no, yes"):
        adapter.read(folder)


@pytest.mark.parametrize("key", ["categorical", "exclude"])
def test_a_categorical_or_excluded_column_the_table_lacks_is_named(tmp_path: Path, key: str) -> None:
    folder = _site(tmp_path, pd.DataFrame({"amount": [1.0, 2.0], "merchant": ["a", "b"], "y": [1, 0]}))
    schema = TableSchema.from_dict(
        {
            "label": "y",
            key: ["Merchant"],
            **({"exclude": ["merchant"]} if key == "categorical" else {"categorical": ["merchant"]}),
        }
    )
    with pytest.raises(DataValidationError, match=rf"schema's {key} column 'Merchant' is not in the table") as err:
        SchemaTableAdapter(schema).read(folder)
    assert err.value.field == "Merchant"


@pytest.mark.parametrize("key", ["drop", "exclude"])
def test_the_label_cannot_be_dropped_or_excluded(key: str) -> None:
    with pytest.raises(DataValidationError, match="'y' is the label or consent column"):
        TableSchema.from_dict({"label": "y", key: ["y"]})


def test_scoring_refuses_a_filled_in_wrong_label_but_takes_an_empty_one_as_unknown(tmp_path: Path) -> None:
    schema = TableSchema(label="y")
    empty = _site(tmp_path, pd.DataFrame({"amount": [1.0, 2.0, 3.0], "y": [1, None, 0]}), ".csv")
    site = SchemaTableAdapter(schema).read_unlabelled(empty)
    assert site.y.tolist() == [1, UNLABELLED, 0]
    (empty / "t.csv").write_text("amount,y\n1,1\n2,5\n")
    with pytest.raises(DataValidationError, match=r"row 2: 'y' is 5, expected '1' \(positive\) or '0' \(negative\)"):
        SchemaTableAdapter(schema).read_unlabelled(empty / "t.csv")


def test_a_frame_to_score_may_carry_the_columns_the_schema_drops() -> None:
    schema = TableSchema(label="y", drop=("customer_name",))
    frame = pd.DataFrame({"customer_name": ["A B", "C D"], "amount": [1.0, 2.0]})
    site = SchemaTableAdapter(schema).from_frame(frame)
    assert site.info["raw_columns"] == ["amount"]


def test_a_file_that_is_no_table_is_named_when_scoring(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text("amount\n1\n")
    with pytest.raises(DataValidationError, match=r"expected a site folder or a \.csv / \.parquet table"):
        SchemaTableAdapter(TableSchema()).read_unlabelled(path)


def test_the_schema_found_beside_the_data_is_carried_in_the_settings_and_the_plan(run: TabularRun) -> None:
    results = json.loads((run.out / "results.json").read_text())
    carried = TableSchema.from_dict(json.loads(results["params"]["schema"]))
    assert carried.label == LABEL and carried.categorical == ("merchant_category",)
    # `flwr run` over the same folders settles the same schema, so its sites read what the coordinator planned.
    plan, _ = plan_from_run_config({"scenario": "tabular", "data-dir": str(run.data)})
    assert json.loads(plan.params.schema) == json.loads(results["params"]["schema"])
    sc = registry.get("tabular")
    assert sc.adapter_for(plan.params, None).schema.label == LABEL


def test_evaluate_takes_one_table_file(run: TabularRun) -> None:
    model = load_model(run.out)
    doc = evaluate_model(model, run.table(HELD_OUT))
    assert list(doc["per_site"]) == ["transactions"] and doc["data"]["sites"]["transactions"]["n"] == len(
        run.frame(HELD_OUT)
    )


def test_a_missing_model_folder_and_a_manifest_without_weights_are_named(run: TabularRun, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="the model folder does not exist"):
        load_model(tmp_path / "nowhere")
    manifest, _ = read_model(run.models / "federated")
    copy = tmp_path / "copy"
    copy.mkdir()
    forged = {**manifest, "files": {}}
    forged["digest"] = manifest_digest(forged)
    (copy / MANIFEST).write_text(json.dumps(forged))
    with pytest.raises(DataValidationError, match=r"lists no model\.safetensors"):
        load_model(copy)


def test_predict_names_a_missing_model_folder_without_a_traceback(
    run: TabularRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["predict", str(tmp_path / "nowhere"), "--data", str(run.table(HELD_OUT)), "--out", str(tmp_path / "s.csv")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_a_categorical_column_of_near_unique_values_is_refused_before_its_set_is_disclosed(tmp_path: Path) -> None:
    frame = pd.DataFrame({"store": [f"{10000 + i}" for i in range(30)], "amount": 1.0, "y": [i % 2 for i in range(30)]})
    folder = _site(tmp_path, frame)
    schema = TableSchema.from_dict({"label": "y", "categorical": ["store"], "max_categories": 20})
    with pytest.raises(DataValidationError, match=r"30 different values, more than the schema's max_categories \(20\)"):
        SchemaTableAdapter(schema).read(folder)
    assert len(SchemaTableAdapter(TableSchema.from_dict({"label": "y", "categorical": ["store"]})).read(folder)) == 30
