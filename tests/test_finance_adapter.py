"""The finance adapter's contract: every bad input is refused with file, field and fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_transactions, write_bank

from domains.finance.adapters.transactions import TransactionAdapter
from flcore.cli import main
from flcore.exceptions import DataValidationError


def test_reads_csv_and_parquet(banks_dir: Path) -> None:
    adapter = TransactionAdapter()
    csv = adapter.read(banks_dir / "bank_1")
    pq = adapter.read(banks_dir / "bank_2")
    assert csv.x.shape == (250, 128) and csv.x.dtype == np.float32
    assert pq.x.shape == (200, 128)
    assert csv.y.sum() == 6 and set(np.unique(csv.y)) == {0, 1}
    assert "transaction_id" not in csv.info["feature_names"]  # type: ignore[operator]


def _bad_frames() -> dict[str, tuple[object, str]]:
    """Name -> (table mutation, regex the error must match)."""
    return {
        "127-features": (lambda f: f.drop(columns=["f127"]), r"expected exactly 128 feature columns but found 127"),
        "nan": (
            lambda f: f.assign(f005=f["f005"].where(f.index != 3)),
            r"field 'f005'.*expected finite numbers but found nan in row 4",
        ),
        "text-column": (
            lambda f: f.assign(f010=["abc"] + [str(v) for v in f["f010"].iloc[1:]]),
            r"field 'f010'.*expected numeric values but the column holds text \(e.g. a text value in row 1\)",
        ),
        "label-2": (
            lambda f: f.assign(label=[2, *f["label"].iloc[1:]]),
            r"field 'label'.*labels must be 0 or 1 but found a number other than 0 or 1 in row 1",
        ),
        "no-rows": (lambda f: f.iloc[:0], r"the table has a header but no rows"),
        "no-label": (lambda f: f.drop(columns=["label"]), r"there is no 'label' column"),
    }


@pytest.mark.parametrize("case", list(_bad_frames()))
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bad_input_is_refused_with_file_and_problem(tmp_path: Path, case: str, fmt: str) -> None:
    mutate, pattern = _bad_frames()[case]
    path = write_bank(tmp_path, "bank_bad", mutate(make_transactions(40)), fmt)  # type: ignore[operator]
    with pytest.raises(DataValidationError, match=pattern) as err:
        TransactionAdapter().read(path.parent)
    assert str(path) in str(err.value)


def test_values_beyond_float32_are_not_finite(tmp_path: Path) -> None:
    frame = make_transactions(40)
    frame["f003"] = frame["f003"].astype("float64")
    frame.loc[7, "f003"] = 1e39  # finite as float64, inf as the float32 models train on
    path = write_bank(tmp_path, "bank_big", frame, "csv")
    with pytest.raises(
        DataValidationError,
        match=r"field 'f003'.*expected finite numbers but found a number beyond float32's range .*row 8",
    ):
        TransactionAdapter().read(path.parent)


def test_rows_are_positions_even_with_a_string_index(tmp_path: Path) -> None:
    frame = make_transactions(40).set_index("transaction_id")
    frame.loc["t5", "label"] = 7
    folder = tmp_path / "bank_idx"
    folder.mkdir()
    frame.to_parquet(folder / "transactions.parquet")  # pandas stores the string index
    with pytest.raises(
        DataValidationError, match=r"labels must be 0 or 1 but found a number other than 0 or 1 in row 6"
    ):
        TransactionAdapter().read(folder)


def test_malformed_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bank_x"
    folder.mkdir()
    (folder / "transactions.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataValidationError, match=r"could not be read as Parquet"):
        TransactionAdapter().read(folder)
    (folder / "transactions.parquet").unlink()
    (folder / "transactions.csv").write_text("")
    with pytest.raises(DataValidationError, match=r"the file is empty"):
        TransactionAdapter().read(folder)


def test_empty_site_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bank_empty").mkdir()
    with pytest.raises(DataValidationError, match=r"bank_empty.*holds no .csv or .parquet file"):
        TransactionAdapter().read(tmp_path / "bank_empty")


@pytest.mark.parametrize("case", list(_bad_frames()))
def test_cli_run_exits_2_with_one_paragraph(banks_dir: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    mutate, _ = _bad_frames()[case]
    bad = write_bank(banks_dir, "bank_4", mutate(make_transactions(150, seed=4)), "csv")  # type: ignore[operator]
    out = banks_dir.parent / "out"
    code = main(
        [
            "run",
            "finance-five-banks",
            "--data",
            str(banks_dir),
            "--rounds",
            "1",
            "--out",
            str(out),
            "--engine",
            "inprocess",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("flsuite: error: ")
    assert str(bad) in err  # wrapped without breaking words, so the path stays whole
    assert "Traceback" not in err
    assert "\n\n" not in err.strip()  # one paragraph
    assert not out.exists()  # nothing half-written


def test_cli_refuses_mismatched_feature_names(banks_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = make_transactions(150, seed=5).rename(columns={"f000": "amount"})
    write_bank(banks_dir, "bank_4", frame)
    code = main(["run", "finance-five-banks", "--data", str(banks_dir), "--rounds", "1", "--engine", "inprocess"])
    assert code == 2
    assert "feature columns differ" in capsys.readouterr().err


def test_cli_refuses_site_below_min_cohort(banks_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bank(banks_dir, "bank_tiny", make_transactions(20, seed=6, fraud=1))
    code = main(["run", "finance-five-banks", "--data", str(banks_dir), "--rounds", "1", "--engine", "inprocess"])
    err = capsys.readouterr().err
    assert code == 2
    assert "min-cohort" in err and "bank_tiny" in err
