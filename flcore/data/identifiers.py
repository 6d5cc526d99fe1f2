"""Direct identifiers in column names: detecting them, and refusing a table that has one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from flcore.data.site import SITE_POLICY_FILE
from flcore.exceptions import DataValidationError

# Direct identifiers (HIPAA Safe Harbor's list and its like), as column names. A name is compared
# after normalise_column() ("Patient Name", "patient-name" and "PatientName" are all "patient_name"),
# and matches when it is, whole: optional qualifiers (whose: patient_, home_, customer_, first_ ...),
# then one of the identifiers below, then optional number words (_number, _no, _nr, _id, _1 ...).
_QUALIFIER = (
    r"patient|person|customer|client|member|user|owner|holder|account_?holder|card_?holder|policy_?holder|"
    r"subscriber|insured|guarantor|contact|emergency|next_of_kin|kin|mother|father|parent|guardian|spouse|"
    r"home|work|business|primary|secondary|personal|private|billing|mailing|residential|current|previous|"
    r"alt|alternate|other|full|legal|preferred|maiden|given|family|first|last|middle|sur|fore|nick|birth"
)
_NUMBER_WORD = r"number|no|nr|num|nbr"
_SUFFIX_WORD = _NUMBER_WORD + r"|id|code|line|[0-9]+"
#: Identifier names (regex alternatives over normalised names), by kind. The first entry may stand
#: alone (``mrn``, ``email_address``, ``ssn_id``); the second needs a number word after it:
#: ``account`` or ``hospital`` alone may be a category and ``account_id`` / ``hospital_id`` a
#: pseudonymous key, ``account_number`` and ``hospital_number`` are identifiers.
IDENTIFIER_NAMES: dict[str, tuple[str, str]] = {
    "name": (r"names?|initials|user_?name", ""),
    "medical record number": (r"mrn|med_?rec", r"medical_record|hospital|chart|case_note"),
    "social security number": (r"ssn|social_security", r"social_insurance|sin"),
    "national id": (
        r"national_?id|national_identity|nino|nhi|personnummer|bsn|tax_?(?:id|code)|tin|tfn|"
        r"(?:health_)?insurance_id",
        r"national_insurance|insurance|health_insurance|medicare|medicaid|health_card|id_card|identity_card|tax|nhs",
    ),
    "passport or licence": (r"passport|vin|licen[cs]e_plate", r"(?:drivers?_|driving_)?licen[cs]e"),
    "date of birth": (r"dob|d_o_b|date_of_birth|birth_?date|birthday|birth_?dt|born(?:_at|_on)?", ""),
    "e-mail address": (r"e_?mail(?:_?address|_addr)?", ""),
    "phone number": (r"(?:tele)?phone|tel|mobile(?:_phone)?|cell_?phone|fax", r"cell"),
    "address": (r"(?:street_)?address|addr|street|post_?code|postal_code|zip(?:_?code)?", ""),
    "network address": (r"ip|ip_?addr(?:ess)?|ipv[46](?:_addr(?:ess)?)?|mac_addr(?:ess)?", ""),
    "account or card number": (
        r"iban|pan|cvv|cvc|credit_card|debit_card",
        r"(?:bank_)?account|acct|(?:credit_|debit_)?card|cc",
    ),
    "device serial number": (r"(?:device_)?serial|imei|udi", ""),
}


def _identifier_pattern(free: str, numbered: str) -> re.Pattern[str]:
    core = rf"(?:{free})(?:_?(?:{_SUFFIX_WORD}))*"
    if numbered:
        core += rf"|(?:{numbered})(?:_?(?:{_NUMBER_WORD}))+"
    return re.compile(rf"(?:(?:{_QUALIFIER})_?)*(?:{core})")


_IDENTIFIER_PATTERNS = {kind: _identifier_pattern(*names) for kind, names in IDENTIFIER_NAMES.items()}


def normalise_column(name: object) -> str:
    """A column name in lower case with its words joined by ``_``, as names are compared.

    ``Patient Name``, ``patient-name``, ``PatientName`` and ``PATIENT_NAME`` all give ``patient_name``.
    """
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return "_".join(re.findall(r"[a-z0-9]+", text.lower()))


def identifier_kind(name: object) -> str | None:
    """What direct identifier a column name looks like (see :data:`IDENTIFIER_NAMES`), or None."""
    normal = normalise_column(name)
    for kind, pattern in _IDENTIFIER_PATTERNS.items():
        if pattern.fullmatch(normal):
            return kind
    return None


def refuse_identifiers(columns: Iterable[object], path: Path) -> None:
    """Refuse a table with a column named like a direct identifier (a name, a record number, a birth date ...).

    Such a column would otherwise train like any feature or travel with the data; its
    values are never looked at, and the error names the column, not its content.

    Raises
    ------
    DataValidationError
        Naming the file and the first such column (and how many others there are).
    """
    found = [(str(c), kind) for c in columns if (kind := identifier_kind(c)) is not None]
    if not found:
        return
    column, kind = found[0]
    others = (
        f" ({len(found) - 1} more such column(s): {', '.join(repr(c) for c, _ in found[1:4])})"
        if len(found) > 1
        else ""
    )
    raise DataValidationError(
        path,
        f"column '{column}' looks like a direct identifier ({kind}){others}; identifiers must not be read as data.",
        "Remove it from the export or, if the site keeps it for its own records, list it in drop_columns in "
        f"{Path(path).parent / SITE_POLICY_FILE} (drop_columns = [{json.dumps(column)}]): then it is never read. "
        "If it holds no identifier, rename it.",
        field=column,
    )
