"""A table's own schema (schema.toml) and the table adapter that reads any table through it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.tabular.synthetic import NUMERIC, SCHEMA_TEXT, bank_table
from flcore.data import schematable
from flcore.data.schema import SCHEMA_FILE, TableSchema, find_schema
from flcore.data.schematable import SchemaTableAdapter
from flcore.data.site import UNLABELLED
from flcore.exceptions import DataValidationError
from flcore.governance.policy import site_drop_columns


def write_schema(tmp_path: Path, text: str, name: str = "schema.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def transactions(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """A small bank export: two numbers, a text category, a yes/no label (every fourth row positive)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(50, 10, n).round(2),
            "age": rng.integers(18, 90, n).astype(float),
            "merchant_category": rng.choice(["fuel", "grocery", "travel"], n),
            "is_fraud": ["yes" if i % 4 == 0 else "no" for i in range(n)],
        }
    )


def write_site(root: Path, frame: pd.DataFrame, name: str = "transactions.csv", site: str = "bank") -> Path:
    folder = root / site
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return folder


YES_NO = TableSchema(label="is_fraud", positive="yes", negative="no", categorical=("merchant_category",))


# -- parsing schema.toml ------------------------------------------------------------------


def test_a_valid_schema_file_is_read_with_every_key(tmp_path: Path) -> None:
    path = write_schema(
        tmp_path,
        'label = "is_fraud"\npositive = "fraud"\nnegative = "legit"\nfeatures = ["amount", "merchant"]\n'
        'exclude = ["note"]\ncategorical = ["merchant"]\ndrop = ["transaction_id"]\nmissing = "impute"\n'
        'consent = "consented"\n',
    )
    schema = TableSchema.load(path)
    assert schema.label == "is_fraud" and schema.positive == "fraud" and schema.negative == "legit"
    assert schema.features == ("amount", "merchant") and schema.categorical == ("merchant",)
    assert schema.exclude == ("note",) and schema.drop == ("transaction_id",)
    assert schema.missing == "impute" and schema.consent == "consented"
    assert schema.source == str(path)


def test_defaults_and_numbers_as_text(tmp_path: Path) -> None:
    schema = TableSchema.load(write_schema(tmp_path, "positive = 1\n"))
    assert (schema.label, schema.positive, schema.negative, schema.missing) == ("label", "1", "0", "refuse")
    assert schema.features == () and schema.consent is None
    # A positive other than 1 has no default negative: any other value is negative.
    assert TableSchema.from_dict({"positive": "yes"}).negative is None
    assert TableSchema.from_dict({"positive": 2.0}).positive == "2"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('labels = "is_fraud"\n', "labels", r"unknown key 'labels'"),
        ('features = "amount"\n', "features", r"'features' must be a list of column names"),
        ("categorical = [1, 2]\n", "categorical", r"'categorical' must be a list of column names"),
        ('drop = ["id", "id"]\n', "drop", r"'drop' names a column twice"),
        ("label = []\n", "label", r"'label' must be a non-empty text or number"),
        ('label = "  "\n', "label", r"'label' must be a non-empty text or number"),
        ('consent = ["c"]\n', "consent", r"'consent' must be a non-empty text or number"),
        ('missing = "drop"\n', "missing", r"'missing' must be one of refuse, impute"),
        ('positive = "Yes"\nnegative = "yes"\n', "negative", r"'positive' and 'negative' are the same value"),
        ('positive = 1\nnegative = "1.0"\n', "negative", r"'positive' and 'negative' are the same value"),
        (
            'features = ["amount"]\ncategorical = ["merchant"]\n',
            "categorical",
            r"'categorical' lists 'merchant', which is not in 'features'",
        ),
        ('label = "y"\nfeatures = ["a", "y"]\n', "features", r"'features' lists 'y', which is also the label"),
        ('drop = ["m"]\ncategorical = ["m"]\n', "categorical", r"'categorical' lists 'm'"),
    ],
    ids=[
        "unknown-key",
        "features-not-list",
        "categorical-not-names",
        "drop-twice",
        "label-list",
        "label-blank",
        "consent-list",
        "missing-rule",
        "positive-is-negative",
        "positive-is-negative-numbers",
        "categorical-outside-features",
        "label-as-feature",
        "dropped-category",
    ],
)
def test_a_bad_schema_is_refused_naming_the_file_and_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write_schema(tmp_path, text)
    with pytest.raises(DataValidationError, match=message) as err:
        TableSchema.load(path)
    assert err.value.field == key
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"Invalid data in {path}, field '{key}': ")


def test_a_schema_that_is_not_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write_schema(tmp_path, 'label = "is_fraud\npositive = 1\n')
    with pytest.raises(DataValidationError, match=r"the schema is not valid TOML .*Fix the syntax") as err:
        TableSchema.load(path)
    assert err.value.path == str(path)
    with pytest.raises(DataValidationError, match="the schema file does not exist"):
        TableSchema.load(tmp_path / "nowhere.toml")


def test_find_schema_prefers_the_setting_then_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert find_schema("", data) is None and find_schema("", None) is None
    write_schema(data, 'label = "in_folder"\n', SCHEMA_FILE)
    named = write_schema(tmp_path, 'label = "named"\n', "mine.toml")
    assert find_schema("", data).label == "in_folder"  # type: ignore[union-attr]
    assert find_schema(str(named), data).label == "named"  # type: ignore[union-attr]
    with pytest.raises(DataValidationError, match="does not exist"):
        find_schema(str(tmp_path / "missing.toml"), data)


def test_label_values_compare_as_numbers_or_case_folded_text() -> None:
    numbers = TableSchema.from_dict({"positive": 1})
    assert numbers.is_positive(1) is True and numbers.is_positive("1.0") is True and numbers.is_positive(1.0) is True
    assert numbers.is_positive(0) is False and numbers.is_positive("0") is False
    assert numbers.is_positive(2) is None and numbers.is_positive("") is None and numbers.is_positive(np.nan) is None
    words = TableSchema.from_dict({"positive": "Fraud"})
    assert words.is_positive(" fraud ") is True and words.is_positive("legit") is False
    assert words.is_positive(None) is None  # no negative named: any value but an empty one is negative
    flags = TableSchema.from_dict({"positive": True})
    assert flags.is_positive(True) is True and flags.is_positive(np.bool_(False)) is False


# -- reading tables through a schema ----------------------------------------------------------


def test_a_yes_no_label_named_is_fraud(tmp_path: Path) -> None:
    frame = transactions()
    frame.loc[4, "is_fraud"] = " YES "
    site = SchemaTableAdapter(YES_NO).read(write_site(tmp_path, frame))
    expected = frame["is_fraud"].str.strip().str.lower().eq("yes").astype(int).to_numpy()
    np.testing.assert_array_equal(site.y, expected)
    assert site.info["raw_columns"] == ["amount", "age", "merchant_category"]
    assert list(site.ids) == [f"transactions.csv:{i + 1}" for i in range(len(frame))]
    np.testing.assert_allclose(site.x[:, 0], frame["amount"], rtol=1e-6)
    # Categories arrive as the site's own codes into its own list of categories.
    vocab = site.info["vocab"]["merchant_category"]
    assert [vocab[int(c)] for c in site.x[:, 2]] == list(frame["merchant_category"])


def test_a_label_that_is_neither_value_is_refused_or_dropped(tmp_path: Path) -> None:
    frame = transactions()
    frame.loc[2, "is_fraud"] = "maybe"
    folder = write_site(tmp_path, frame)
    adapter = SchemaTableAdapter(YES_NO)
    with pytest.raises(DataValidationError, match=r"row 3: .*is_fraud.*'yes'") as err:
        adapter.read(folder)
    assert err.value.field == "is_fraud" and err.value.path.endswith("transactions.csv")
    lenient = adapter.read(folder, strict=False)
    assert len(lenient) == len(frame) - 1 and lenient.info["skipped"]["invalid"] == 1
    assert "transactions.csv:3" not in set(lenient.ids)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("positive", [True, 1])
def test_boolean_labels(tmp_path: Path, fmt: str, positive: object) -> None:
    frame = transactions()
    frame["is_fraud"] = frame["is_fraud"].eq("yes")
    folder = write_site(tmp_path, frame, f"transactions.{fmt}")
    schema = TableSchema.from_dict({"label": "is_fraud", "positive": positive, "categorical": ["merchant_category"]})
    site = SchemaTableAdapter(schema).read(folder)
    np.testing.assert_array_equal(site.y, frame["is_fraud"].astype(int).to_numpy())


def test_a_feature_the_schema_lists_but_the_table_lacks_is_refused_by_name(tmp_path: Path) -> None:
    folder = write_site(tmp_path, transactions())
    schema = TableSchema(label="is_fraud", positive="yes", negative="no", features=("amount", "balance", "age"))
    with pytest.raises(DataValidationError, match=r"feature column 'balance' is not in the table") as err:
        SchemaTableAdapter(schema).read(folder)
    assert err.value.field == "balance"


def test_an_explicit_feature_list_reads_only_those_columns_in_its_order(tmp_path: Path) -> None:
    folder = write_site(tmp_path, transactions())
    schema = TableSchema(label="is_fraud", positive="yes", negative="no", features=("age", "amount"))
    site = SchemaTableAdapter(schema).read(folder)
    assert site.info["raw_columns"] == ["age", "amount"] and site.x.shape == (12, 2)


def test_text_in_a_number_column_is_refused_with_the_categorical_fix(tmp_path: Path) -> None:
    frame = transactions().astype({"amount": object})
    frame.loc[3, "amount"] = "12,50"
    with pytest.raises(DataValidationError, match=r"expected numbers but found .* in row 4\..*'categorical'") as err:
        SchemaTableAdapter(YES_NO).read(write_site(tmp_path, frame))
    assert err.value.field == "amount"
    assert "12,50" not in str(err.value)  # a cell's value is never shown


def test_a_category_may_be_a_number_code(tmp_path: Path) -> None:
    frame = transactions()
    frame["mcc"] = [5411, 5812, 5411.0, 4111] * 3
    schema = TableSchema(label="is_fraud", positive="yes", negative="no", categorical=("merchant_category", "mcc"))
    site = SchemaTableAdapter(schema).read(write_site(tmp_path, frame))
    assert sorted(site.info["vocab"]["mcc"]) == ["4111", "5411", "5812"]  # 5411 and 5411.0 are one category


def test_a_missing_value_is_refused_naming_row_and_column_and_dropped_when_lenient(tmp_path: Path) -> None:
    frame = transactions()
    frame.loc[[4, 7], "age"] = np.nan
    folder = write_site(tmp_path, frame)
    adapter = SchemaTableAdapter(YES_NO)  # missing = "refuse" by default
    with pytest.raises(DataValidationError, match=r"row 5: .*'age'.*missing|row 5: missing .*'age'") as err:
        adapter.read(folder)
    assert err.value.field == "age" and 'missing = "impute"' in str(err.value)
    lenient = adapter.read(folder, strict=False)
    assert len(lenient) == len(frame) - 2 and lenient.info["skipped"]["invalid"] == 2
    assert not np.isnan(lenient.x).any()
    assert {"transactions.csv:5", "transactions.csv:8"}.isdisjoint(lenient.ids)


def test_a_missing_category_is_refused_too_unless_imputed(tmp_path: Path) -> None:
    frame = transactions()
    frame.loc[6, "merchant_category"] = None
    folder = write_site(tmp_path, frame)
    with pytest.raises(
        DataValidationError, match=r"row 7: .*'merchant_category'.*missing|row 7: missing .*'merchant_category'"
    ):
        SchemaTableAdapter(YES_NO).read(folder)
    imputing = TableSchema(
        label="is_fraud", positive="yes", negative="no", categorical=("merchant_category",), missing="impute"
    )
    site = SchemaTableAdapter(imputing).read(folder)
    assert len(site) == len(frame) and np.isnan(site.x[6, 2]) and site.info["missing_rule"] == "impute"
    assert None not in site.info["vocab"]["merchant_category"]


def test_an_identifier_column_is_refused_unless_dropped(tmp_path: Path) -> None:
    frame = transactions()
    frame.insert(0, "card_number", [f"4111-0000-0000-{i:04d}" for i in range(len(frame))])
    folder = write_site(tmp_path, frame)
    with pytest.raises(DataValidationError, match=r"column 'card_number' looks like a direct identifier") as err:
        SchemaTableAdapter(YES_NO).read(folder)
    assert err.value.field == "card_number"
    assert "4111" not in str(err.value)
    dropping = TableSchema(
        label="is_fraud", positive="yes", negative="no", categorical=("merchant_category",), drop=("card_number",)
    )
    assert "card_number" not in SchemaTableAdapter(dropping).read(folder).info["raw_columns"]
    by_policy = SchemaTableAdapter(YES_NO, drop_columns=lambda _: ["card_number"])
    assert "card_number" not in by_policy.read(folder).info["raw_columns"]


def test_the_policy_beside_a_scored_file_drops_its_identifier_column(tmp_path: Path) -> None:
    frame = transactions()
    frame.insert(0, "card_number", [f"c{i}" for i in range(len(frame))])
    folder = write_site(tmp_path, frame)
    adapter = SchemaTableAdapter(YES_NO, drop_columns=lambda d: list(site_drop_columns(d)))
    with pytest.raises(DataValidationError, match=re.escape(str(folder / "policy.toml"))):
        adapter.read_unlabelled(folder / "transactions.csv")
    (folder / "policy.toml").write_text('drop_columns = ["card_number"]\n')
    assert len(adapter.read_unlabelled(folder)) == len(frame)  # the folder: its policy drops the column
    assert len(adapter.read_unlabelled(folder / "transactions.csv")) == len(frame)  # the file in it: refused


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_dropped_columns_are_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    frame = transactions()
    frame["note"] = "free text that is no number"
    folder = write_site(tmp_path, frame, f"transactions.{fmt}")
    with pytest.raises(DataValidationError, match="expected numbers"):
        SchemaTableAdapter(YES_NO).read(folder)  # as a feature, the column would be refused
    seen: list[list[str]] = []
    real = schematable.read_table

    def spy(*args: object, **kwargs: object) -> pd.DataFrame:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(list(out.columns))
        return out

    monkeypatch.setattr(schematable, "read_table", spy)
    schema = TableSchema(
        label="is_fraud", positive="yes", negative="no", categorical=("merchant_category",), drop=("note",)
    )
    site = SchemaTableAdapter(schema).read(folder)
    assert seen and all("note" not in cols for cols in seen)
    assert site.info["raw_columns"] == ["amount", "age", "merchant_category"]


def test_records_without_consent_are_dropped_and_counted(tmp_path: Path) -> None:
    frame = transactions()
    frame["consented"] = ["no" if i in (1, 2, 9) else "yes" for i in range(len(frame))]
    folder = write_site(tmp_path, frame)
    schema = TableSchema(
        label="is_fraud", positive="yes", negative="no", categorical=("merchant_category",), consent="consented"
    )
    site = SchemaTableAdapter(schema).read(folder)
    assert len(site) == len(frame) - 3 and site.info["skipped"]["no_consent"] == 3
    assert "consented" not in site.info["raw_columns"] and site.info["consent_recorded"] is True
    assert {"transactions.csv:2", "transactions.csv:3", "transactions.csv:10"}.isdisjoint(site.ids)
    # Training needs the consent column the schema names.
    write_site(tmp_path, frame.drop(columns=["consented"]), site="bank_2")
    with pytest.raises(DataValidationError, match="consented"):
        SchemaTableAdapter(schema).read(tmp_path / "bank_2")


@pytest.mark.parametrize("n_features", [1, 20, 57])
def test_any_number_of_features(tmp_path: Path, n_features: int) -> None:
    rng = np.random.default_rng(n_features)
    frame = pd.DataFrame(rng.normal(size=(30, n_features)), columns=[f"v{i:02d}" for i in range(n_features)])
    frame["label"] = np.arange(30) % 3 == 0
    site = SchemaTableAdapter(TableSchema()).read(write_site(tmp_path, frame.astype({"label": int})))
    assert site.x.shape == (30, n_features) and site.info["raw_columns"] == list(frame.columns[:-1])


def test_the_banks_export_reads_with_its_schema_file(tmp_path: Path) -> None:
    frame = bank_table(200, 0.05, 0.0, np.random.default_rng(0))
    folder = write_site(tmp_path, frame)
    schema = TableSchema.load(write_schema(tmp_path, SCHEMA_TEXT))
    site = SchemaTableAdapter(schema).read(folder)
    assert site.info["raw_columns"] == [*NUMERIC, "merchant_category"] and site.x.shape == (200, 21)
    assert int(site.y.sum()) == int(frame["is_fraud"].sum())


def test_files_of_a_site_must_have_the_same_columns(tmp_path: Path) -> None:
    frame = transactions()
    folder = write_site(tmp_path, frame.iloc[:6], "a.csv")
    write_site(tmp_path, frame.iloc[6:], "b.csv")
    site = SchemaTableAdapter(YES_NO).read(folder)
    assert list(site.ids) == [f"a.csv:{i}" for i in range(1, 7)] + [f"b.csv:{i}" for i in range(1, 7)]
    write_site(tmp_path, frame.iloc[6:].assign(extra=1.0), "b.csv")
    with pytest.raises(DataValidationError, match=r"its feature columns differ from those of a\.csv") as err:
        SchemaTableAdapter(YES_NO).read(folder)
    assert err.value.path.endswith("b.csv")


def test_records_to_score_need_no_label(tmp_path: Path) -> None:
    frame = transactions()
    folder = write_site(tmp_path, frame.drop(columns=["is_fraud"]))
    adapter = SchemaTableAdapter(YES_NO)
    with pytest.raises(DataValidationError, match=re.escape("there is no 'is_fraud' column")):
        adapter.read(folder)
    unlabelled = adapter.read_unlabelled(folder / "transactions.csv")
    assert (unlabelled.y == UNLABELLED).all() and len(unlabelled) == len(frame)
    labelled = adapter.from_frame(frame)
    np.testing.assert_array_equal(labelled.y, frame["is_fraud"].eq("yes").astype(int))
    np.testing.assert_array_equal(labelled.x[:, :2], unlabelled.x[:, :2])
