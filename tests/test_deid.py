"""De-identification: header findings, `flsuite site check`, and training refusing identifier-bearing data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import make_dicom, write_manifest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from domains.medical.deid import identifier_findings
from domains.medical.scenario import IMAGING
from flcore.audit import verify
from flcore.cli import main
from flcore.governance import GovernanceError
from flcore.harness import gate, prepare_data

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PIXELS = np.full((16, 16), 1064, dtype=np.uint16)


def test_real_file_with_identifiers_is_reported_by_tag_without_the_value() -> None:
    findings = identifier_findings(pydicom.dcmread(TEST_FILES / "CT_small.dcm"), "CT_small.dcm")
    tags = {f.tag for f in findings}
    assert "(0010,0010) PatientName" in tags and "(0010,0020) PatientID" in tags
    assert "(0008,0080) InstitutionName" in tags
    assert all("CompressedSamples" not in str(f) for f in findings)  # never the value itself


def test_clean_file_has_no_findings(tmp_path: Path) -> None:
    ds = pydicom.dcmread(make_dicom(tmp_path / "a.dcm", PIXELS, PatientName="", PatientID="ANONYMIZED"))
    assert identifier_findings(ds, "a.dcm") == []


def test_burned_in_annotation_and_identifiers_inside_sequences(tmp_path: Path) -> None:
    item = Dataset()
    item.PatientName = "Doe^Jane"
    ds = pydicom.dcmread(make_dicom(tmp_path / "a.dcm", PIXELS, BurnedInAnnotation="YES"))
    ds.ReferencedPatientSequence = Sequence([item])
    tags = {f.tag for f in identifier_findings(ds, "a.dcm")}
    assert tags == {"(0028,0301) BurnedInAnnotation", "(0010,0010) PatientName"}


def hospital(root: Path, name: str, identifiers_in: tuple[int, ...] = ()) -> Path:
    site = root / name
    rows = []
    for i in range(24):
        extra = {"PatientName": "Doe^John", "PatientBirthDate": "19700101"} if i in identifiers_in else {}
        make_dicom(site / f"s{i:02d}.dcm", PIXELS + i, **extra)
        rows.append({"file": f"s{i:02d}.dcm", "label": i % 2, "consent": "yes"})
    write_manifest(site, rows)
    return site


def test_site_check_exits_2_naming_file_and_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hospital(tmp_path, "hospital-a")
    hospital(tmp_path, "hospital-b", identifiers_in=(7,))
    code = main(["site", "check", "--domain", "medical", "--data", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 2
    assert "hospital-b/s07.dcm: (0010,0010) PatientName" in out and "(0010,0030) PatientBirthDate" in out
    assert "Doe" not in out and "refused: 2 direct identifier(s) in 1 file(s)" in out


def test_site_check_of_clean_folder_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = hospital(tmp_path, "hospital-a")
    assert main(["site", "check", "--domain", "medical", "--data", str(site)]) == 0
    assert "24 usable records, 12 positive" in capsys.readouterr().out


def test_site_check_reports_files_not_in_the_manifest_too(tmp_path: Path) -> None:
    site = hospital(tmp_path, "hospital-a")
    shutil.copy(TEST_FILES / "CT_small.dcm", site / "stray.dcm")  # not listed in labels.csv
    assert main(["site", "check", "--domain", "medical", "--data", str(site)]) == 2


def test_training_refuses_identifier_bearing_data(tmp_path: Path) -> None:
    hospital(tmp_path, "hospital-a")
    hospital(tmp_path, "hospital-b", identifiers_in=(3,))
    cfg, params = IMAGING.configure({})
    prepared = prepare_data(IMAGING, cfg, tmp_path, lambda _: None, params)
    with pytest.raises(GovernanceError, match=r"'de-identified' refuses hospital 'hospital-b'.*s03\.dcm"):
        gate(IMAGING, cfg, params, prepared.governance, IMAGING.policy)


def test_run_command_refuses_with_exit_2_audits_and_writes_no_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hospital(tmp_path / "data", "hospital-a")
    hospital(tmp_path / "data", "hospital-b", identifiers_in=(0,))
    out = tmp_path / "out"
    assert main(["run", "medical-three-hospitals", "--data", str(tmp_path / "data"), "--out", str(out)]) == 2
    assert "'de-identified' refuses hospital 'hospital-b'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl"]  # no results, no model
    entries = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    refusal = [e for e in entries if e["kind"] == "refusal"]
    assert [(e["rule"], e["site"]) for e in refusal] == [("de-identified", "hospital-b")]
    assert verify(out / "audit.jsonl").ok
