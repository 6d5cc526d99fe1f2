"""Records to score (``read_unlabelled``): the same features as training, labels optional, ids per record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_dicom, make_transactions, write_bank, write_manifest

from domains.finance.adapters.transactions import TransactionAdapter
from domains.iot.adapters.features import SpectralFeatures
from domains.iot.adapters.vibration import VibrationAdapter, split_device
from domains.medical.adapters.clinical import ClinicalTableAdapter
from domains.medical.adapters.dicom import DicomAdapter
from flcore.config import RunConfig
from flcore.data.site import UNLABELLED, SiteData, split_site
from flcore.exceptions import DataValidationError


def assert_ids(ids: np.ndarray | None, n: int) -> np.ndarray:
    """One distinct string id per record."""
    assert ids is not None and len(ids) == n
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == n
    return ids


def ids_of(site: SiteData) -> list[str]:
    assert site.ids is not None
    return [str(i) for i in site.ids]


# -- finance: transactions ------------------------------------------------------------------------


def test_transactions_score_like_training_with_or_without_labels(tmp_path: Path) -> None:
    # Prepare: one bank of 40 labelled transactions, and a copy of its table without the label.
    frame = make_transactions(40, seed=1, fraud=4)
    path = write_bank(tmp_path, "bank", frame)
    unlabelled = write_bank(tmp_path, "new", frame.drop(columns=["label"]), "parquet")
    adapter = TransactionAdapter()
    # Execute
    train = adapter.read(tmp_path / "bank")
    labelled = adapter.read_unlabelled(tmp_path / "bank")
    one_file = adapter.read_unlabelled(unlabelled)
    # Assert: identical features, labels used where present, -1 where absent, ids "file:ROW".
    np.testing.assert_array_equal(labelled.x, train.x)
    np.testing.assert_array_equal(one_file.x, train.x)
    np.testing.assert_array_equal(labelled.y, train.y)
    assert (one_file.y == UNLABELLED).all() and one_file.y.dtype == np.int64
    assert assert_ids(train.ids, 40)[0] == "transactions.csv:1" and ids_of(train)[-1] == "transactions.csv:40"
    np.testing.assert_array_equal(labelled.ids, train.ids)
    assert assert_ids(one_file.ids, 40)[2] == "transactions.parquet:3"
    assert path.exists()


def test_transactions_with_some_labels_blank_keep_the_others(tmp_path: Path) -> None:
    frame = make_transactions(10, fraud=2).astype({"label": "Int64"})
    frame.loc[[0, 5], "label"] = pd.NA
    path = write_bank(tmp_path, "bank", frame)
    site = TransactionAdapter().read_unlabelled(path)
    assert site.y.tolist() == [-1, 1, 0, 0, 0, -1, 0, 0, 0, 0]
    with pytest.raises(DataValidationError, match=r"field 'label'.*labels must be 0 or 1 but found an empty value"):
        TransactionAdapter().read(tmp_path / "bank")  # training still needs every label


def test_transactions_to_score_are_still_validated(tmp_path: Path) -> None:
    frame = make_transactions(10).drop(columns=["label"])
    bad = write_bank(tmp_path, "nan", frame.assign(f005=frame["f005"].where(frame.index != 3)))
    with pytest.raises(DataValidationError, match=r"field 'f005'.*expected finite numbers but found nan in row 4"):
        TransactionAdapter().read_unlabelled(bad)
    short = write_bank(tmp_path, "short", frame.drop(columns=["f127"]))
    with pytest.raises(
        DataValidationError, match=r"expected exactly 128 feature columns but found 127 \(besides ignored id/time"
    ):
        TransactionAdapter().read_unlabelled(short)
    label2 = write_bank(tmp_path, "label2", frame.assign(label=2))
    with pytest.raises(DataValidationError, match=r"field 'label'.*labels must be 0 or 1.*Map fraud to 1"):
        TransactionAdapter().read_unlabelled(label2)
    (tmp_path / "notes.txt").write_text("no table")
    with pytest.raises(DataValidationError, match=r"notes\.txt: expected a bank folder or a \.csv / \.parquet"):
        TransactionAdapter().read_unlabelled(tmp_path / "notes.txt")


def test_split_site_carries_the_ids(tmp_path: Path) -> None:
    write_bank(tmp_path, "bank", make_transactions(40, fraud=8))
    site = TransactionAdapter().read(tmp_path / "bank")
    split = split_site(site, 0.25, seed=0)
    assert split.test.ids is not None
    rows = [int(i.split(":")[1]) - 1 for i in split.test.ids]
    np.testing.assert_array_equal(split.test.x, site.x[rows])


# -- medical: clinical tables ---------------------------------------------------------------------


def patients(n: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["age", "bmi", "sbp"])
    frame.insert(0, "patient_id", [f"p{i}" for i in range(n)])
    frame["label"] = np.arange(n) % 2
    frame["consent"] = ["yes", "yes", "no", "yes", "yes", "yes", "no", "yes"][:n]
    return frame


def test_clinical_scoring_drops_non_consented_rows_as_training_does(tmp_path: Path) -> None:
    frame = patients()
    (tmp_path / "h").mkdir()
    frame.to_csv(tmp_path / "h" / "records.csv", index=False)
    adapter = ClinicalTableAdapter(require_consent=True)
    train = adapter.read(tmp_path / "h")
    score = adapter.read_unlabelled(tmp_path / "h")
    np.testing.assert_array_equal(score.x, train.x)
    np.testing.assert_array_equal(score.y, train.y)
    np.testing.assert_array_equal(score.ids, train.ids)
    assert list(assert_ids(train.ids, 6)) == [f"records.csv:{r}" for r in (1, 2, 4, 5, 6, 8)]
    assert score.info["skipped"] == {"no_consent": 2, "invalid": 0}


def test_clinical_scoring_needs_neither_labels_nor_consent(tmp_path: Path) -> None:
    path = tmp_path / "new.parquet"
    patients().drop(columns=["label", "consent"]).to_parquet(path, index=False)
    site = ClinicalTableAdapter(require_consent=True).read_unlabelled(path)
    assert len(site) == 8 and (site.y == UNLABELLED).all()
    np.testing.assert_array_equal(site.x, patients()[["age", "bmi", "sbp"]].to_numpy(dtype=np.float32))
    assert assert_ids(site.ids, 8)[0] == "new.parquet:1"


def test_clinical_bad_record_is_refused_or_skipped_and_counted(tmp_path: Path) -> None:
    frame = patients().drop(columns=["label"])
    frame.loc[4, "bmi"] = np.inf
    (tmp_path / "h").mkdir()
    frame.to_csv(tmp_path / "h" / "records.csv", index=False)
    with pytest.raises(DataValidationError, match=r"records\.csv, field 'bmi'.*expected finite numbers.*row 5"):
        ClinicalTableAdapter().read_unlabelled(tmp_path / "h")
    site = ClinicalTableAdapter().read_unlabelled(tmp_path / "h", strict=False)
    assert site.info["skipped"] == {"no_consent": 2, "invalid": 1}
    assert "records.csv:5" not in list(assert_ids(site.ids, 5))


# -- medical: DICOM ---------------------------------------------------------------------------------


def image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(-160, 240, size=(16, 16)) + 1024).astype(np.uint16)


def hospital(tmp_path: Path, manifest: bool = True) -> Path:
    """Three images (one in a sub-folder); labels.csv with consent, the last one declined."""
    site = tmp_path / "hospital"
    names = ["a.dcm", "b.dcm", "series/c.dcm"]
    for i, name in enumerate(names):
        make_dicom(site / name, image(i))
    if manifest:
        consent = ["yes", "yes", "no"]
        rows = zip(names, consent, strict=True)
        write_manifest(site, [{"file": n, "label": i % 2, "consent": c} for i, (n, c) in enumerate(rows)])
    return site


def test_dicom_scoring_with_a_manifest_is_training_read(tmp_path: Path) -> None:
    site = hospital(tmp_path)
    adapter = DicomAdapter(image_size=8)
    train = adapter.read(site)
    score = adapter.read_unlabelled(site)
    np.testing.assert_array_equal(score.x, train.x)
    np.testing.assert_array_equal(score.y, train.y)
    assert list(assert_ids(train.ids, 2)) == ["a.dcm", "b.dcm"]  # c.dcm: no consent, never opened
    np.testing.assert_array_equal(score.ids, train.ids)
    # The cache keeps training and scoring apart, and gives the ids back.
    again = adapter.read(site)
    assert again.info.get("cached") and ids_of(again) == ["a.dcm", "b.dcm"]
    assert not score.info.get("cached")


def test_dicom_without_a_manifest_scores_every_file(tmp_path: Path) -> None:
    labelled = DicomAdapter(image_size=8, use_cache=False).read(hospital(tmp_path / "one"))
    site = hospital(tmp_path / "two", manifest=False)
    (site / "policy.toml").write_text("")  # not a DICOM candidate
    adapter = DicomAdapter(image_size=8, require_consent=True)
    score = adapter.read_unlabelled(site)
    assert list(assert_ids(score.ids, 3)) == ["a.dcm", "b.dcm", "series/c.dcm"]
    assert (score.y == UNLABELLED).all()
    np.testing.assert_array_equal(score.x[:2], labelled.x)  # same pixels, same images
    assert adapter.read_unlabelled(site).info.get("cached")
    single = adapter.read_unlabelled(site / "series" / "c.dcm")
    assert ids_of(single) == ["c.dcm"] and single.y.tolist() == [UNLABELLED]
    np.testing.assert_array_equal(single.x, score.x[2:])


def test_dicom_manifest_labels_are_optional_when_scoring(tmp_path: Path) -> None:
    site = hospital(tmp_path, manifest=False)
    write_manifest(site, [{"file": "b.dcm", "label": ""}, {"file": "a.dcm", "label": "1"}])
    score = DicomAdapter(image_size=8).read_unlabelled(site)
    assert ids_of(score) == ["b.dcm", "a.dcm"] and score.y.tolist() == [UNLABELLED, 1]
    write_manifest(site, [{"file": "a.dcm"}])
    assert DicomAdapter(image_size=8).read_unlabelled(site).y.tolist() == [UNLABELLED]
    with pytest.raises(DataValidationError, match=r"labels\.csv, field 'label'.*no 'label' column"):
        DicomAdapter(image_size=8).read(site)


def test_dicom_identifiers_and_bad_files_are_refused_or_skipped(tmp_path: Path) -> None:
    site = hospital(tmp_path, manifest=False)
    make_dicom(site / "named.dcm", image(5), PatientName="Doe^John")
    with pytest.raises(DataValidationError, match=r"named\.dcm, field 'PatientName \(0010,0010\)'.*direct identifier"):
        DicomAdapter(image_size=8).read_unlabelled(site)
    with pytest.raises(DataValidationError, match=r"direct identifier"):
        DicomAdapter(image_size=8).read_unlabelled(site / "named.dcm")
    (site / "notes.dat").write_text("not DICOM")
    lenient = DicomAdapter(image_size=8).read_unlabelled(site, strict=False)
    assert ids_of(lenient) == ["a.dcm", "b.dcm", "series/c.dcm"]
    assert lenient.info["skipped"] == {"identifiers": 1, "not_dicom": 1, "no_consent": 0}
    assert "Doe" not in str(lenient.info["skipped_examples"])  # never the value
    (site / "named.dcm").unlink()
    with pytest.raises(DataValidationError, match=r"notes\.dat: the file is not DICOM"):
        DicomAdapter(image_size=8).read_unlabelled(site)


# -- IoT: vibration recordings ----------------------------------------------------------------------

FS = 12_800
ADAPTER = VibrationAdapter(SpectralFeatures())


def vibration(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(FS) / FS
    return (0.3 * np.sin(2 * np.pi * 25 * t) + rng.normal(0, 0.05, t.size)).astype(np.float32)


def device(root: Path, labels: bool = True) -> Path:
    """Two service recordings and two labelled ones (normal, fault) under recordings/."""
    folder = root / "pump-1"
    (folder / "recordings").mkdir(parents=True)
    (folder / "device.json").write_text(json.dumps({"machine_id": "pump-1", "sampling_rate_hz": FS}))
    for i in range(4):
        np.save(folder / "recordings" / f"rec-{i}.npy", vibration(i))
    if labels:
        rows = [{"file": "recordings/rec-2.npy", "label": "normal"}, {"file": "recordings/rec-3.npy", "label": "fault"}]
        pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def test_vibration_scoring_keeps_features_and_leaves_service_data_unlabelled(tmp_path: Path) -> None:
    folder = device(tmp_path)
    train = ADAPTER.read(folder)
    score = ADAPTER.read_unlabelled(folder)
    np.testing.assert_array_equal(score.x, train.x)
    np.testing.assert_array_equal(score.ids, train.ids)
    per = SpectralFeatures().count(FS, FS)
    ids = assert_ids(train.ids, 4 * per)
    assert ids[0] == "recordings/rec-0.npy#0" and ids[per] == "recordings/rec-1.npy#0"
    assert ids[per - 1] == f"recordings/rec-0.npy#{per - 1}"
    assert train.y.tolist() == [0] * 3 * per + [1] * per  # training: service data taken as normal
    assert score.y.tolist() == [UNLABELLED] * 2 * per + [0] * per + [1] * per
    test = split_device(train, RunConfig()).test
    assert test.ids is not None and test.ids[0] == "recordings/rec-2.npy#0"


def test_vibration_single_recording_uses_its_device_settings(tmp_path: Path) -> None:
    folder = device(tmp_path, labels=False)
    whole = ADAPTER.read_unlabelled(folder)
    assert (whole.y == UNLABELLED).all()
    single = ADAPTER.read_unlabelled(folder / "recordings" / "rec-1.npy")  # device.json one folder up
    per = SpectralFeatures().count(FS, FS)
    assert ids_of(single) == [f"rec-1.npy#{i}" for i in range(per)]
    np.testing.assert_array_equal(single.x, whole.x[per : 2 * per])
    assert (single.y == UNLABELLED).all()
    # A table carrying its own sampling rate needs no device.json.
    table = tmp_path / "loose" / "snapshot.csv"
    table.parent.mkdir()
    pd.DataFrame({"accel": vibration(1), "sampling_rate_hz": FS}).to_csv(table, index=False)
    np.testing.assert_allclose(ADAPTER.read_unlabelled(table).x, single.x, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataValidationError, match=r"device\.json: expected a device folder or one recording file"):
        ADAPTER.read_unlabelled(folder / "device.json")


def test_vibration_bad_recording_is_refused_or_skipped(tmp_path: Path) -> None:
    folder = device(tmp_path)
    np.save(folder / "recordings" / "stuck.npy", np.zeros(FS, dtype=np.float32))
    with pytest.raises(DataValidationError, match=r"stuck\.npy, field 'accel': the sensor is flat-lined"):
        ADAPTER.read_unlabelled(folder)
    with pytest.raises(DataValidationError, match=r"stuck\.npy.*flat-lined"):
        ADAPTER.read_unlabelled(folder / "recordings" / "stuck.npy")
    lenient = ADAPTER.read_unlabelled(folder, strict=False)
    assert lenient.info["skipped"] == {"flatline": 1}
    assert not any(i.startswith("recordings/stuck.npy") for i in assert_ids(lenient.ids, len(lenient)))
