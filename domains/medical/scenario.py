"""The medical scenarios: three hospitals detect liver lesions on CT (DICOM), and share a clinical risk model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from domains.medical.adapters.clinical import ClinicalTableAdapter
from domains.medical.adapters.dicom import DicomAdapter
from domains.medical.config import (
    DP_CLINICAL_RUN,
    IMAGE_SIZE,
    RECOMMENDED_CLINICAL_RUN,
    RECOMMENDED_IMAGING_RUN,
    ClinicalParams,
    ImagingParams,
)
from domains.medical.governance import DEFAULT_POLICY
from domains.medical.models import ClinicalMLP, LesionCNN, augment_images
from domains.medical.synthetic import write_clinical, write_hospitals
from flcore.data.schema import find_schema
from flcore.data.schematable import SchemaTableAdapter
from flcore.data.site import DomainAdapter, FeatureStats
from flcore.exceptions import ConfigError
from flcore.governance.policy import site_drop_columns
from flcore.learning.task import BinaryClassificationTask
from flcore.scenario import Scenario


def make_imaging_data(
    out: Path, seed: int = 0, scale: float = 1.0, file_format: str | None = None, with_identifiers: bool = False
) -> list[Path]:
    """Write the three synthetic hospitals as DICOM folders with ``labels.csv``."""
    if file_format not in (None, "dicom"):
        raise ConfigError(f"medical-three-hospitals writes DICOM files; --format {file_format} is not available.")
    return write_hospitals(Path(out), seed=seed, scale=scale, with_identifiers=with_identifiers)


def make_imaging_task(params: ImagingParams) -> BinaryClassificationTask:
    """The lesion CNN with ROC-AUC as primary metric and a Youden operating point."""
    channels = params.channel_tuple()

    def build(stats: FeatureStats) -> LesionCNN:
        return LesionCNN(stats, channels=channels, dropout=params.dropout)

    return BinaryClassificationTask(
        build=build,
        pos_weight=params.pos_weight,
        primary_metric="roc_auc",
        threshold_rule="youden",
        augment=augment_images if params.augment else None,
    )


def make_clinical_data(out: Path, seed: int = 0, scale: float = 1.0, file_format: str | None = None) -> list[Path]:
    """Write the real Wisconsin breast-cancer data split across three hospitals."""
    if scale != 1.0:
        raise ConfigError("medical-clinical uses the real 569-patient data set; --scale is not available.")
    if file_format not in (None, "csv", "parquet"):
        raise ConfigError(f"medical-clinical writes csv or parquet tables, not {file_format}.")
    return write_clinical(Path(out), seed=seed, file_format=file_format or "csv")


def make_clinical_adapter(params: ClinicalParams, data_dir: Path | None) -> DomainAdapter:
    """The hospitals' own schema (``schema`` setting or ``DATA/schema.toml``), else the reference contract.

    Consent stays required: a schema that names no consent column reads ``consent``.
    """
    schema = find_schema(params.schema, data_dir)
    if schema is None:
        return CLINICAL_ADAPTER
    schema = dataclasses.replace(schema, consent=schema.consent or "consent")
    return SchemaTableAdapter(schema, site="hospital", noun="patient", drop_columns=site_drop_columns)


def make_clinical_task(params: ClinicalParams) -> BinaryClassificationTask:
    """The clinical MLP with ROC-AUC as primary metric and a Youden operating point."""
    hidden = params.hidden()

    def build(stats: FeatureStats) -> ClinicalMLP:
        return ClinicalMLP(stats, hidden=hidden, dropout=params.dropout)

    return BinaryClassificationTask(
        build=build, pos_weight=params.pos_weight, primary_metric="roc_auc", threshold_rule="youden"
    )


CLINICAL_ADAPTER = ClinicalTableAdapter(require_consent=True)

IMAGING = Scenario(
    name="medical-three-hospitals",
    domain="medical",
    description="Three hospitals (CT scanners differ; 160-480 studies) train a liver-lesion CNN on DICOM.",
    site_noun="hospital",
    adapter=DicomAdapter(IMAGE_SIZE, require_consent=True),
    make_data=make_imaging_data,
    make_task=make_imaging_task,
    params=ImagingParams(),
    run_defaults=RECOMMENDED_IMAGING_RUN,
    policy=DEFAULT_POLICY,
)

CLINICAL = Scenario(
    name="medical-clinical",
    domain="medical",
    description="Three hospitals share a breast-cancer risk model (real Wisconsin data, label and size skew).",
    site_noun="hospital",
    adapter=CLINICAL_ADAPTER,
    make_data=make_clinical_data,
    make_task=make_clinical_task,
    params=ClinicalParams(),
    run_defaults=RECOMMENDED_CLINICAL_RUN,
    policy=DEFAULT_POLICY,
    privacy_defaults={"dp": DP_CLINICAL_RUN},
    make_adapter=make_clinical_adapter,
)
