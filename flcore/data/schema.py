"""A table's own schema (``schema.toml``): which column is the label, which are features, which are categories.

A bank's or a hospital's export rarely has the suite's reference columns. A schema
file names what its table holds, and the table adapter
(:class:`flcore.data.schematable.SchemaTableAdapter`) reads any table through it::

    label = "is_fraud"              # the label column
    positive = 1                    # its positive value (1, "yes", "fraud", true ...)
    negative = 0                    # optional: the only other value allowed (default: any other value)
    features = ["amount", "age"]    # optional: exactly these columns (default: every column but those below)
    exclude = ["free_text_note"]    # optional: columns that are never features
    categorical = ["merchant_category"]
    drop = ["transaction_id", "booked_at"]  # identifier and time columns, never read
    missing = "impute"              # or "refuse" (default): a missing value stops the run
    consent = "consent"             # optional: a yes/no column; records without consent are dropped
    max_categories = 200            # optional: most categories a site may hold (and disclose) in one column

``impute`` fills a missing number with the federation's mean of that column and a
missing category with its own category (``<missing>``), both computed from per-site
statistics (:mod:`flcore.data.preprocess`), never from rows.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flcore.exceptions import DataValidationError

#: The schema file a data folder may hold beside its site folders (used when no schema is named).
SCHEMA_FILE = "schema.toml"
#: Added to the fix of a breach of the reference contract that a table of its own columns would make.
SCHEMA_HINT = (
    " A table with its own columns (another label name or values, any number of features, text categories, "
    "missing values) is read through a schema instead: --schema FILE, or schema.toml beside the site folders "
    "(README, 'Bring your own data')."
)

#: The keys a schema file may hold.
KEYS = (
    "label",
    "positive",
    "negative",
    "features",
    "exclude",
    "categorical",
    "drop",
    "missing",
    "consent",
    "max_categories",
)
MISSING_RULES = ("refuse", "impute")


@dataclass(frozen=True)
class TableSchema:
    """What a table holds: the label and its positive value, the features, the categories and the missing-value rule.

    Parameters
    ----------
    label : str
        The label column.
    positive : str
        The label's positive value, as text (``"1"``, ``"yes"``, ``"fraud"``); numbers
        compare as numbers (``1``, ``1.0`` and ``"1"`` are the same) and text
        case-insensitively.
    negative : str or None
        The only other label value allowed; None: any other value is negative.
    features : tuple of str
        Exactly these feature columns, in this order; empty: every column but the label,
        ``exclude``, ``drop``, ``consent`` and id/time columns, in file order.
    exclude, drop : tuple of str
        Columns that are not features; ``drop`` columns are not even read (identifiers, times).
    categorical : tuple of str
        Feature columns read as categories (text or codes), one-hot encoded.
    missing : str
        ``"refuse"``: a missing value is an error; ``"impute"``: numbers get the federation's
        mean, categories a ``<missing>`` category.
    consent : str or None
        A yes/no column; records whose consent is no are dropped before anything else is read.
    max_categories : int
        Most categories one categorical column may hold at a site. A site discloses its set of
        categories, so a column of near-unique values (a postcode, a free-text note, an id
        declared categorical by mistake) would disclose row values: it is refused instead.
    """

    label: str = "label"
    positive: str = "1"
    negative: str | None = "0"
    features: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    missing: str = "refuse"
    consent: str | None = None
    max_categories: int = 200
    source: str = field(default="", compare=False)

    @classmethod
    def load(cls, path: Path | str) -> TableSchema:
        """Read and check a schema file.

        Raises
        ------
        DataValidationError
            Naming the file and the key, for a file that is not TOML, an unknown key, a
            value of the wrong type or contradictory columns.
        """
        path = Path(path)
        if not path.is_file():
            raise DataValidationError(path, "the schema file does not exist.", "Pass the path of a schema.toml file.")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise DataValidationError(
                path, f"the schema is not valid TOML ({err}).", "Fix the syntax (see README, 'Bring your own data')."
            ) from None
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "schema") -> TableSchema:
        """A schema from its keys (as in the TOML file, or :meth:`to_dict`)."""
        unknown = sorted(set(values) - set(KEYS) - {"source"})
        if unknown:
            raise DataValidationError(
                source, f"unknown key '{unknown[0]}'.", f"A schema holds only: {', '.join(KEYS)}.", field=unknown[0]
            )

        def text(key: str, default: str | None) -> str | None:
            value = values.get(key, default)
            if value is None:
                return None
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int | float) and not isinstance(value, bool):
                return as_text(value)
            if not isinstance(value, str) or not value.strip():
                raise DataValidationError(
                    source, f"'{key}' must be a non-empty text or number.", f'Write e.g. {key} = "...".', field=key
                )
            return value.strip()

        def names(key: str) -> tuple[str, ...]:
            value = values.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise DataValidationError(
                    source, f"'{key}' must be a list of column names.", f'Write e.g. {key} = ["a", "b"].', field=key
                )
            if len(set(value)) != len(value):
                raise DataValidationError(source, f"'{key}' names a column twice.", "List each column once.", field=key)
            return tuple(value)

        max_categories = values.get("max_categories", 200)
        if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 2:
            raise DataValidationError(
                source,
                "'max_categories' must be a whole number of at least 2.",
                "Write e.g. max_categories = 200.",
                "max_categories",
            )
        label = text("label", "label")
        positive = text("positive", "1")
        negative = text("negative", "0" if positive == "1" else None)
        missing = values.get("missing", "refuse")
        if missing not in MISSING_RULES:
            raise DataValidationError(
                source, f"'missing' must be one of {', '.join(MISSING_RULES)}.", 'Write missing = "impute".', "missing"
            )
        schema = cls(
            label=str(label),
            positive=str(positive),
            negative=negative,
            features=names("features"),
            exclude=names("exclude"),
            categorical=names("categorical"),
            drop=names("drop"),
            missing=str(missing),
            consent=text("consent", None),
            max_categories=max_categories,
            source=str(values.get("source", source)),
        )
        schema._check(source)
        return schema

    def _check(self, source: str) -> None:
        if self.negative is not None and same_value(self.negative, self.positive):
            raise DataValidationError(
                source, "'positive' and 'negative' are the same value.", "Name two different values.", "negative"
            )
        special = {self.label, *((self.consent,) if self.consent else ())}
        hidden = sorted(special & (set(self.drop) | set(self.exclude)))
        if hidden:
            raise DataValidationError(
                source,
                f"'{hidden[0]}' is the label or consent column, but 'drop' or 'exclude' lists it.",
                "Remove it from 'drop' and 'exclude': the label and consent columns are read, never features.",
                "drop",
            )
        for key, cols in (("features", self.features), ("categorical", self.categorical)):
            clash = sorted(set(cols) & (special | set(self.drop) | set(self.exclude)))
            if clash:
                raise DataValidationError(
                    source,
                    f"'{key}' lists '{clash[0]}', which is also the label, consent, a dropped or an excluded column.",
                    "Name every column in one role only.",
                    key,
                )
        if self.features:
            outside = sorted(set(self.categorical) - set(self.features))
            if outside:
                raise DataValidationError(
                    source,
                    f"'categorical' lists '{outside[0]}', which is not in 'features'.",
                    "Add it to 'features' or remove it from 'categorical'.",
                    "categorical",
                )

    def is_positive(self, value: object) -> bool | None:
        """True for the positive value, False for a negative one, None for a value that is neither."""
        if same_value(value, self.positive):
            return True
        if self.negative is None:
            return None if is_empty(value) else False
        return False if same_value(value, self.negative) else None

    def label_meaning(self) -> str:
        """What the label column may hold, e.g. "'1' (positive) or '0' (negative)"."""
        neg = f"'{self.negative}' (negative)" if self.negative is not None else "any other value (negative)"
        return f"'{self.positive}' (positive) or {neg}"

    def to_dict(self) -> dict[str, Any]:
        """The schema as JSON-able keys (``source`` left out): what a model's manifest records."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "source"}
        return out

    def setting(self) -> str:
        """The schema as the ``schema`` setting carries it: canonical JSON (covered by the training plan's hash)."""
        return json.dumps(self.to_dict(), sort_keys=True)


_TRUE, _FALSE = ("true", "1", "1.0", "yes", "y"), ("false", "0", "0.0", "no", "n")


def as_text(value: object) -> str:
    """A cell or a schema value as text: ``1`` and ``1.0`` are ``"1"``, booleans ``true`` / ``false``, text stripped."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | float | np.integer | np.floating):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value).strip()


def is_empty(value: object) -> bool:
    """Whether a cell holds nothing: None, NaN, pandas' NA or NaT, or blank text."""
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):  # a list or an array in a cell: something, not a scalar missing value
        return False


def same_value(value: object, wanted: str) -> bool:
    """Whether a cell equals a schema value: as numbers when both are numbers, else as case-folded text."""
    if is_empty(value):
        return False
    if isinstance(value, bool | np.bool_):  # a boolean column: true is 1 / yes, false is 0 / no
        return wanted.strip().casefold() in (_TRUE if value else _FALSE)
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str):
        value = item()
    text = value.strip() if isinstance(value, str) else str(value)
    try:
        a, b = float(text), float(wanted)
        return a == b
    except ValueError:
        return text.casefold() == wanted.strip().casefold()


def find_schema(setting: str, data_dir: Path | None) -> TableSchema | None:
    """The schema a run uses: the ``schema`` setting, else ``DATA/schema.toml``, else None.

    The setting is a file, or the schema itself as JSON (:meth:`TableSchema.setting`: what ``--schema FILE``
    passes, so that the schema travels to deployed sites inside the run's settings and its training plan).

    Raises
    ------
    DataValidationError
        When the named file (or the found one) is missing or not a valid schema.
    """
    if setting.strip().startswith("{"):
        try:
            values = json.loads(setting)
        except json.JSONDecodeError as err:
            raise DataValidationError(
                "the schema setting", f"it is not valid JSON ({err}).", "Pass a schema file: --schema schema.toml."
            ) from None
        return TableSchema.from_dict(values, source="the schema setting")
    if setting:
        return TableSchema.load(setting)
    if data_dir is not None and (Path(data_dir) / SCHEMA_FILE).is_file():
        return TableSchema.load(Path(data_dir) / SCHEMA_FILE)
    return None
