"""De-identification: the PS3.15 check, its options, `flsuite site check`, and training refusing identifiers."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import make_dicom, write_manifest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from domains.medical.adapters.deid import DeidRules, identifier_findings, text_problem
from domains.medical.adapters.deid_profile import profile_action
from domains.medical.adapters.dicom import DicomAdapter
from domains.medical.scenario import IMAGING
from flcore.cli import main
from flcore.exceptions import GovernanceError
from flcore.experiment.gate import gate
from flcore.experiment.prepare import prepare_data
from flcore.governance.audit import verify
from flcore.governance.policy import GovernancePolicy
from flcore.governance.rules import Finding, open_findings

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PIXELS = np.arange(256, dtype=np.uint16).reshape(16, 16) + 1000


def tags_of(findings: list[Finding]) -> set[str]:
    return {f.tag for f in findings}


def clean(tmp_path: Path, name: str = "a.dcm", **elements: object) -> Dataset:
    """A file with no identifier, plus ``elements``."""
    return pydicom.dcmread(make_dicom(tmp_path / name, PIXELS, **elements))


# -- the table ------------------------------------------------------------------------------------


def test_the_table_is_the_standards_not_a_hand_list() -> None:
    # A few rows of PS3.15 Table E.1-1, by tag: removed, emptied, replaced, UID, and a masked overlay row.
    assert profile_action(0x00104000) == "X"  # PatientComments
    assert profile_action(0x00100010) == "Z"  # PatientName
    assert profile_action(0x0020000D) == "U"  # StudyInstanceUID
    assert profile_action(0x60024000) == "X"  # Overlay Comments in the 6002 group
    assert profile_action(0x00280010) is None  # Rows: kept


# -- identifiers the old check missed --------------------------------------------------------------


def test_real_file_reported_by_element_path_never_by_value() -> None:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    findings = identifier_findings(ds, "CT_small.dcm")
    tags = tags_of(findings)
    assert {"PatientName (0010,0010)", "PatientID (0010,0020)", "InstitutionName (0008,0080)"} <= tags
    assert "OtherPatientIDsSequence[0] > PatientID (0010,0020)" in tags
    assert "(0009,1001) private, creator 'GEMS_IDEN_01'" in tags
    text = " ".join(str(f) for f in findings)
    for value in (str(ds.PatientName), str(ds.PatientID), str(ds.InstitutionName)):
        assert value not in text
    assert len(tags) == len(findings)  # each element once


def test_private_block_holding_a_name_birth_date_and_record_number(tmp_path: Path) -> None:
    ds = clean(tmp_path)
    block = ds.private_block(0x0029, "ACME PATIENT 1.0", create=True)
    block.add_new(0x10, "PN", "Doe^Jane")
    block.add_new(0x11, "DA", "19600101")
    block.add_new(0x12, "LO", "MRN-884422")
    findings = identifier_findings(ds, "a.dcm")
    assert tags_of(findings) == {
        "(0029,1010) private, creator 'ACME PATIENT 1.0'",
        "(0029,1011) private, creator 'ACME PATIENT 1.0'",
        "(0029,1012) private, creator 'ACME PATIENT 1.0'",
    }
    assert all(f.creator == "ACME PATIENT 1.0" for f in findings)
    safe = DeidRules(safe_private_creators=frozenset({"ACME PATIENT 1.0"}))
    assert identifier_findings(ds, "a.dcm", safe) == []
    # A policy naming the creator excuses them at the gate as well.
    policy = GovernancePolicy(safe_private_creators=("ACME PATIENT 1.0",))
    assert open_findings(findings, policy) == []


@pytest.mark.parametrize("keyword", ["PatientComments", "ImageComments", "StudyDescription"])
def test_names_in_free_text_attributes(tmp_path: Path, keyword: str) -> None:
    ds = clean(tmp_path, **{keyword: "Patient John Smith, seen by Dr Jones"})
    (finding,) = identifier_findings(ds, "a.dcm")
    assert finding.tag.startswith(keyword) and "John" not in str(finding)
    # Under the Clean Descriptors option the text may stay, but is scanned for identifying content.
    cleaned = DeidRules(options=frozenset({"clean-descriptors"}))
    (finding,) = identifier_findings(ds, "a.dcm", cleaned)
    assert "looks like a person's name" in finding.reason
    ok = clean(tmp_path, "b.dcm", **{keyword: "AX T1 POST GAD 5/5mm"})
    assert identifier_findings(ok, "b.dcm", cleaned) == []


def test_person_names_anywhere_whatever_the_keyword(tmp_path: Path) -> None:
    ds = clean(tmp_path)
    ds.ContentCreatorName = "Roe^Richard"
    observer = Dataset()
    observer.VerifyingObserverName = "Poe^Edgar"
    ds.VerifyingObserverSequence = Sequence([observer])
    step = Dataset()
    step.ScheduledPerformingPhysicianName = "Moe^Mary"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.EvaluatorName = "Lee^Ann"  # a PN that Table E.1-1 does not list
    tags = tags_of(identifier_findings(ds, "a.dcm"))
    assert {
        "ContentCreatorName (0070,0084)",
        "VerifyingObserverSequence[0] > VerifyingObserverName (0040,A075)",
        "ScheduledProcedureStepSequence[0] > ScheduledPerformingPhysicianName (0040,0006)",
        "EvaluatorName (0014,2006)",
    } <= tags


def test_identifier_nested_in_a_removed_sequence_is_reported_at_its_own_path(tmp_path: Path) -> None:
    item = Dataset()
    item.PatientID = "12345678"
    ds = clean(tmp_path)
    ds.ReferencedPatientSequence = Sequence([item])
    assert tags_of(identifier_findings(ds, "a.dcm")) == {"ReferencedPatientSequence[0] > PatientID (0010,0020)"}
    ds.ReferencedPatientSequence[0].PatientID = ""
    ds.ReferencedPatientSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    # Nothing identifying inside, but the profile removes the sequence itself.
    assert tags_of(identifier_findings(ds, "a.dcm")) == {"ReferencedPatientSequence (0008,1120)"}


def test_burned_in_annotation(tmp_path: Path) -> None:
    ds = clean(tmp_path, BurnedInAnnotation="YES")
    assert tags_of(identifier_findings(ds, "a.dcm")) == {"BurnedInAnnotation (0028,0301)"}


# -- options and pseudonyms -------------------------------------------------------------------------


def test_dates_need_a_longitudinal_option_from_the_policy_or_the_file(tmp_path: Path) -> None:
    ds = clean(tmp_path, StudyDate="20210304", PatientBirthDate="19600101")
    (study, birth) = sorted(identifier_findings(ds, "a.dcm"), key=lambda f: f.tag)[::-1]
    assert study.tag.startswith("StudyDate") and "retain-longitudinal-full-dates" in study.allowed_by
    assert birth.tag.startswith("PatientBirthDate") and birth.allowed_by == ()  # no option keeps a birth date
    retain = DeidRules(options=frozenset({"retain-longitudinal-modified-dates"}))
    assert tags_of(identifier_findings(ds, "a.dcm", retain)) == {"PatientBirthDate (0010,0030)"}
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113106", "DCM"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    assert tags_of(identifier_findings(ds, "a.dcm")) == {"PatientBirthDate (0010,0030)"}


def test_each_named_option_keeps_its_attributes(tmp_path: Path) -> None:
    cases = {
        "retain-patient-characteristics": {"PatientSex": "F", "PatientAge": "054Y", "PatientWeight": "70"},
        "retain-device-identity": {"DeviceSerialNumber": "SN-99812", "StationName": "CT-ROOM-2"},
        "retain-institution-identity": {"InstitutionName": "St Elsewhere", "InstitutionalDepartmentName": "Rad"},
        "clean-descriptors": {"SeriesDescription": "AX T2 FLAIR", "ProtocolName": "BRAIN ROUTINE"},
    }
    for option, elements in cases.items():
        ds = clean(tmp_path, f"{option}.dcm", **elements)
        assert len(identifier_findings(ds, "a.dcm")) == len(elements), option
        assert identifier_findings(ds, "a.dcm", DeidRules(options=frozenset({option}))) == [], option


def test_pseudonyms_pass_only_where_the_policy_declares_their_pattern(tmp_path: Path) -> None:
    ds = clean(tmp_path, PatientID="SUBJ-0001", PatientIdentityRemoved="YES")
    assert tags_of(identifier_findings(ds, "a.dcm")) == {"PatientID (0010,0020)"}
    rules = DeidRules(pseudonyms=(__import__("re").compile(r"SUBJ-[0-9]{4}"),))
    assert identifier_findings(ds, "a.dcm", rules) == []
    ds.PatientID = "Jane Doe"
    assert tags_of(identifier_findings(ds, "a.dcm", rules)) == {"PatientID (0010,0020)"}


def test_free_text_detector_finds_identifying_forms_and_leaves_clinical_text() -> None:
    for text in ("DOE^JOHN", "Mrs. Patel", "MRN: 5512", "jane@example.org", "+44 20 7946 0958", "12/03/1961"):
        assert text_problem(text) is not None, text
    for text in ("AX T1 POST", "5/5mm Plain", "51.80.108.010", "Lung 1.25mm", "HEAD FILTER", "coreload.81"):
        assert text_problem(text) is None, text


# -- a standard PS3.15 tool's output passes -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "examples_palette.dcm", "examples_overlay.dcm", "SC_rgb_rle.dcm"]
)
def test_files_de_identified_by_a_standard_tool_pass(name: str) -> None:
    from dicomanonymizer import anonymize_dataset

    ds = pydicom.dcmread(TEST_FILES / name)
    assert identifier_findings(ds, name)  # real identifiers before
    logging.disable(logging.WARNING)  # the tool logs each tag it changes
    try:
        anonymize_dataset(ds)  # dicom-anonymizer with its default settings (PS3.15 basic profile)
    finally:
        logging.disable(logging.NOTSET)
    assert identifier_findings(ds, name) == []


# -- the site check and the gate ------------------------------------------------------------------------


def hospital(root: Path, name: str, identifiers_in: tuple[int, ...] = ()) -> Path:
    site = root / name
    rows = []
    for i in range(24):
        extra = {"PatientName": "Doe^John", "PatientBirthDate": "19700101"} if i in identifiers_in else {}
        make_dicom(site / f"s{i:02d}.dcm", PIXELS + i, **extra)
        rows.append({"file": f"s{i:02d}.dcm", "label": i % 2, "consent": "yes"})
    write_manifest(site, rows)
    return site


def test_site_check_exits_2_naming_file_and_element(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hospital(tmp_path, "hospital-a")
    hospital(tmp_path, "hospital-b", identifiers_in=(7,))
    code = main(["site", "check", "--domain", "medical", "--data", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 2
    assert "hospital-b/s07.dcm: PatientName (0010,0010)" in out and "PatientBirthDate (0010,0030)" in out
    assert "Doe" not in out and "refused: 2 direct identifier(s) in 1 file(s)" in out


def test_site_check_of_clean_folder_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = hospital(tmp_path, "hospital-a")
    assert main(["site", "check", "--domain", "medical", "--data", str(site)]) == 0
    assert "24 usable records, 12 positive" in capsys.readouterr().out


def test_site_check_reports_files_not_in_the_manifest_and_unreadable_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = hospital(tmp_path, "hospital-a")
    shutil.copy(TEST_FILES / "CT_small.dcm", site / "stray.dcm")  # not listed in labels.csv
    assert main(["site", "check", "--domain", "medical", "--data", str(site)]) == 2
    (site / "stray.dcm").unlink()
    (site / "notes.bin").write_bytes(b"\x00\x01 not a DICOM file")  # never read: could hold anything
    assert main(["site", "check", "--domain", "medical", "--data", str(site)]) == 2
    assert "notes.bin: file could not be read as DICOM" in capsys.readouterr().out


def test_policy_options_and_patterns_in_the_site_folder(tmp_path: Path) -> None:
    site = tmp_path / "hospital-a"
    make_dicom(site / "a.dcm", PIXELS, StudyDate="20200101", PatientID="CQ-0007")
    adapter = DicomAdapter()
    assert tags_of(adapter.scan_identifiers(site)) == {"StudyDate (0008,0020)", "PatientID (0010,0020)"}
    (site / "policy.toml").write_text(
        'deid_options = ["retain-longitudinal-modified-dates"]\npseudonym_patterns = ["CQ-[0-9]{4}"]\n'
    )
    assert adapter.scan_identifiers(site) == []


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
    args = ["run", "medical-three-hospitals", "--data", str(tmp_path / "data"), "--out", str(out)]
    assert main([*args, "--engine", "inprocess"]) == 2
    assert "'de-identified' refuses hospital 'hospital-b'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl"]  # no results, no model
    entries = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    refusal = [e for e in entries if e["kind"] == "refusal"]
    assert [(e["rule"], e["site"]) for e in refusal] == [("de-identified", "hospital-b")]
    assert verify(out / "audit.jsonl").ok
