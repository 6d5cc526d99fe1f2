"""DICOM adapter: pixel handling on generated files and on pydicom's bundled real files, and every bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import make_dicom, write_manifest
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGExtended12Bit, JPEGLSNearLossless

from domains.medical.adapters.dicom import DicomAdapter
from domains.medical.adapters.pixels import to_image
from flcore.exceptions import DataValidationError

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def stored(hu: np.ndarray) -> np.ndarray:
    return (np.asarray(hu) + 1024).astype(np.uint16)


def gradient(rows: int = 32, cols: int = 32) -> np.ndarray:
    """HU from -160 to 240 left to right: the whole soft-tissue window."""
    return np.tile(np.linspace(-160, 240, cols), (rows, 1))


def site_with(tmp_path: Path, files: dict[str, Path | np.ndarray], labels: dict[str, int] | None = None) -> Path:
    """A hospital folder: bundled files copied in, or arrays written as DICOM, plus labels.csv."""
    site = tmp_path / "hospital"
    for name, src in files.items():
        dst = site / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copy(src, dst)
        else:
            make_dicom(dst, src)
    labels = labels or {name: i % 2 for i, name in enumerate(files)}
    write_manifest(site, [{"file": k, "label": v, "consent": "yes"} for k, v in labels.items()])
    return site


# -- pixel handling ------------------------------------------------------------------------


def test_modality_lut_and_window_map_hu_to_the_unit_range(tmp_path: Path) -> None:
    # Prepare: stored = (HU + 1100) / 2, undone by slope 2 and intercept -1100.
    hu = np.array([[-1000, -160], [40, 240]], dtype=float)
    path = make_dicom(tmp_path / "a.dcm", (hu + 1100) / 2, slope=2.0, intercept=-1100.0, window=(40, 400))
    # Execute
    img = to_image(pydicom.dcmread(path), size=2)
    # Assert: window [-160, 240]: -1000 and -160 clip to 0, 40 is the centre, 240 the top.
    np.testing.assert_allclose(img, [[0.0, 0.0], [0.5, 1.0]], atol=1e-6)


def test_ct_without_window_uses_the_soft_tissue_default(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "a.dcm", stored(np.array([[40.0, 240.0]])), window=None)
    img = to_image(pydicom.dcmread(path), size=2)
    np.testing.assert_allclose(img[0], [0.5, 1.0], atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    px = stored(gradient())
    mono2 = to_image(pydicom.dcmread(make_dicom(tmp_path / "m2.dcm", px)), size=16)
    mono1 = to_image(pydicom.dcmread(make_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1")), size=16)
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_multi_frame_takes_the_middle_frame(tmp_path: Path) -> None:
    frames = np.stack([np.full((8, 8), hu) for hu in (-160.0, 40.0, 240.0, 240.0)])  # mean 0.625, middle 1.0
    ds = pydicom.dcmread(make_dicom(tmp_path / "mf.dcm", stored(frames)))
    np.testing.assert_allclose(to_image(ds, size=4), 1.0, atol=1e-6)
    np.testing.assert_allclose(to_image(ds, size=4, frames="mean"), 0.625, atol=1e-6)
    first = pydicom.dcmread(make_dicom(tmp_path / "mf3.dcm", stored(frames[:3])))  # middle of three is frame 1
    np.testing.assert_allclose(to_image(first, size=4), 0.5, atol=1e-6)


def test_non_square_images_are_padded_then_resized(tmp_path: Path) -> None:
    hu = np.full((20, 40), 240.0)
    hu[-1, -1] = 200.0  # not a constant image, which is refused
    ds = pydicom.dcmread(make_dicom(tmp_path / "wide.dcm", stored(hu)))
    img = to_image(ds, size=64)
    assert img.shape == (64, 64)
    assert img[32, 32] == pytest.approx(1.0) and img[0, 32] == pytest.approx(0.0)  # padding above the image


def test_rle_and_deflated_files_decode_like_the_uncompressed_one(tmp_path: Path) -> None:
    px = stored(gradient())
    plain = to_image(pydicom.dcmread(make_dicom(tmp_path / "p.dcm", px)), size=16)
    for ts in ("rle", "deflated"):
        ds = pydicom.dcmread(make_dicom(tmp_path / f"{ts}.dcm", px, transfer_syntax=ts))
        np.testing.assert_allclose(to_image(ds, size=16), plain, atol=1e-6)


def test_bundled_mr_decodes_identically_little_big_endian_and_rle() -> None:
    images = [
        to_image(pydicom.dcmread(TEST_FILES / name), size=32)
        for name in ("MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm")
    ]
    assert images[0].std() > 0.05  # a real picture, not a flat field
    for other in images[1:]:
        np.testing.assert_allclose(other, images[0], atol=1e-6)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_bundled_real_files_read_through_the_adapter(tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]
    names.append("SC_rgb_rle_2frame.dcm")  # multi-frame, colour
    site = site_with(tmp_path, {f"series/{n}": TEST_FILES / n for n in names})
    data = DicomAdapter(image_size=32).read(site)
    assert data.x.shape == (len(names), 1, 32, 32) and data.x.dtype == np.float32
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert all(data.x[i].std() > 0 for i in range(len(names)))
    np.testing.assert_array_equal(data.y, [i % 2 for i in range(len(names))])


# -- the manifest ------------------------------------------------------------------------------


def test_rows_can_name_files_by_sop_instance_uid(tmp_path: Path) -> None:
    site = tmp_path / "h"
    make_dicom(site / "deep" / "er" / "x.dcm", stored(gradient()))
    uid = str(pydicom.dcmread(site / "deep" / "er" / "x.dcm").SOPInstanceUID)
    write_manifest(site, [{"sop_instance_uid": uid, "label": 1}])
    data = DicomAdapter(image_size=16).read(site)
    assert data.y.tolist() == [1] and data.info["files"] == ["deep/er/x.dcm"]


def test_records_without_consent_are_never_opened(tmp_path: Path) -> None:
    site = site_with(tmp_path, {"a.dcm": stored(gradient()), "b.dcm": stored(gradient())})
    (site / "garbage.dcm").write_text("not dicom at all")
    write_manifest(
        site,
        [
            {"file": "a.dcm", "label": 1, "consent": "yes"},
            {"file": "b.dcm", "label": 0, "consent": "yes"},
            {"file": "garbage.dcm", "label": 0, "consent": "no"},
        ],
    )
    data = DicomAdapter(image_size=16, require_consent=True).read(site)
    assert len(data) == 2 and data.info["skipped"]["no_consent"] == 1


def test_consent_required_but_absent(tmp_path: Path) -> None:
    site = tmp_path / "h"
    make_dicom(site / "a.dcm", stored(gradient()))
    write_manifest(site, [{"file": "a.dcm", "label": 1}])
    with pytest.raises(DataValidationError, match=r"labels\.csv, field 'consent'.*no 'consent' column"):
        DicomAdapter(require_consent=True).read(site)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([{"file": "a.dcm", "lbl": 1}], r"field 'label'.*no 'label' column"),
        ([{"file": "a.dcm", "label": 2}], r"field 'label'.*row 1 holds a value other than 0 or 1"),
        ([{"path": "a.dcm", "label": 1}], r"field 'file'.*neither column exists"),
        ([{"file": "a.dcm", "label": 1, "consent": "maybe"}], r"field 'consent'.*found a text value"),
    ],
)
def test_bad_manifests_are_refused_in_both_modes(tmp_path: Path, rows: list[dict[str, object]], match: str) -> None:
    site = tmp_path / "h"
    make_dicom(site / "a.dcm", stored(gradient()))
    write_manifest(site, rows)
    for strict in (True, False):
        with pytest.raises(DataValidationError, match=match):
            DicomAdapter().read(site, strict=strict)


def test_missing_manifest(tmp_path: Path) -> None:
    site = tmp_path / "h"
    make_dicom(site / "a.dcm", stored(gradient()))
    with pytest.raises(DataValidationError, match=r"no labels\.csv manifest"):
        DicomAdapter().read(site)


# -- bad files: strict refuses, lenient skips and counts ----------------------------------------


def bad_site(tmp_path: Path) -> Path:
    site = site_with(tmp_path, {"good1.dcm": stored(gradient()), "good2.dcm": stored(gradient())})
    (site / "notes.dat").write_text("this is a text file, not DICOM")
    make_dicom(site / "nopixels.dcm", stored(gradient()))
    ds = pydicom.dcmread(site / "nopixels.dcm")
    del ds.PixelData
    ds.save_as(site / "nopixels.dcm")
    write_manifest(
        site,
        [
            {"file": "good1.dcm", "label": 1, "consent": "yes"},
            {"file": "good2.dcm", "label": 0, "consent": "yes"},
            {"file": "notes.dat", "label": 0, "consent": "yes"},
            {"file": "nopixels.dcm", "label": 1, "consent": "yes"},
            {"file": "gone/missing.dcm", "label": 0, "consent": "yes"},
            {"file": "../outside.dcm", "label": 0, "consent": "yes"},
        ],
    )
    return site


def test_strict_mode_refuses_the_first_bad_file_and_counts_the_rest(tmp_path: Path) -> None:
    site = bad_site(tmp_path)
    with pytest.raises(DataValidationError, match=r"notes\.dat: the file is not DICOM.*3 more problem"):
        DicomAdapter().read(site)


def test_lenient_mode_skips_and_counts_with_paths(tmp_path: Path) -> None:
    data = DicomAdapter().read(bad_site(tmp_path), strict=False)
    assert len(data) == 2
    assert data.info["skipped"] == {"not_dicom": 1, "no_pixel_data": 1, "missing_file": 2, "no_consent": 0}
    text = "\n".join(data.info["skipped_examples"])
    assert "notes.dat" in text and "nopixels.dcm" in text and "gone/missing.dcm" in text and "../outside.dcm" in text


def test_truncated_pixel_data_is_reported(tmp_path: Path) -> None:
    site = site_with(tmp_path, {"ok.dcm": stored(gradient()), "cut.dcm": stored(gradient())})
    raw = (site / "cut.dcm").read_bytes()
    (site / "cut.dcm").write_bytes(raw[:-300])
    with pytest.raises(DataValidationError, match=r"cut\.dcm"):
        DicomAdapter().read(site)
    assert len(DicomAdapter().read(site, strict=False)) == 1


@pytest.mark.parametrize(
    ("name", "syntax"), [("JPEG-lossy.dcm", JPEGExtended12Bit), ("JPEGLSNearLossless_08.dcm", JPEGLSNearLossless)]
)
def test_compressed_file_without_decoder_names_syntax_and_package(tmp_path: Path, name: str, syntax: str) -> None:
    if get_decoder(syntax).is_available:
        pytest.skip(f"a decoder for {syntax} is installed here")
    site = site_with(tmp_path, {name: TEST_FILES / name})
    for strict in (True, False):  # an install fixes this: refused in lenient mode too
        match = rf"{name}, field 'TransferSyntaxUID'.*JPEG.*pip install pylibjpeg"
        with pytest.raises(DataValidationError, match=match):
            DicomAdapter().read(site, strict=strict)


# -- the cache ------------------------------------------------------------------------------------


def test_second_read_comes_from_the_cache_and_changes_invalidate_it(tmp_path: Path) -> None:
    site = site_with(tmp_path, {"a.dcm": stored(gradient()), "b.dcm": stored(gradient())})
    adapter = DicomAdapter(image_size=16)
    first = adapter.read(site)
    second = adapter.read(site)
    assert "cached" not in first.info and second.info["cached"] is True
    np.testing.assert_array_equal(first.x, second.x)
    # Rewrite one file with other pixels: its new modification time must force a new decode.
    make_dicom(site / "a.dcm", stored(gradient() + 80.0))
    st = (site / "a.dcm").stat()
    os.utime(site / "a.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = adapter.read(site)
    assert "cached" not in third.info and third.x[0].mean() > first.x[0].mean()


def test_manifest_problems_that_used_to_crash(tmp_path: Path) -> None:
    site = tmp_path / "h"
    make_dicom(site / "a.dcm", stored(gradient()))
    (site / "labels.csv").write_text("file,label,Label\na.dcm,1,1\n")
    with pytest.raises(DataValidationError, match=r"column 'label' appears more than once"):
        DicomAdapter().read(site)
    (site / "labels.csv").write_text("file,label,consent\na.dcm,1,yes\nb.dcm,7,no\n")
    assert len(DicomAdapter().read(site)) == 1  # a bad label on a non-consented row is not looked at
    (site / "dangling.dcm").symlink_to(site / "nowhere.dcm")
    assert len(DicomAdapter().read(site)) == 1  # the cache key skips a dangling link
