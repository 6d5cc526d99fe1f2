"""Federated preprocessing of schema tables: from per-site statistics, the same encoding as pooled rows by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tabular_run import TRAINED, tabular_run

from flcore.config import RunConfig, apply_settings
from flcore.data.preprocess import MISSING_CATEGORY, Preprocessing, federated_preprocessing, summarise
from flcore.data.schema import TableSchema
from flcore.data.schematable import SchemaTableAdapter
from flcore.data.site import SiteData, SiteSplit, split_site
from flcore.exceptions import DataValidationError

SCHEMA = TableSchema(label="is_fraud", positive="1", categorical=("merchant",), missing="impute")
NUMBERS = ["amount", "age"]


def site_frame(n: int, seed: int, categories: list[str], gaps: dict[str, float]) -> pd.DataFrame:
    """One bank's rows: two numbers and a category drawn from ``categories`` (first rows in that order), with gaps."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(50 + 10 * seed, 15, n).round(2),
            "age": rng.integers(18, 90, n).astype(float),
            "merchant": [categories[i] if i < len(categories) else rng.choice(categories) for i in range(n)],
            "is_fraud": (rng.random(n) < 0.3).astype(int),
        }
    )
    for column, share in gaps.items():
        rows = np.flatnonzero(rng.random(n) < share)
        frame.loc[rows[rows >= len(categories)], column] = None  # the first rows stay whole
    return frame


@pytest.fixture
def sites(tmp_path: Path) -> dict[str, pd.DataFrame]:
    """Three banks with different category sets (seen in different orders) and gaps in different columns."""
    frames = {
        "bank_a": site_frame(60, 1, ["grocery", "fuel"], {"amount": 0.1}),
        "bank_b": site_frame(50, 2, ["travel", "grocery", "atm"], {"merchant": 0.1}),
        "bank_c": site_frame(40, 3, ["atm", "casino_free", "fuel"], {"age": 0.15, "amount": 0.05}),
    }
    for name, frame in frames.items():
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "transactions.csv", index=False)
    return frames


def read_splits(tmp_path: Path, names: list[str], schema: TableSchema = SCHEMA) -> list[SiteSplit]:
    adapter = SchemaTableAdapter(schema)
    return [split_site(adapter.read(tmp_path / name), 0.3, seed=0, val_fraction=0.2) for name in names]


def rows_of(part: SiteData, frame: pd.DataFrame) -> pd.DataFrame:
    """The table rows a split holds, from its ids (``transactions.csv:ROW``, 1-based)."""
    return frame.iloc[[int(str(i).split(":")[1]) - 1 for i in part.ids]]


def by_hand(pooled: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Pooled training rows' means of present values, and the sorted union of categories (+ missing when any)."""
    means = {c: float(pooled[c].mean()) for c in NUMBERS}
    categories = set(pooled["merchant"].dropna())
    if pooled["merchant"].isna().any():
        categories.add(MISSING_CATEGORY)
    return means, sorted(categories)


def encode_by_hand(rows: pd.DataFrame, means: dict[str, float], categories: list[str]) -> np.ndarray:
    numbers = np.stack([rows[c].fillna(means[c]).to_numpy(dtype=float) for c in NUMBERS], axis=1)
    onehot = np.zeros((len(rows), len(categories)))
    for i, value in enumerate(rows["merchant"]):
        key = MISSING_CATEGORY if pd.isna(value) else value
        if key in categories:
            onehot[i, categories.index(key)] = 1.0
    return np.concatenate([numbers, onehot], axis=1)


def test_federated_preprocessing_equals_preprocessing_by_hand_on_pooled_training_rows(
    tmp_path: Path, sites: dict[str, pd.DataFrame]
) -> None:
    splits = read_splits(tmp_path, list(sites))
    encoded, prep, summaries = federated_preprocessing(splits)
    assert prep is not None and [s.site for s in summaries] == list(sites)
    pooled = pd.concat([rows_of(s.train, sites[s.name]) for s in splits])
    assert pooled["amount"].isna().any() and pooled["age"].isna().any()  # the gaps reached training rows
    means, categories = by_hand(pooled)
    assert MISSING_CATEGORY in categories and len(categories) == 6  # five seen categories and <missing>
    assert prep.categories == {"merchant": categories}
    assert prep.impute == pytest.approx(means, rel=1e-6)
    assert prep.feature_names == [*NUMBERS, *(f"merchant={c}" for c in categories)]
    for raw, done in zip(splits, encoded, strict=True):
        for part in ("train", "val", "test"):
            expected = encode_by_hand(rows_of(getattr(raw, part), sites[raw.name]), means, categories)
            got = getattr(done, part)
            assert got.x.shape == expected.shape and got.info["feature_names"] == prep.feature_names
            np.testing.assert_allclose(got.x, expected, rtol=1e-5, atol=1e-6, err_msg=f"{raw.name} {part}")
            np.testing.assert_array_equal(got.y, getattr(raw, part).y)
            np.testing.assert_array_equal(got.ids, getattr(raw, part).ids)


def test_each_site_discloses_counts_sums_and_category_sets_of_its_training_rows(
    tmp_path: Path, sites: dict[str, pd.DataFrame]
) -> None:
    for split in read_splits(tmp_path, list(sites)):
        rows = rows_of(split.train, sites[split.name])
        summary = summarise(split.train)
        assert summary.rows == len(rows)
        for c in NUMBERS:
            count, total = summary.numeric[c]
            assert count == rows[c].notna().sum() and total == pytest.approx(rows[c].sum(), rel=1e-6)
        assert summary.missing == {c: int(rows[c].isna().sum()) for c in [*NUMBERS, "merchant"]}
        assert summary.categories == {"merchant": sorted(set(rows["merchant"].dropna()))}
        assert set(summary.to_json()) == {"site", "rows", "numeric_count_and_sum", "missing_counts", "category_sets"}


def test_site_local_category_codes_differ_but_encode_alike(tmp_path: Path, sites: dict[str, pd.DataFrame]) -> None:
    adapter = SchemaTableAdapter(SCHEMA)
    a, b = adapter.read(tmp_path / "bank_a"), adapter.read(tmp_path / "bank_b")
    assert a.info["vocab"]["merchant"][:2] == ["grocery", "fuel"]
    assert b.info["vocab"]["merchant"][:3] == ["travel", "grocery", "atm"]
    assert a.x[0, 2] != b.x[1, 2]  # grocery: code 0 at bank_a, code 1 at bank_b
    prep = Preprocessing.fit([summarise(a), summarise(b)], ["amount", "age", "merchant"], "impute")
    ea, eb = prep.transform(a), prep.transform(b)
    column = prep.feature_names.index("merchant=grocery")
    np.testing.assert_array_equal(ea.x[0, 2:], eb.x[1, 2:])
    assert ea.x[0, column] == 1.0 and ea.x[0, 2:].sum() == 1.0


def test_an_unseen_category_encodes_as_zeros_and_is_counted(tmp_path: Path, sites: dict[str, pd.DataFrame]) -> None:
    splits = read_splits(tmp_path, ["bank_a", "bank_b"])
    _, prep, _ = federated_preprocessing(splits)
    assert prep is not None
    new = pd.DataFrame(
        {
            "amount": [10.0, 20.0, 30.0],
            "age": [30.0, 40.0, 50.0],
            "merchant": ["lottery", "grocery", "lottery"],
            "is_fraud": [0, 1, 0],
        }
    )
    site = prep.transform(SchemaTableAdapter(SCHEMA).from_frame(new))
    block = site.x[:, len(NUMBERS) :]
    assert site.info["unseen_categories"] == 2
    np.testing.assert_array_equal(block[[0, 2]], 0.0)
    assert block[1, prep.categories["merchant"].index("grocery")] == 1.0 and block[1].sum() == 1.0


def test_transform_refuses_another_schemas_columns(tmp_path: Path, sites: dict[str, pd.DataFrame]) -> None:
    _, prep, _ = federated_preprocessing(read_splits(tmp_path, ["bank_a", "bank_b"]))
    assert prep is not None
    other = pd.DataFrame({"amount": [1.0, 2.0], "balance": [3.0, 4.0], "merchant": ["fuel", "atm"], "is_fraud": [0, 1]})
    with pytest.raises(
        DataValidationError,
        match=r"not the ones the model was trained on \(missing 'age'; not the model's: 'balance'\)",
    ):
        prep.transform(SchemaTableAdapter(SCHEMA).from_frame(other))
    shuffled = other.drop(columns=["balance"]).assign(age=[30.0, 40.0])  # the same columns, another order
    with pytest.raises(DataValidationError, match="the same columns in another order"):
        prep.transform(SchemaTableAdapter(SCHEMA).from_frame(shuffled))


def test_a_column_empty_at_every_site_is_refused(tmp_path: Path, sites: dict[str, pd.DataFrame]) -> None:
    for name, frame in sites.items():
        frame.assign(balance=np.nan).to_csv(tmp_path / name / "transactions.csv", index=False)
    with pytest.raises(DataValidationError, match="empty at every site") as err:
        federated_preprocessing(read_splits(tmp_path, list(sites)))
    assert err.value.field == "balance"
    # Empty at one site only: the others' values give the mean.
    sites["bank_a"].assign(balance=1.5).to_csv(tmp_path / "bank_a" / "transactions.csv", index=False)
    _, prep, _ = federated_preprocessing(read_splits(tmp_path, list(sites)))
    assert prep is not None and prep.impute["balance"] == pytest.approx(1.5)


def test_missing_values_are_refused_at_prediction_when_the_schema_refuses_them(
    tmp_path: Path, sites: dict[str, pd.DataFrame]
) -> None:
    refusing = TableSchema(label="is_fraud", positive="1", categorical=("merchant",))
    full = {n: f.dropna() for n, f in sites.items()}
    for name, frame in full.items():
        frame.to_csv(tmp_path / name / "transactions.csv", index=False)
    _, prep, _ = federated_preprocessing(read_splits(tmp_path, list(full), refusing))
    assert prep is not None and prep.missing == "refuse" and prep.impute == {}
    assert MISSING_CATEGORY not in prep.categories["merchant"]
    new = pd.DataFrame({"amount": [10.0, None], "age": [30.0, 40.0], "merchant": ["fuel", "atm"]})
    new.to_csv(tmp_path / "new.csv", index=False)
    # The adapter refuses the record first, naming its row and column ...
    with pytest.raises(DataValidationError, match=r"row 2: .*'amount'.*missing|row 2: missing .*'amount'") as err:
        SchemaTableAdapter(refusing).read_unlabelled(tmp_path / "new.csv")
    assert err.value.field == "amount"
    # ... and the preprocessing refuses a missing number it has no mean for.
    raw = SchemaTableAdapter(SCHEMA).read_unlabelled(tmp_path / "new.csv")
    with pytest.raises(DataValidationError, match=r"1 missing value\(s\), and the model's schema refuses") as err:
        prep.transform(raw)
    assert err.value.field == "amount"


# -- what a run records ----------------------------------------------------------------------


def test_results_record_what_each_site_disclosed_for_preprocessing(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = tabular_run(tmp_path_factory)
    results = json.loads((run.out / "results.json").read_text())
    section = results["governance"]["preprocessing"]
    disclosed = {d["site"]: d for d in section["disclosed"]}
    assert sorted(disclosed) == sorted(TRAINED)
    n_train = {s["name"]: s["n_train"] for s in results["data"]["sites"]}
    cfg = apply_settings(RunConfig(), results["config"])
    schema = TableSchema.load(run.data / "schema.toml")
    numbers = [c for c in section["result"]["columns"] if c not in schema.categorical]
    scores = run.test_scores()
    for bank in TRAINED:
        frame = run.frame(bank)
        # The run's own split of the bank, reproduced: its test rows are those test_scores.csv lists.
        split = split_site(
            SchemaTableAdapter(schema).read(run.data / bank), cfg.test_fraction, cfg.seed, cfg.val_fraction
        )
        assert sorted(split.test.ids) == sorted(scores.loc[scores.site == bank, "record"])
        train = rows_of(split.train, frame)
        d = disclosed[bank]
        assert set(d) == {"site", "rows", "numeric_count_and_sum", "missing_counts", "category_sets"}
        assert d["rows"] == n_train[bank] == len(train)
        assert sorted(d["numeric_count_and_sum"]) == sorted(numbers)
        for c in numbers:
            assert d["numeric_count_and_sum"][c]["count"] == train[c].notna().sum()
            assert d["numeric_count_and_sum"][c]["sum"] == pytest.approx(train[c].sum(), rel=1e-6, abs=1e-6)
            assert d["missing_counts"][c] == train[c].isna().sum()
        assert d["missing_counts"]["merchant_category"] == train["merchant_category"].isna().sum()
        assert d["category_sets"] == {"merchant_category": sorted(set(train["merchant_category"].dropna()))}
    # The federation's means are the disclosed sums over the disclosed counts, nothing else.
    for c in numbers:
        count = sum(d["numeric_count_and_sum"][c]["count"] for d in disclosed.values())
        total = sum(d["numeric_count_and_sum"][c]["sum"] for d in disclosed.values())
        assert section["result"]["impute"][c] == pytest.approx(total / count, rel=1e-9)
    manifest = json.loads((run.models / "federated" / "manifest.json").read_text())
    assert manifest["preprocessing"] == section["result"]
