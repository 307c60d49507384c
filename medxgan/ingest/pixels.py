"""Reading one image file into the cohort's pixel space: float32 (H, W) in [0, 1].

Formats (detected from the file's first bytes, the extension only as a fallback):

* PNG (8 or 16 bit greyscale; RGB/RGBA/palette images whose colour channels are all equal
  are read as grey, truly coloured ones are refused), JPEG, via Pillow.
* DICOM via pydicom: Modality LUT (RescaleSlope / RescaleIntercept) applied, MONOCHROME1
  inverted, 8/16 bit, signed or unsigned. Multi-frame, colour, no PixelData and compressed
  transfer syntaxes that cannot be decoded are refused.

Intensity rule: min-max to [0, 1] per image, ``x' = (x - min) / (max - min)``, after the
Modality LUT; a constant image is refused. Images above ``max_pixels`` are refused before
their pixel data is decoded.

Every failure is a :class:`~medxgan.ingest.records.BadRecord` with a one-line message that
never contains a DICOM header value.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from medxgan.config import CohortSection, field_default
from medxgan.ingest.records import BadRecord

MAX_PIXELS: int = field_default(CohortSection, "max_pixels")  # written once, in the config
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def load_pixels(path: str, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, int]:
    """Read a greyscale image.

    Args:
        path: local file path (PNG, JPEG or DICOM).
        max_pixels: refuse images with more than this many pixels (H * W).

    Returns:
        (pixels, bits): ``pixels`` float32 (H, W) min-max normalised to [0, 1]; ``bits`` the
        source bit depth (8 for PNG/JPEG 8-bit, 16 for 16-bit PNG, BitsStored for DICOM).

    Raises:
        BadRecord: missing, empty, corrupt or unsupported file; see the module docstring.
    """
    if not os.path.isfile(path):
        raise BadRecord("missing file")
    if os.path.getsize(path) == 0:
        raise BadRecord("empty file")
    with open(path, "rb") as fh:
        head = fh.read(132)
    ext = os.path.splitext(path)[1].lower()
    invert = False
    if head[128:132] == b"DICM" or ext in (".dcm", ".dicom"):
        arr, bits, invert = _read_dicom(path, max_pixels)
    elif head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC) or ext in (
            ".png", ".jpg", ".jpeg"):
        arr, bits = _read_pil(path, max_pixels)
    else:
        raise BadRecord("unsupported file format (expected PNG, JPEG or DICOM)")
    x = _min_max(arr)
    return (np.float32(1.0) - x if invert else x), bits


def _min_max(arr: np.ndarray) -> np.ndarray:
    """(H, W) integer or float array -> float32 in [0, 1] by per-image min-max."""
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise BadRecord("non-finite pixel values")
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise BadRecord("constant image")
    x = arr.astype(np.float32)          # exact for integers up to 2**24
    x -= np.float32(lo)
    x *= np.float32(1.0 / (hi - lo))
    return np.clip(x, 0.0, 1.0, out=x)


def _check_size(h: int, w: int, max_pixels: int) -> None:
    if h <= 0 or w <= 0:
        raise BadRecord(f"image has no pixels ({h}x{w})")
    if h * w > max_pixels:
        raise BadRecord(f"image too large ({h}x{w} = {h * w} pixels > max_pixels {max_pixels})")


# ---------------------------------------------------------------------------------- PIL
def _read_pil(path: str, max_pixels: int) -> tuple[np.ndarray, int]:
    """(H, W) raw intensities (integer array) and bit depth of a PNG/JPEG."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                _check_size(h, w, max_pixels)
                if getattr(img, "n_frames", 1) > 1:
                    raise BadRecord("multi-frame image where a single frame is expected")
                img.load()
                return _pil_array(img)
    except BadRecord:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRecord("image too large (decompression bomb guard)") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise BadRecord(f"corrupt or unreadable image ({_one_line(exc)})") from None


def _pil_array(img: Image.Image) -> tuple[np.ndarray, int]:
    """(H, W) integer array and bit depth of a loaded Pillow image."""
    mode = img.mode
    if mode in ("L", "1"):
        return np.asarray(img.convert("L")), 8
    if mode == "LA":
        return np.asarray(img.getchannel("L")), 8
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img)
        return a, 16 if mode != "I" or a.max() > 255 else 8
    if mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr"):
        rgb = np.asarray(img.convert("RGB"))  # (H, W, 3) uint8
        if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise BadRecord("RGB image where greyscale is expected")
        return rgb[..., 0], 8
    raise BadRecord(f"unsupported pixel format (mode {mode})")


# -------------------------------------------------------------------------------- DICOM
def _read_dicom(path: str, max_pixels: int) -> tuple[np.ndarray, int, bool]:
    """(H, W) intensities after the Modality LUT, BitsStored, and whether to invert
    (MONOCHROME1: low values are white)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise BadRecord(f"corrupt DICOM (header unreadable: {type(exc).__name__})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise BadRecord("DICOM without pixel data")
    try:
        h, w = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        bits = int(getattr(ds, "BitsStored", 0) or getattr(ds, "BitsAllocated", 8))
    except Exception as exc:
        raise BadRecord(f"corrupt DICOM (bad image header: {type(exc).__name__})") from None
    if frames > 1:
        raise BadRecord(f"multi-frame DICOM ({frames} frames) where a single frame is expected")
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadRecord("RGB image where greyscale is expected" if spp == 3 else
                        "unsupported DICOM photometric interpretation (greyscale expected)")
    _check_size(h, w, max_pixels)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        raw = ds.pixel_array
    except Exception as exc:
        if ts is not None and ts.is_compressed:
            raise BadRecord(f"cannot decode compressed transfer syntax {ts.name} ({ts})") from None
        raise BadRecord(f"corrupt or truncated DICOM pixel data ({type(exc).__name__}: "
                        f"{_scrub(_one_line(exc), ds)})") from None
    if raw.ndim != 2 or raw.shape != (h, w):
        raise BadRecord(f"unexpected DICOM pixel array shape {tuple(raw.shape)}")
    try:
        arr = np.asarray(apply_modality_lut(raw, ds))  # unchanged ints without a LUT
    except Exception as exc:
        raise BadRecord(f"bad DICOM Modality LUT ({type(exc).__name__})") from None
    return arr, bits, photometric == "MONOCHROME1"


def _scrub(msg: str, ds) -> str:
    """``msg`` with every string value of ``ds``'s header (3+ characters) redacted."""
    try:
        for elem in ds.iterall():
            if elem.tag == 0x7FE00010:  # PixelData
                continue
            v = elem.value
            for s in (v if isinstance(v, (list, tuple)) else [v]):
                s = str(s)
                if len(s) >= 3 and s in msg:
                    msg = msg.replace(s, "<redacted>")
    except Exception:
        return "details withheld"
    return msg


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
