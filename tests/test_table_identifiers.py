"""Tables: identifier-like columns are refused (or dropped unread), and no message echoes a cell's value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_transactions

from domains.finance.adapters.transactions import TransactionAdapter
from domains.medical.adapters.clinical import ClinicalTableAdapter
from flcore.data.identifiers import identifier_kind, normalise_column
from flcore.data.tables import read_table
from flcore.data.validation import describe_value
from flcore.exceptions import DataValidationError

PLANTED = "Zebediah Quux"


def make_patients(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """A valid clinical table: a key, 4 features, a 0/1 label and consent."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["age", "bmi", "sbp", "hba1c"])
    frame.insert(0, "patient_id", [f"p{i}" for i in range(n)])
    frame["label"] = np.arange(n) % 2
    frame["consent"] = "yes"
    return frame


def write(folder: Path, frame: pd.DataFrame, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def policy(folder: Path, *columns: str) -> None:
    quoted = ", ".join(f'"{c}"' for c in columns)
    (folder / "policy.toml").write_text(f"drop_columns = [{quoted}]\n")


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("mrn", "medical record number"),
        ("Medical Record Number", "medical record number"),
        ("patient_name", "name"),
        ("Patient Name", "name"),
        ("patient-name", "name"),
        ("PatientName", "name"),
        ("surname", "name"),
        ("ssn", "social security number"),
        ("dob", "date of birth"),
        ("DateOfBirth", "date of birth"),
        ("e-mail", "e-mail address"),
        ("home_phone", "phone number"),
        ("Mobile", "phone number"),
        ("ZIPCode", "address"),
        ("street_address", "address"),
        ("IPAddress", "network address"),
        ("national_id", "national id"),
        ("NHS Number", "national id"),
        ("passport_no", "passport or licence"),
        ("IBAN", "account or card number"),
        ("card_number", "account or card number"),
        ("account_no", "account or card number"),
        ("device_serial", "device serial number"),
    ],
)
def test_identifier_names_are_recognised_whatever_their_spelling(name: str, kind: str) -> None:
    assert identifier_kind(name) == kind


@pytest.mark.parametrize(
    "name",
    [
        "age",
        "bmi",
        "label",
        "consent",
        "patient_id",
        "transaction_id",
        "account_id",
        "hospital_id",
        "timestamp",
        "created_at",
        "f000",
        "mean_radius",
        "merchant_name",
        "email_count",
        "has_email",
        "is_mobile",
        "account_age_days",
        "hour_sin",
        "insurance",
    ],
)
def test_ordinary_columns_are_not_taken_for_identifiers(name: str) -> None:
    assert identifier_kind(name) is None


def test_names_are_normalised_before_comparison() -> None:
    for name in ("Patient Name", "patient-name", "PatientName", "PATIENT_NAME", " patient.name "):
        assert normalise_column(name) == "patient_name"
    assert normalise_column("IPAddress") == "ip_address"


# -- refusal --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("column", ["mrn", "Patient Name", "ssn", "dob", "email", "national_id"])
@pytest.mark.parametrize("strict", [True, False])
def test_clinical_identifier_columns_are_refused(tmp_path: Path, column: str, fmt: str, strict: bool) -> None:
    frame = make_patients()
    frame.insert(1, column, PLANTED)
    path = write(tmp_path / "hospital", frame, f"records.{fmt}")
    with pytest.raises(DataValidationError, match=rf"column '{column}' looks like a direct identifier") as err:
        ClinicalTableAdapter().read(tmp_path / "hospital", strict=strict)
    assert err.value.path == str(path) and err.value.field == column
    assert "drop_columns" in err.value.fix and "policy.toml" in err.value.fix
    assert PLANTED not in str(err.value)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("column", ["iban", "CardNumber", "customer_name", "phone"])
def test_finance_identifier_columns_are_refused(tmp_path: Path, column: str, fmt: str) -> None:
    frame = make_transactions(40)
    frame.insert(1, column, PLANTED)
    path = write(tmp_path / "bank", frame, f"transactions.{fmt}")
    with pytest.raises(DataValidationError, match=rf"column '{column}' looks like a direct identifier") as err:
        TransactionAdapter().read(tmp_path / "bank")
    assert err.value.path == str(path) and PLANTED not in str(err.value)


def test_several_identifier_columns_are_counted(tmp_path: Path) -> None:
    frame = make_patients()
    for column in ("dob", "mrn", "email"):
        frame.insert(1, column, PLANTED)
    write(tmp_path / "h", frame, "records.csv")
    with pytest.raises(DataValidationError, match=r"column 'email' .*\(2 more such column\(s\): 'mrn', 'dob'\)"):
        ClinicalTableAdapter().read(tmp_path / "h")


def test_ignored_key_and_time_columns_stay_ignored(tmp_path: Path) -> None:
    frame = make_patients()
    frame["admitted_at"] = "2024-01-01"
    frame["date"] = "2024-01-02"
    write(tmp_path / "h", frame, "records.csv")
    site = ClinicalTableAdapter().read(tmp_path / "h")
    assert site.info["feature_names"] == ["age", "bmi", "sbp", "hba1c"]


# -- drop_columns ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_declared_columns_are_dropped_unread(tmp_path: Path, fmt: str) -> None:
    frame = make_patients()
    frame.insert(1, "MRN", PLANTED)
    frame.insert(2, "Patient Name", PLANTED)
    folder = tmp_path / "hospital"
    write(folder, frame, f"records.{fmt}")
    policy(folder, "mrn", "patient_name")  # compared as normalised names
    site = ClinicalTableAdapter().read(folder)
    assert site.info["feature_names"] == ["age", "bmi", "sbp", "hba1c"] and len(site) == 12


def test_dropped_columns_never_reach_the_frame(tmp_path: Path) -> None:
    frame = make_patients()
    frame.insert(1, "mrn", PLANTED)
    path = write(tmp_path / "h", frame, "records.csv")
    read = read_table(path, "a table", drop=["MRN"])
    assert "mrn" not in read.columns and not read.isin([PLANTED]).any().any()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_bank_keeps_its_128_features_when_it_drops_columns(tmp_path: Path, fmt: str) -> None:
    frame = make_transactions(40)
    frame.insert(1, "iban", PLANTED)
    frame.insert(2, "holder_name", PLANTED)
    folder = tmp_path / "bank"
    write(folder, frame, f"transactions.{fmt}")
    policy(folder, "iban", "holder_name")
    site = TransactionAdapter().read(folder)
    assert site.x.shape == (40, 128) and "iban" not in site.info["feature_names"]  # type: ignore[operator]


def test_a_dropped_extra_column_is_not_a_feature_but_an_undeclared_one_still_breaks_the_contract(
    tmp_path: Path,
) -> None:
    frame = make_transactions(40)
    frame.insert(1, "branch_code", 7.0)
    folder = tmp_path / "bank"
    write(folder, frame, "transactions.csv")
    with pytest.raises(DataValidationError, match=r"expected exactly 128 feature columns but found 129"):
        TransactionAdapter().read(folder)
    policy(folder, "branch_code")
    assert TransactionAdapter().read(folder).x.shape == (40, 128)


# -- no value is ever echoed ----------------------------------------------------------------------


def planted(frame: pd.DataFrame, column: str, row: int) -> pd.DataFrame:
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = PLANTED
    return frame


@pytest.mark.parametrize(
    ("column", "row", "message"),
    [
        ("label", 3, r"field 'label'.*labels must be 0 or 1 but found a text value in row 4"),
        ("consent", 6, r"field 'consent'.*consent must be yes or no but found a text value in row 7"),
        ("bmi", 5, r"field 'bmi'.*holds text \(e\.g\. a text value in row 6\)"),
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_no_cell_value_appears_in_an_error(tmp_path: Path, column: str, row: int, message: str, strict: bool) -> None:
    write(tmp_path / "h", planted(make_patients(), column, row), "records.csv")
    if column == "label" and not strict:  # a bad record: dropped and counted, described without its value
        site = ClinicalTableAdapter().read(tmp_path / "h", strict=strict)
        assert site.info["skipped_examples"] == ["records.csv row 4: label is a text value, not 0 or 1"]
        return
    with pytest.raises(DataValidationError, match=message) as err:
        ClinicalTableAdapter().read(tmp_path / "h", strict=strict)
    assert PLANTED not in str(err.value) and "Zebediah" not in str(err.value)


def test_skipped_records_are_described_without_their_values(tmp_path: Path) -> None:
    frame = planted(make_patients(), "label", 2)
    frame.loc[4, "label"] = 12345678  # a record number in the wrong column
    frame.loc[6, "sbp"] = np.inf
    write(tmp_path / "h", frame, "records.csv")
    site = ClinicalTableAdapter().read(tmp_path / "h", strict=False)
    assert site.info["skipped"] == {"no_consent": 0, "invalid": 3}
    assert site.info["skipped_examples"] == [
        "records.csv row 3: label is a text value, not 0 or 1",
        "records.csv row 5: label is a number other than 0 or 1, not 0 or 1",
        "records.csv row 7: non-finite value inf in 'sbp'",
    ]
    assert not any("12345678" in e or PLANTED in e for e in site.info["skipped_examples"])


def test_a_finance_label_holding_a_number_is_not_echoed(tmp_path: Path) -> None:
    frame = make_transactions(40)
    frame.loc[3, "label"] = 4111111111111111  # a card number
    write(tmp_path / "bank", frame, "transactions.csv")
    with pytest.raises(DataValidationError, match=r"found a number other than 0 or 1 in row 4") as err:
        TransactionAdapter().read(tmp_path / "bank")
    assert "4111" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "number", "described"),
    [
        (None, None, "an empty value"),
        (np.nan, None, "an empty value (NaN)"),
        ("  ", None, "an empty value"),
        (PLANTED, None, "a text value"),
        (np.int64(2), "a number other than 0 or 1", "a number other than 0 or 1"),
        ("12800", None, "12800"),
        (12800.0, None, "12800"),
        (np.inf, None, "an infinite value"),
        (True, None, "a boolean (true/false)"),
        (pd.Timestamp("2024-01-01"), None, "a date or time"),
        (["a"], None, "a value of type list"),
    ],
)
def test_describe_value_never_repeats_text(value: object, number: str | None, described: str) -> None:
    assert describe_value(value, number=number) == described


# -- files that cannot be read --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("records.csv", lambda p: p.mkdir(), r"expected a regular file, found a directory"),
        ("records.csv", lambda p: p.symlink_to(p.parent / "gone.csv"), r"could not be opened \(FileNotFoundError"),
        ("records.parquet", lambda p: p.write_bytes(b"PAR1 not parquet"), r"could not be read as Parquet"),
        ("records.csv", lambda p: p.write_bytes(b"age,label\n\xff\xfe,1\n"), r"could not be read as CSV"),
    ],
)
def test_a_table_that_cannot_be_read_is_a_data_error(tmp_path: Path, name: str, damage: object, message: str) -> None:
    folder = tmp_path / "h"
    folder.mkdir()
    damage(folder / name)  # type: ignore[operator]
    with pytest.raises(DataValidationError, match=message) as err:
        ClinicalTableAdapter().read(folder)
    assert err.value.path == str(folder / name)


def test_a_table_claiming_more_than_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path / "h", make_patients(200), "records.csv")
    with pytest.raises(DataValidationError, match=r"the file claims [0-9.]+ KiB once loaded, more than the 1000 bytes"):
        read_table(path, "a table", max_bytes=1000)
