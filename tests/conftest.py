"""Shared fixtures: tiny, seeded synthetic inputs generated on the fly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.finance.synthetic import FEATURE_COLUMNS


def make_transactions(n: int = 64, seed: int = 0, fraud: int = 3) -> pd.DataFrame:
    """A valid bank table: id column, 128 features, 0/1 label with ``fraud`` positives."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 128)).astype(np.float32), columns=FEATURE_COLUMNS)
    frame.insert(0, "transaction_id", [f"t{i}" for i in range(n)])
    labels = np.zeros(n, dtype=int)
    labels[:fraud] = 1
    frame["label"] = labels
    return frame


def write_bank(root: Path, name: str, frame: pd.DataFrame, fmt: str = "csv") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"transactions.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def banks_dir(tmp_path: Path) -> Path:
    """Three valid banks of 150-250 transactions as CSV and Parquet."""
    root = tmp_path / "banks"
    write_bank(root, "bank_1", make_transactions(250, seed=1, fraud=6), "csv")
    write_bank(root, "bank_2", make_transactions(200, seed=2, fraud=5), "parquet")
    write_bank(root, "bank_3", make_transactions(150, seed=3, fraud=4), "csv")
    return root


@pytest.fixture
def flower_task() -> None:
    """Give Flower the task identity it needs to build Messages outside a run (as run_simulation does)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = -1024.0,
    window: tuple[float, float] | None = (40.0, 400.0),
    modality: str = "CT",
    transfer_syntax: str = "explicit-le",
    **elements: object,
) -> Path:
    """Write a small, valid CT-like DICOM file with the given stored pixels (uint16; frames first if 3-D)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        CTImageStorage,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        RLELossless,
        generate_uid,
    )

    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = ""
    ds.PatientID = ""
    pixels = np.asarray(pixels, dtype=np.uint16)
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = str(window[0]), str(window[1])
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom")
    elif transfer_syntax == "deflated":
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def write_manifest(site: Path, rows: list[dict[str, object]]) -> Path:
    """Write ``labels.csv`` for a DICOM site folder."""
    site.mkdir(parents=True, exist_ok=True)
    path = site / "labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module- and session-scoped fixtures generate synthetic data here, never in the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLSUITE_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own decoded-image and synthetic-data cache."""
    monkeypatch.setenv("FLSUITE_CACHE", str(tmp_path / "cache"))
