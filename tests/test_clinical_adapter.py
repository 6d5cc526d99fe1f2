"""The clinical-table adapter: consent is honoured first, bad records are refused or counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.medical.adapters.clinical import ClinicalTableAdapter
from flcore.data.validation import parse_consent
from flcore.exceptions import DataValidationError


def make_patients(n: int = 12, seed: int = 0, consent: bool = True) -> pd.DataFrame:
    """A valid clinical table: id column, 4 features, 0/1 label, optional all-yes consent."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["age", "bmi", "sbp", "hba1c"])
    frame.insert(0, "patient_id", [f"p{i}" for i in range(n)])
    frame["label"] = np.arange(n) % 2
    if consent:
        frame["consent"] = "yes"
    return frame


def write_table(folder: Path, frame: pd.DataFrame, name: str = "records.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("name", ["records.csv", "records.parquet"])
def test_reads_a_valid_table(tmp_path: Path, name: str) -> None:
    frame = make_patients(12)
    write_table(tmp_path / "hospital_a", frame, name)
    site = ClinicalTableAdapter().read(tmp_path / "hospital_a")
    assert site.name == "hospital_a" and site.source == str(tmp_path / "hospital_a")
    assert site.x.shape == (12, 4) and site.x.dtype == np.float32 and site.y.dtype == np.int64
    np.testing.assert_allclose(site.x, frame[["age", "bmi", "sbp", "hba1c"]].to_numpy(np.float32))
    assert site.info["feature_names"] == ["age", "bmi", "sbp", "hba1c"]
    assert site.info["records_read"] == 12
    assert site.info["skipped"] == {"no_consent": 0, "invalid": 0}


def test_csv_and_parquet_files_of_one_hospital_are_joined(tmp_path: Path) -> None:
    folder = tmp_path / "hospital_a"
    write_table(folder, make_patients(5, seed=1), "a.csv")
    write_table(folder, make_patients(7, seed=2), "b.parquet")
    site = ClinicalTableAdapter().read(folder)
    assert len(site) == 12 and site.info["records_read"] == 12


def test_non_consented_records_are_dropped_before_validation(tmp_path: Path) -> None:
    frame = make_patients(8)
    frame["consent"] = [" Yes", "no", "Y", "N", "true", "FALSE", "1", "0"]
    frame.loc[1, "bmi"] = np.nan  # never loaded: no consent
    frame.loc[3, "label"] = 2  # never loaded either
    write_table(tmp_path / "h", frame)
    site = ClinicalTableAdapter(require_consent=True).read(tmp_path / "h")
    assert len(site) == 4
    np.testing.assert_array_equal(site.y, frame["label"].iloc[[0, 2, 4, 6]].to_numpy())
    assert site.info["skipped"] == {"no_consent": 4, "invalid": 0}
    assert site.info["records_read"] == 8


def test_text_in_a_non_consented_record_is_never_seen(tmp_path: Path) -> None:
    frame = make_patients(6)
    frame["sbp"] = frame["sbp"].astype(object)
    frame.loc[2, "sbp"] = "refused"
    frame.loc[2, "consent"] = "no"
    write_table(tmp_path / "h", frame)
    site = ClinicalTableAdapter().read(tmp_path / "h")
    assert len(site) == 5 and site.info["skipped"] == {"no_consent": 1, "invalid": 0}


def test_consent_is_required_when_asked(tmp_path: Path) -> None:
    path = write_table(tmp_path / "h", make_patients(6, consent=False))
    assert len(ClinicalTableAdapter().read(tmp_path / "h")) == 6
    with pytest.raises(DataValidationError, match=r"field 'consent'.*no 'consent' column.*Add a 'consent' column") as e:
        ClinicalTableAdapter(require_consent=True).read(tmp_path / "h")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("bad", ["maybe", ""])
def test_bad_consent_value_is_refused(tmp_path: Path, bad: str) -> None:
    frame = make_patients(6)
    frame.loc[3, "consent"] = bad
    write_table(tmp_path / "h", frame)
    shown = r"an empty value \(NaN\)" if bad == "" else "a text value"  # an empty CSV cell reads back as NaN
    with pytest.raises(
        DataValidationError,
        match=rf"field 'consent'.*found {shown} in row 4 \(1 bad value\(s\)\).*Write yes or no for every record",
    ):
        ClinicalTableAdapter().read(tmp_path / "h", strict=False)  # not a record problem: refused in both modes


def test_parse_consent_accepts_booleans_and_words() -> None:
    values = pd.Series([True, False, 1, 0, 1.0, " no ", "TRUE", "n"])
    np.testing.assert_array_equal(
        parse_consent(values, Path("t.csv")), [True, False, True, False, True, False, True, False]
    )
    with pytest.raises(DataValidationError, match=r"t.csv, field 'consent'.*found a number other than 0 or 1 in row 2"):
        parse_consent(pd.Series([1, 2]), Path("t.csv"))


def test_nan_is_refused_when_strict_and_counted_when_lenient(tmp_path: Path) -> None:
    frame = make_patients(10)
    frame.loc[4, "bmi"] = np.nan
    frame.loc[6, "sbp"] = np.inf
    write_table(tmp_path / "h", frame)
    with pytest.raises(DataValidationError, match=r"field 'bmi'.*expected finite numbers but found nan in row 5"):
        ClinicalTableAdapter().read(tmp_path / "h")
    site = ClinicalTableAdapter().read(tmp_path / "h", strict=False)
    assert len(site) == 8 and np.isfinite(site.x).all()
    assert site.info["skipped"] == {"no_consent": 0, "invalid": 2}
    assert site.info["skipped_examples"] == [
        "records.csv row 5: non-finite value nan in 'bmi'",
        "records.csv row 7: non-finite value inf in 'sbp'",
    ]


def test_label_2_is_refused_when_strict_and_counted_when_lenient(tmp_path: Path) -> None:
    frame = make_patients(10)
    frame.loc[0, "label"] = 2
    write_table(tmp_path / "h", frame)
    with pytest.raises(
        DataValidationError, match=r"field 'label'.*labels must be 0 or 1 but found a number other than 0 or 1 in row 1"
    ):
        ClinicalTableAdapter().read(tmp_path / "h")
    site = ClinicalTableAdapter().read(tmp_path / "h", strict=False)
    assert len(site) == 9 and set(np.unique(site.y)) == {0, 1}
    assert site.info["skipped"] == {"no_consent": 0, "invalid": 1}
    assert site.info["skipped_examples"] == ["records.csv row 1: label is a number other than 0 or 1, not 0 or 1"]


@pytest.mark.parametrize("strict", [True, False])
def test_text_column_is_refused_in_both_modes(tmp_path: Path, strict: bool) -> None:
    frame = make_patients(6)
    frame["sbp"] = frame["sbp"].astype(object)
    frame.loc[2, "sbp"] = "high"
    write_table(tmp_path / "h", frame)
    with pytest.raises(DataValidationError, match=r"field 'sbp'.*holds text \(e.g. a text value in row 3\)"):
        ClinicalTableAdapter().read(tmp_path / "h", strict=strict)


@pytest.mark.parametrize("strict", [True, False])
def test_missing_label_column_is_refused_in_both_modes(tmp_path: Path, strict: bool) -> None:
    write_table(tmp_path / "h", make_patients(6).drop(columns=["label"]))
    with pytest.raises(DataValidationError, match=r"field 'label'.*there is no 'label' column"):
        ClinicalTableAdapter().read(tmp_path / "h", strict=strict)


@pytest.mark.parametrize("strict", [True, False])
def test_no_rows_left_after_consent_is_refused(tmp_path: Path, strict: bool) -> None:
    frame = make_patients(4)
    frame["consent"] = "no"
    write_table(tmp_path / "h", frame)
    with pytest.raises(DataValidationError, match=r"no usable record is left: of 4 read, 4 lack consent"):
        ClinicalTableAdapter().read(tmp_path / "h", strict=strict)


def test_one_file_emptied_by_consent_is_fine_beside_others(tmp_path: Path) -> None:
    refused = make_patients(3)
    refused["consent"] = "no"
    write_table(tmp_path / "h", refused, "a.csv")
    write_table(tmp_path / "h", make_patients(5), "b.csv")
    site = ClinicalTableAdapter().read(tmp_path / "h")
    assert len(site) == 5 and site.info["skipped"] == {"no_consent": 3, "invalid": 0}


def test_header_only_table_is_refused(tmp_path: Path) -> None:
    write_table(tmp_path / "h", make_patients(4).iloc[:0])
    with pytest.raises(DataValidationError, match=r"the table has a header but no rows.*A hospital needs"):
        ClinicalTableAdapter().read(tmp_path / "h")


@pytest.mark.parametrize("strict", [True, False])
def test_files_with_different_columns_are_refused(tmp_path: Path, strict: bool) -> None:
    write_table(tmp_path / "h", make_patients(4), "a.csv")
    path = write_table(tmp_path / "h", make_patients(4).rename(columns={"bmi": "weight"}), "b.parquet")
    with pytest.raises(DataValidationError, match=r"feature columns differ from those of a.csv") as e:
        ClinicalTableAdapter().read(tmp_path / "h", strict=strict)
    assert str(path) in str(e.value)


def test_folder_without_table_is_refused(tmp_path: Path) -> None:
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "notes.txt").write_text("not a table")
    assert not ClinicalTableAdapter().can_read(tmp_path / "h")
    with pytest.raises(DataValidationError, match=r"holds no .csv or .parquet file.*Put the hospital's"):
        ClinicalTableAdapter().read(tmp_path / "h")
