"""De-identification check of DICOM headers, after the PS3.15 basic confidentiality profile.

A header element counts as a direct identifier when its keyword is one the basic
application-level confidentiality profile (DICOM PS3.15 Annex E, Table E.1-1)
removes or replaces because it names, locates or contacts the patient or a person
or place caring for them, and it holds a value that is not an obvious placeholder.
``BurnedInAnnotation = YES`` is reported too: identifiers may be in the pixels.

Findings name the file and the tag, never the value, so that a report or a log does
not spread the identifier it warns about.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from flcore.governance import Finding

#: Keywords of direct identifiers (PS3.15 Table E.1-1, actions D/Z/X/U on people,
#: places and record numbers). Dates of study and acquisition are not direct
#: identifiers and are left alone; so are UIDs (pseudonymous by design).
IDENTIFIER_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientInsurancePlanCodeSequence",
    "MedicalRecordLocator",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "PersonName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PhysiciansOfRecord",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "AccessionNumber",
    "StudyID",
    "DeviceSerialNumber",
    "AdmissionID",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    "RequestedProcedureID",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
)
_IDENTIFIERS = frozenset(IDENTIFIER_KEYWORDS)

#: Values that de-identification tools write in place of an identifier.
_PLACEHOLDERS = frozenset(
    {"", "^", "^^^^", "0", "anonymous", "anonymized", "anonymised", "anon", "removed", "deidentified", "none"}
)


def _tag_text(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - every keyword above is in the dictionary
        return keyword
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}"


def _is_placeholder(value: object) -> bool:
    text = str(value).strip().strip("^").strip().lower()
    return text in _PLACEHOLDERS


def identifier_findings(ds: Dataset, path: Path | str) -> list[Finding]:
    """Direct identifiers and burned-in annotation in one file's header, sequences included."""
    findings = []
    for elem in ds.iterall():
        keyword = elem.keyword
        if keyword not in _IDENTIFIERS:
            continue
        if elem.VR == "SQ":
            if len(elem.value):
                findings.append(Finding(str(path), _tag_text(keyword), f"is present ({len(elem.value)} item(s))"))
            continue
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        if any(v is not None and not _is_placeholder(v) for v in values):
            length = sum(len(str(v)) for v in values)
            findings.append(Finding(str(path), _tag_text(keyword), f"holds a value ({length} characters)"))
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if burned == "YES":
        findings.append(
            Finding(str(path), _tag_text("BurnedInAnnotation"), "is YES: identifiers may be burned into the pixels")
        )
    return findings
