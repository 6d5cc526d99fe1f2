"""Every registered adapter passes the same bad-file checks (flcore.checks.adapter), as scikit-learn's estimators do."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from domains.tabular.synthetic import SCHEMA_TEXT
from flcore import scenario
from flcore.checks.adapter import PLANTED, AdapterCase, adapter_checks, check_id
from flcore.data.schema import TableSchema
from flcore.data.schematable import SchemaTableAdapter
from flcore.governance.policy import site_drop_columns


def _first_site(scenario_name: str, folder: Path, **options: object) -> None:
    """Generate a scenario's synthetic data and keep its first site as ``folder``."""
    sc = scenario.get(scenario_name)
    with tempfile.TemporaryDirectory() as tmp:
        sc.make_data(Path(tmp), 0, **options)
        first = sorted(p for p in Path(tmp).iterdir() if p.is_dir())[0]
        shutil.copytree(first, folder)


def _table(site: Path) -> Path:
    return sorted(p for p in site.iterdir() if p.suffix in (".csv", ".parquet") and p.name != "labels.csv")[0]


def _with_identifier_column(site: Path) -> Path:
    path = _table(site)
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    frame.insert(0, "patient_name", PLANTED)
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def _consented_dicom(site: Path) -> Path:
    rows = pd.read_csv(site / "labels.csv", dtype=str)
    return site / rows[rows["consent"] == "yes"]["file"].iloc[0]


def _dicom_with_name(site: Path) -> Path:
    path = _consented_dicom(site)
    ds = pydicom.dcmread(path)
    ds.PatientName = PLANTED.replace(" ", "^")
    ds.save_as(path)
    return path


def _dicom_claiming_terabytes(site: Path) -> Path:
    path = _consented_dicom(site)
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 65000
    ds.NumberOfFrames = 9000
    ds.save_as(path)
    return path


def _training_recording(site: Path) -> Path:
    labelled = set(pd.read_csv(site / "labels.csv", dtype=str)["file"]) if (site / "labels.csv").is_file() else set()
    return next(p for p in sorted(site.rglob("*.npy")) if p.relative_to(site).as_posix() not in labelled)


def _npy_claiming_terabytes(site: Path) -> Path:
    path = _training_recording(site)
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
        f.write(np.zeros(16).tobytes())
    return path


def _cases() -> list[AdapterCase]:
    get = scenario.get
    return [
        AdapterCase(
            "finance-transactions",
            get("finance-five-banks").adapter,
            lambda f: _first_site("finance-five-banks", f, scale=0.05),
            _table,
            plant_identifier=_with_identifier_column,
        ),
        AdapterCase(
            "medical-clinical-table",
            get("medical-clinical").adapter,
            lambda f: _first_site("medical-clinical", f),
            _table,
            plant_identifier=_with_identifier_column,
        ),
        AdapterCase(
            "medical-dicom",
            get("medical-three-hospitals").adapter,
            lambda f: _first_site("medical-three-hospitals", f, scale=0.1),
            _consented_dicom,
            plant_identifier=_dicom_with_name,
            plant_huge=_dicom_claiming_terabytes,
        ),
        AdapterCase(
            "tabular-schema",
            SchemaTableAdapter(TableSchema.from_dict(tomllib.loads(SCHEMA_TEXT)), drop_columns=site_drop_columns),
            lambda f: _first_site("tabular", f, scale=0.2),
            _table,
            plant_identifier=_with_identifier_column,
        ),
        AdapterCase(
            "iot-vibration",
            get("iot-vibration-fleet").adapter,
            lambda f: _first_site("iot-vibration-fleet", f, devices=2, scale=0.5),
            _training_recording,
            plant_huge=_npy_claiming_terabytes,
        ),
    ]


def test_every_registered_adapter_has_a_case() -> None:
    registered = {type(sc.adapter) for sc in scenario.available().values()}
    assert registered == {type(case.adapter) for case in _cases()}


@pytest.mark.parametrize(("case", "check"), list(adapter_checks(_cases())), ids=check_id)
def test_adapter_conformance(case: AdapterCase, check: object, tmp_path: Path) -> None:
    check(case, tmp_path)  # type: ignore[operator]
