"""Images the model can trust: palettes decoded, masks, dose grids and blank images refused, huge headers caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import make_dicom, write_manifest

import domains.medical.adapters.dicom as dicom  # the adapter calls dicom.to_image
from domains.medical.adapters.dicom import DicomAdapter
from domains.medical.adapters.pixels import display_pixels
from flcore.exceptions import DataValidationError

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
GOOD = (np.arange(256, dtype=np.uint16).reshape(16, 16) + 1000).astype(np.uint16)


def hospital(tmp_path: Path, extra: dict[str, Path]) -> Path:
    """Four good images plus ``extra`` files (name -> source file), all listed in labels.csv."""
    site = tmp_path / "hospital"
    names = []
    for i in range(4):
        make_dicom(site / f"good{i}.dcm", GOOD + i)
        names.append(f"good{i}.dcm")
    for name, src in extra.items():
        shutil.copy(src, site / name)
        names.append(name)
    write_manifest(site, [{"file": n, "label": i % 2} for i, n in enumerate(names)])
    return site


def test_palette_colour_is_decoded_through_its_palette() -> None:
    ds = pydicom.dcmread(TEST_FILES / "examples_palette.dcm")
    img = display_pixels(ds)
    # The palette by hand: each stored index picks a red, green and blue entry (16-bit descriptors here).
    first = int(ds.RedPaletteColorLookupTableDescriptor[1])
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    luts = [
        np.frombuffer(getattr(ds, f"{c}PaletteColorLookupTableData"), dtype=f"<u{bits // 8}")
        for c in ("Red", "Green", "Blue")
    ]
    idx = np.clip(ds.pixel_array.astype(np.int64) - first, 0, len(luts[0]) - 1)
    luma = (0.299 * luts[0][idx] + 0.587 * luts[1][idx] + 0.114 * luts[2][idx]) / (2**bits - 1)
    np.testing.assert_allclose(img, luma, atol=2e-3)
    grey_of_indices = ds.pixel_array / ds.pixel_array.max()
    assert np.abs(img - grey_of_indices).mean() > 0.05  # what the old reader trained on


@pytest.mark.parametrize(
    ("name", "what"),
    [("liver_1frame.dcm", "Segmentation Storage"), ("rtdose_1frame.dcm", "RT Dose Storage")],
)
def test_non_image_objects_are_refused_or_skipped(tmp_path: Path, name: str, what: str) -> None:
    site = hospital(tmp_path, {name: TEST_FILES / name})
    with pytest.raises(DataValidationError, match=rf"{name}.*it is a {what}.*not an image"):
        DicomAdapter(use_cache=False).read(site)
    data = DicomAdapter(use_cache=False).read(site, strict=False)
    assert len(data) == 4 and data.info["skipped"]["not_image"] == 1


def test_one_bit_mask_is_not_an_image(tmp_path: Path) -> None:
    from pydicom.pixels import pack_bits

    path = make_dicom(tmp_path / "mask.dcm", GOOD)
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = pack_bits(np.eye(16, dtype=np.uint8))
    ds.save_as(path)
    site = hospital(tmp_path, {"mask.dcm": path})
    with pytest.raises(DataValidationError, match=r"mask\.dcm.*1 bit deep"):
        DicomAdapter(use_cache=False).read(site)


def test_constant_image_refused_in_strict_mode_and_skipped_in_lenient(tmp_path: Path) -> None:
    blank = make_dicom(tmp_path / "blank.dcm", np.full((16, 16), 1024, dtype=np.uint16))
    site = hospital(tmp_path, {"blank.dcm": blank})
    with pytest.raises(DataValidationError, match=r"blank\.dcm.*every pixel holds the same value"):
        DicomAdapter(use_cache=False).read(site)
    data = DicomAdapter(use_cache=False).read(site, strict=False)
    assert len(data) == 4 and data.info["skipped"]["constant"] == 1


def test_header_claiming_more_than_the_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_dicom(tmp_path / "huge.dcm", GOOD)
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 60000
    ds.NumberOfFrames = 5000  # about 36 TB at 16 bits
    ds.save_as(path)
    site = hospital(tmp_path, {"huge.dcm": path})
    decoded: list[str] = []
    real = dicom.to_image
    monkeypatch.setattr(dicom, "to_image", lambda ds, *a, **k: decoded.append(ds.filename) or real(ds, *a, **k))
    with pytest.raises(DataValidationError, match=r"huge\.dcm.*claims 60000 x 60000 pixels x 5000 frame"):
        DicomAdapter(use_cache=False).read(site)
    assert decoded == []  # refused from the header: nothing was decoded
    data = DicomAdapter(use_cache=False).read(site, strict=False)
    assert data.info["skipped"]["too_large"] == 1 and not any("huge" in f for f in decoded)


def test_palette_image_without_its_palette_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nopalette.dcm"
    ds = pydicom.dcmread(TEST_FILES / "examples_palette.dcm")
    for colour in ("Red", "Green", "Blue"):
        delattr(ds, f"{colour}PaletteColorLookupTableData")
    ds.save_as(path)
    site = hospital(tmp_path, {"nopalette.dcm": path})
    with pytest.raises(DataValidationError, match=r"PALETTE COLOR image without a palette"):
        DicomAdapter(use_cache=False).read(site)


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    site = hospital(tmp_path, {})
    size = (site / "good0.dcm").stat().st_size
    with pytest.raises(DataValidationError, match=r"good0\.dcm.*the file claims .* once loaded, more than"):
        DicomAdapter(use_cache=False, max_image_bytes=size - 1).read(site)
