"""Synthetic hospitals: valid DICOM with scanner character, and the real clinical data split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless

from domains.medical.adapters.dicom import DicomAdapter
from domains.medical.synthetic import HOSPITALS, clinical_hospitals, write_hospitals
from flcore.cli import main


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospitals")
    write_hospitals(out, seed=0, scale=0.15)
    return out


def test_files_are_valid_ct_dicom_with_unique_uids(hospitals: Path) -> None:
    uids = set()
    for spec in HOSPITALS:
        files = sorted((hospitals / spec.name).rglob("*.dcm"))
        assert len(files) == max(10, round(spec.studies * 0.15))
        for path in files:
            ds = pydicom.dcmread(path)  # no force=True: preamble and file meta must be there
            assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.file_meta.TransferSyntaxUID == (RLELossless if spec.rle else ExplicitVRLittleEndian)
            assert ds.Rows == ds.Columns == spec.matrix and float(ds.PixelSpacing[0]) == pytest.approx(spec.spacing_mm)
            assert ds.PhotometricInterpretation == ("MONOCHROME1" if spec.monochrome1 else "MONOCHROME2")
            assert ds.pixel_array.shape == (spec.matrix, spec.matrix)
            uids.add(str(ds.SOPInstanceUID))
    assert len(uids) == sum(len(list((hospitals / s.name).rglob("*.dcm"))) for s in HOSPITALS)


def test_hospitals_differ_in_volume_and_label_balance(hospitals: Path) -> None:
    rates = [pd.read_csv(hospitals / s.name / "labels.csv")["label"].mean() for s in HOSPITALS]
    sizes = [len(pd.read_csv(hospitals / s.name / "labels.csv")) for s in HOSPITALS]
    assert sizes[0] > sizes[1] > sizes[2] and rates[0] > rates[2]


def test_monochrome1_hospital_looks_like_the_others_once_decoded(hospitals: Path) -> None:
    # Bright bone and dark air in every hospital: MONOCHROME1 must be inverted by the reader.
    adapter = DicomAdapter(image_size=64)
    for spec in HOSPITALS:
        x = adapter.read(hospitals / spec.name).x[:, 0]
        corner, centre = x[:, :4, :4].mean(), x[:, 24:40, 24:40].mean()
        assert corner < 0.05 and centre > 0.3, spec.name


def test_no_identifiers_by_default_and_some_on_request(hospitals: Path, tmp_path: Path) -> None:
    assert main(["site", "check", "--domain", "medical", "--data", str(hospitals)]) == 0
    write_hospitals(tmp_path, seed=1, scale=0.05, with_identifiers=True)
    findings = DicomAdapter().scan_identifiers(tmp_path / "hospital-a")
    assert findings and {f.tag for f in findings} >= {"PatientName (0010,0010)", "PatientID (0010,0020)"}
    assert main(["site", "check", "--domain", "medical", "--data", str(tmp_path)]) == 2


def test_lesions_make_the_liver_darker() -> None:
    from domains.medical.synthetic import phantom_hu

    spec = HOSPITALS[0]
    with_lesion = phantom_hu(spec, np.random.default_rng(3), lesion=True)
    without = phantom_hu(spec, np.random.default_rng(3), lesion=False)
    diff = without - with_lesion
    assert diff.min() >= 0 and diff.max() >= 50  # only darker, by at least 50 HU at the centre


def test_clinical_split_is_the_whole_real_data_set_with_label_and_size_skew() -> None:
    tables = clinical_hospitals(seed=0)
    sizes = [len(t) for t in tables.values()]
    malignant = [t["label"].mean() for t in tables.values()]
    assert sum(sizes) == 569 and sum(int(t["label"].sum()) for t in tables.values()) == 212
    assert sizes[0] > sizes[1] > sizes[2] and malignant[0] < malignant[1] < malignant[2]
    assert all(t.columns[1] == "mean_radius" and (t["consent"] == "yes").all() for t in tables.values())
