"""Synthetic hospitals: CT-like DICOM slices with and without a liver lesion, and a real clinical table.

Imaging (``medical-three-hospitals``). Each study is one axial abdominal CT slice
drawn from a phantom in Hounsfield units (air, subcutaneous fat, muscle, liver with
texture and vessels, spleen, kidneys, aorta, vertebra), varied in size
and position per patient. A positive study has a hypodense liver lesion (4-16 mm
radius, 50-200 HU below the liver; the smallest are lost to partial volume at the model's
resolution). What differs between hospitals is what differs
between real scanners and case mixes:

* noise level (dose and reconstruction kernel) and correlated noise grain,
* intensity offset (calibration drift, in HU),
* pixel spacing and matrix size (field of view),
* storage: one hospital writes MONOCHROME1 (inverted grey scale) and one RLE
  Lossless compressed files,
* volume and label balance (a large centre with many lesions, a small one with few).

Files are valid DICOM (file meta, CT Image Storage SOP class, study/series/instance
UIDs, CT image module attributes) with no identifiers: type-2 identifier elements
are present but empty, as the basic confidentiality profile leaves them. With
``with_identifiers=True`` a few files per hospital carry a made-up patient name, ID,
birth date and institution, to exercise ``flsuite site check``.

Clinical (``medical-clinical``). The Wisconsin diagnostic breast-cancer data bundled
with scikit-learn (569 real patients, 30 features), split across three hospitals
with quantity skew (about 300/170/100 patients) and label skew (malignant share
about 23%/42%/70%), written as each hospital's own CSV table.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from flcore.data.tables import write_table

LABELS = "labels.csv"


@dataclass(frozen=True)
class HospitalSpec:
    """Scanner character and case mix of one synthetic hospital."""

    name: str
    studies: int
    positive_rate: float
    matrix: int
    spacing_mm: float
    noise_hu: float
    offset_hu: float
    monochrome1: bool = False
    rle: bool = False
    manufacturer: str = "Synthetic"
    kernel: str = "STANDARD"


HOSPITALS: tuple[HospitalSpec, ...] = (
    HospitalSpec("hospital-a", 480, 0.35, 384, 0.90, 14.0, 0.0, manufacturer="Synthetic Aquila", kernel="B30f"),
    HospitalSpec("hospital-b", 260, 0.25, 256, 1.40, 24.0, 25.0, rle=True, manufacturer="Synthetic Borealis"),
    HospitalSpec(
        "hospital-c",
        160,
        0.20,
        320,
        1.10,
        32.0,
        -20.0,
        monochrome1=True,
        manufacturer="Synthetic Corvus",
        kernel="FC08",
    ),
)

_ONE_IN = 20  # with_identifiers: every 20th file of a hospital carries identifiers
_NO_CONSENT_RATE = 0.03


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0):
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / ax
    v = (-(xx - cx) * s + (yy - cy) * c) / ay
    return u * u + v * v <= 1.0


def phantom_hu(spec: HospitalSpec, rng: np.random.Generator, lesion: bool) -> np.ndarray:
    """One axial abdominal slice in HU on the hospital's grid (before noise)."""
    n = spec.matrix
    coords = (np.arange(n) - (n - 1) / 2) * spec.spacing_mm
    xx, yy = np.meshgrid(coords, coords)  # mm from the centre; x to the patient's left, y posterior
    img = np.full((n, n), -1000.0)
    # Body and subcutaneous fat, shifted and scaled per patient.
    bx, by = rng.normal(0, 8), rng.normal(-5, 6)
    ax, ay = rng.uniform(140, 170), rng.uniform(100, 125)
    fat = rng.uniform(8, 25)
    img[_ellipse(xx, yy, bx, by, ax, ay)] = -100.0
    img[_ellipse(xx, yy, bx, by, ax - fat, ay - fat)] = 45.0
    # Liver (image left = patient right), with smooth texture and bright vessels.
    lx, ly = bx - rng.uniform(45, 65), by - rng.uniform(0, 15)
    lax, lay, lang = rng.uniform(55, 75), rng.uniform(45, 60), rng.uniform(-0.4, 0.4)
    liver = _ellipse(xx, yy, lx, ly, lax, lay, lang) & _ellipse(xx, yy, bx, by, ax - fat - 4, ay - fat - 4)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (n, n)), sigma=10.0 / spec.spacing_mm)
    texture *= 5.0 / (texture.std() + 1e-9)
    img[liver] = 60.0 + texture[liver]
    for _ in range(rng.integers(3, 7)):
        vx, vy = lx + rng.uniform(-0.6, 0.6) * lax, ly + rng.uniform(-0.6, 0.6) * lay
        img[liver & _ellipse(xx, yy, vx, vy, *(rng.uniform(2, 5),) * 2)] = 160.0
    # Spleen, kidneys, aorta, vertebra with canal. Bowel gas is left out: with a few hundred
    # studies per hospital its dark pockets turn lesion finding into a localisation problem
    # no small CNN learns, and the comparison of arms would compare failures.
    img[_ellipse(xx, yy, bx + rng.uniform(55, 75), by - rng.uniform(5, 25), 30, 22, 0.5)] = 50.0
    for side in (-1, 1):
        img[_ellipse(xx, yy, bx + side * rng.uniform(45, 60), by + rng.uniform(30, 45), 18, 28, side * 0.4)] = 35.0
    img[_ellipse(xx, yy, bx + 8, by + 20, 11, 11)] = 180.0
    vy_ = by + rng.uniform(50, 62)
    img[_ellipse(xx, yy, bx, vy_, 22, 18)] = 700.0
    img[_ellipse(xx, yy, bx, vy_ + 10, 7, 6)] = 20.0
    if lesion:
        # A hypodense lesion well inside the liver, with a soft edge.
        r = rng.uniform(4, 16)
        for _ in range(50):
            cx, cy = lx + rng.uniform(-0.55, 0.55) * lax, ly + rng.uniform(-0.55, 0.55) * lay
            if _ellipse(np.array(cx), np.array(cy), lx, ly, lax - r, lay - r, lang):
                break
        dist = np.hypot(xx - cx, yy - cy)
        weight = np.clip((r + 1.5 - dist) / 3.0, 0.0, 1.0) * liver
        img -= rng.uniform(50, 200) * weight
    return img


def _noisy(spec: HospitalSpec, rng: np.random.Generator, hu: np.ndarray) -> np.ndarray:
    grain = ndimage.gaussian_filter(rng.normal(0, 1, hu.shape), sigma=0.6 / spec.spacing_mm + 0.4)
    grain *= spec.noise_hu / (grain.std() + 1e-9)
    return hu + grain + spec.offset_hu


_DEID_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)


def _code(value: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _dataset(spec: HospitalSpec, seed: int, index: int, pixels: np.ndarray, identifiers: bool):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=[str(seed), spec.name, str(index), kind])

    sop = uid("sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality = "CT"
    ds.Manufacturer = spec.manufacturer
    ds.ManufacturerModelName = "Phantom CT"
    # Type-2 identifying elements: present and empty, as the confidentiality profile leaves them.
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyID = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic data: no identifiers were ever present"
    # Declared as a PS3.15 tool would: the basic profile, with (made-up) dates kept as modified dates.
    ds.DeidentificationMethodCodeSequence = [_code(code, meaning) for code, meaning in _DEID_CODES]
    if identifiers:
        ds.PatientName = f"Testperson^Synthetic{index}"
        ds.PatientID = f"MRN{seed:02d}{index:06d}"
        ds.PatientBirthDate = "19600101"
        ds.InstitutionName = f"{spec.manufacturer.split()[-1]} General Hospital"
        ds.PatientIdentityRemoved = "NO"
        del ds.DeidentificationMethod, ds.DeidentificationMethodCodeSequence
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.FrameOfReferenceUID = uid("frame")
    ds.PositionReferenceIndicator = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SliceThickness = "2.5"
    ds.KVP = "120"
    ds.ConvolutionKernel = spec.kernel
    ds.ImagePositionPatient = [-(spec.matrix * spec.spacing_mm) / 2, -(spec.matrix * spec.spacing_mm) / 2, 0.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [f"{spec.spacing_mm:.3f}", f"{spec.spacing_mm:.3f}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if spec.monochrome1 else "MONOCHROME2"
    ds.Rows = ds.Columns = spec.matrix
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    if spec.monochrome1:
        # Stored inverted (4095 - (HU + 1024)); a reader that honours MONOCHROME1 shows
        # the same picture as the other hospitals, one that does not sees a negative.
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.WindowCenter, ds.WindowWidth = "3031", "400"
        stored = 4095 - (pixels + 1024)
    else:
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        stored = pixels + 1024
    ds.PixelData = np.clip(np.rint(stored), 0, 4095).astype("<u2").tobytes()
    if spec.rle:
        from pydicom.uid import RLELossless

        ds.compress(RLELossless, encoding_plugin="pydicom")
    return ds


def write_hospitals(
    out: Path,
    seed: int = 0,
    scale: float = 1.0,
    with_identifiers: bool = False,
    hospitals: tuple[HospitalSpec, ...] = HOSPITALS,
) -> list[Path]:
    """Write one folder of DICOM studies plus ``labels.csv`` per hospital; return the folders.

    Each hospital is written to a temporary folder and renamed into place, so an
    interrupted run leaves no half-written hospital behind.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for h, spec in enumerate(hospitals):
        rng = np.random.default_rng([seed, h])
        n = max(10, round(spec.studies * scale))
        n_pos = max(2, round(n * spec.positive_rate))
        labels = np.zeros(n, dtype=int)
        labels[rng.choice(n, n_pos, replace=False)] = 1
        consent = rng.random(n) >= _NO_CONSENT_RATE
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{spec.name}-"))
        rows = []
        for i in range(n):
            hu = _noisy(spec, rng, phantom_hu(spec, rng, bool(labels[i])))
            ds = _dataset(spec, seed, i, hu, with_identifiers and i % _ONE_IN == 0)
            rel = Path(f"study-{i:04d}") / "CT000001.dcm"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(tmp / rel, enforce_file_format=True)
            rows.append({"file": rel.as_posix(), "label": int(labels[i]), "consent": "yes" if consent[i] else "no"})
        pd.DataFrame(rows).to_csv(tmp / LABELS, index=False)
        final = out / spec.name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        folders.append(final)
    return folders


# --------------------------------------------------------------------------------------
# Clinical tables from the real Wisconsin breast-cancer data
# --------------------------------------------------------------------------------------

#: Share of the malignant and of the benign patients each hospital receives.
CLINICAL_SPLIT = {"hospital-a": (0.33, 0.64), "hospital-b": (0.34, 0.28), "hospital-c": (0.33, 0.08)}


def clinical_hospitals(seed: int = 0) -> dict[str, pd.DataFrame]:
    """The bundled Wisconsin diagnostic breast-cancer data split across three hospitals.

    ``label`` is 1 for malignant (scikit-learn codes malignant as 0), and every
    patient has ``consent = yes``.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["label"] = (frame.pop("target") == 0).astype(int)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in CLINICAL_SPLIT}
    for cls, col in ((1, 0), (0, 1)):
        idx = rng.permutation(np.flatnonzero(frame["label"].to_numpy() == cls))
        shares = np.array([CLINICAL_SPLIT[name][col] for name in CLINICAL_SPLIT])
        cuts = np.round(np.cumsum(shares / shares.sum()) * len(idx)).astype(int)[:-1]
        for name, chunk in zip(CLINICAL_SPLIT, np.split(idx, cuts), strict=True):
            parts[name].extend(chunk.tolist())
    out = {}
    for name, rows in parts.items():
        table = frame.iloc[sorted(rows)].reset_index(drop=True)
        table.insert(0, "patient_id", [f"{name[-1]}{i:04d}" for i in range(len(table))])
        table["consent"] = "yes"
        out[name] = table
    return out


def write_clinical(out: Path, seed: int = 0, file_format: str = "csv") -> list[Path]:
    """Write ``out/<hospital>/clinical.<csv|parquet>`` for the three clinical hospitals."""
    out = Path(out)
    folders = []
    for name, table in clinical_hospitals(seed).items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_table(table, folder / f"clinical.{file_format}")
        folders.append(folder)
    return folders
