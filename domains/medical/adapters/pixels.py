"""Pixels a model can trust: which DICOM objects are images, and how their pixels become one display image.

Pixels are turned into what a radiologist would see, then resized for the model:
modality LUT (RescaleSlope/Intercept or LUT sequence), windowing (the file's
WindowCenter/WindowWidth, else a per-modality default), MONOCHROME1 inverted so
that bright always means dense, PALETTE COLOR mapped through its palette, one frame
chosen from multi-frame files, colour converted to luminance, zero-padded to a
square and resized with torch's antialiased bilinear interpolation. Transfer
syntaxes pydicom decodes natively (little/big endian, deflated, RLE) just work; for
JPEG family syntaxes the error names the package to install.

Before any pixel is decoded, :func:`image_problem` refuses what is not an image of
the patient (segmentations, dose grids, reports, 1-bit masks) and headers that claim
more memory than a set limit.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from flcore.data.files import DEFAULT_MAX_BYTES, check_claimed_size, format_bytes, memory_limit
from flcore.data.site import Problem
from flcore.exceptions import DataValidationError

#: Window (center, width) used when a file names none: CT soft tissue; other
#: modalities use the image's 0.5-99.5 percentile range.
DEFAULT_WINDOWS = {"CT": (40.0, 400.0)}

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: Objects that carry pixel data (or none) but are not images of a patient: masks, dose grids, reports, plans.
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "KO", "PR", "DOC", "REG", "FID", "PLAN", "RWV", "ECG",
     "HD", "AU", "RESP", "EPS", "M3D", "SMR"}
)  # fmt: skip
_NON_IMAGE_CLASSES = (
    "Segmentation", "SR Storage", "Presentation State", "Structure Set", "Dose", "Plan Storage", "Key Object",
    "Encapsulated", "Waveform", "Registration", "Raw Data", "Surface", "Tractography", "Treatment Record",
)  # fmt: skip

#: Largest decoded image (all frames) read into memory (never more than half the memory available): a header
#: claiming more is refused before decoding.
MAX_IMAGE_BYTES = DEFAULT_MAX_BYTES


def image_problem(ds: Any, path: Path, max_bytes: int = MAX_IMAGE_BYTES) -> Problem | None:
    """Why a header's object cannot be trained on as an image (None if it can), decided before any pixel is read."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        return Problem(
            str(path),
            "no_pixel_data",
            "the file has no pixel data (it may be a structured report or a presentation state).",
            "Remove it from labels.csv; only image objects can be used.",
            field="PixelData",
        )
    modality = str(ds.get("Modality", "")).strip().upper()
    sop = ds.get("SOPClassUID")
    sop_name = str(getattr(sop, "name", "") or "")
    if modality in NON_IMAGE_MODALITIES or any(word in sop_name for word in _NON_IMAGE_CLASSES):
        return Problem(
            str(path),
            "not_image",
            f"it is a {sop_name or 'non-image object'} (Modality {modality or 'not set'}), not an image of the "
            "patient: a mask, dose grid or report would be trained as if it were a scan.",
            "Remove it from labels.csv; list only the images themselves.",
            field="SOPClassUID",
        )
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits == 1:
        return Problem(
            str(path),
            "not_image",
            "its pixels are 1 bit deep (a binary mask or overlay), not an image.",
            "Remove it from labels.csv; list the images the mask was drawn on instead.",
            field="BitsAllocated",
        )
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        return Problem(
            str(path),
            "undecodable",
            "its image size (Rows, Columns, NumberOfFrames, SamplesPerPixel) is not a set of numbers.",
            "Re-export the image from the PACS.",
            field="Rows",
        )
    claimed = rows * cols * frames * samples * max(bits, 8) // 8
    limit = memory_limit(max_bytes)
    try:  # the whole file is read to decode it: its size counts too (private blobs, encapsulated data)
        on_disk = Path(path).stat().st_size
    except OSError:
        on_disk = 0  # the read that follows reports it
    too_big = check_claimed_size(
        Path(path), on_disk, limit, what="the file", fix="Check that the file is what it claims, or remove it."
    )
    if too_big is not None:
        return too_big
    if claimed > limit:
        return Problem(
            str(path),
            "too_large",
            f"its header claims {rows} x {cols} pixels x {frames} frame(s) x {samples} sample(s) at {bits} bits, "
            f"{format_bytes(claimed)} decoded, more than the {format_bytes(limit)} allowed (the configured limit, "
            "or half of the memory available if that is less).",
            "Check that the file is what it claims; split very large multi-frame objects, or remove the file.",
            field="NumberOfFrames" if frames > 1 else "Rows",
        )
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR" and not (
        "RedPaletteColorLookupTableData" in ds
        or "SegmentedRedPaletteColorLookupTableData" in ds
        or "PaletteColorLookupTableSequence" in ds
        or "PaletteColorLookupTableUID" in ds
    ):
        return Problem(
            str(path),
            "undecodable",
            "it is a PALETTE COLOR image without a palette: its pixel values are indices with no colours.",
            "Re-export it with its palette, or as RGB or greyscale.",
            field="PhotometricInterpretation",
        )
    return None


# --------------------------------------------------------------------------------------


def decoder_error(ds: Any, path: Path) -> DataValidationError | None:
    """A clear error when the file's transfer syntax needs a decoder that is not installed."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None or not tsyntax.is_compressed:
        return None
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        return DataValidationError(
            path,
            f"its transfer syntax {tsyntax.name} ({tsyntax}) has no pixel decoder in pydicom.",
            "Convert the file to Explicit VR Little Endian (e.g. `gdcmconv --raw` or dcmtk's `dcmdjpeg`).",
            field="TransferSyntaxUID",
        )
    if decoder.is_available:
        return None
    options = "; ".join(decoder.missing_dependencies)
    return DataValidationError(
        path,
        f"its pixel data is compressed with {tsyntax.name} ({tsyntax}) and no decoder for it is installed "
        f"(pydicom can use: {options}).",
        "Install one of them, e.g. `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` (JPEG, "
        "JPEG-LS, JPEG 2000) or `pip install python-gdcm`, or convert the files to an uncompressed syntax.",
        field="TransferSyntaxUID",
    )


def _first(value: Any) -> float:
    # Window values may be multi-valued (several presets); the first is the default one.
    return float(value[0]) if isinstance(value, MutableSequence | list | tuple) else float(value)


def _window(ds: Any, values: np.ndarray) -> tuple[float, float]:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center not in (None, "") and width not in (None, ""):
        c, w = _first(center), _first(width)
        if w > 0:
            return c, w
    modality = str(ds.get("Modality", "")).upper()
    if modality in DEFAULT_WINDOWS:
        return DEFAULT_WINDOWS[modality]
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float((lo + hi) / 2), float(max(hi - lo, 1e-6))


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luminance of RGB


class ConstantImageError(ValueError):
    """An image whose pixels all hold one value: nothing to learn, and often a blank export."""


def display_pixels(ds: Any, frames: str = "middle") -> np.ndarray:
    """What a radiologist would see, as a 2-D float32 image in [0, 1], at the file's own size.

    Parameters
    ----------
    ds : pydicom.Dataset
        A dataset read with its pixel data.
    frames : {"middle", "mean", "max"}
        How a multi-frame file becomes one image.

    Raises
    ------
    ConstantImageError
        When every stored pixel holds the same value.
    """
    arr = ds.pixel_array
    if arr.size == 0 or arr.min() == arr.max():
        raise ConstantImageError("every pixel holds the same value")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR":
        # The stored values are indices into the palette: show the colours they stand for, as luminance.
        colours = apply_color_lut(arr, ds)
        peak = float(np.iinfo(colours.dtype).max) if colours.dtype.kind in "iu" else 1.0
        img = np.clip((colours.astype(np.float32) / peak) @ _LUMA, 0.0, 1.0)
    elif samples == 1:
        values = apply_modality_lut(arr, ds).astype(np.float32)
        c, w = _window(ds, values)
        img = np.clip((values - (c - w / 2)) / w, 0.0, 1.0)
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            img = 1.0 - img  # MONOCHROME1 shows high values dark; make bright mean dense everywhere
    else:  # colour: pydicom returns RGB; luminance, scaled by the stored bit depth
        rgb = arr.astype(np.float32) / float(2 ** int(ds.get("BitsStored", 8)) - 1)
        img = np.clip(rgb @ _LUMA, 0.0, 1.0)
    if n_frames > 1:
        if frames == "mean":
            img = img.mean(axis=0)
        elif frames == "max":
            img = img.max(axis=0)
        else:
            img = img[n_frames // 2]
    return np.asarray(img, dtype=np.float32)


def to_image(ds: Any, size: int, frames: str = "middle") -> np.ndarray:
    """Display-ready ``(size, size)`` float32 image in [0, 1]: :func:`display_pixels`, zero-padded square, resized.

    Raises
    ------
    ConstantImageError
        When every stored pixel holds the same value.
    """
    import torch

    img = display_pixels(ds, frames)
    h, w = img.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = img
    t = torch.from_numpy(square)[None, None]
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0, 0].clamp(0.0, 1.0).numpy().astype(np.float32)
