"""Fixture writers for the ingest tests: real DICOM files (pydicom), PNGs, cohort round trip."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medxgan.cohort.reader import Cohort
from medxgan.cohort.writer import finalize_cohort, write_part
from medxgan.storage import Store

PATIENT_NAME = "Zebulon^Quixotic"
PATIENT_ID = "PID-73519-XQ"
BIRTH_DATE = "19230417"


def write_dicom(path: str, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                bits: int | None = None, slope: float | None = None,
                intercept: float | None = None, pixel_data: bool = True,
                frames: int = 1, transfer_syntax=ExplicitVRLittleEndian,
                raw_bytes: bytes | None = None) -> str:
    """Write ``pixels`` ((H, W) or (F, H, W) integer array) as a real DICOM file.

    The header carries fake patient identifiers (PATIENT_NAME, PATIENT_ID, BIRTH_DATE).
    """
    arr = np.asarray(pixels)
    signed = arr.dtype.kind == "i"
    alloc = arr.dtype.itemsize * 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = alloc
    ds.BitsStored = bits or alloc
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    if pixel_data:
        if raw_bytes is not None:
            from pydicom.encaps import encapsulate
            ds.PixelData = encapsulate([raw_bytes])
        else:
            ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: str, pixels: np.ndarray) -> str:
    """Write a (H, W) uint8/uint16 or (H, W, 3|4) uint8 array as PNG."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    a = np.asarray(pixels)
    img = Image.fromarray(a.astype("<u2")) if a.dtype == np.uint16 else Image.fromarray(a)
    img.save(path, compress_level=1)
    return path


def phantom(h: int, w: int, boxes=(), seed: int = 0, dtype=np.uint8, bright: int | None = None
            ) -> np.ndarray:
    """Dark noisy (H, W) image with a bright rectangle filling each box (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    img = rng.integers(0, top // 5, size=(h, w)).astype(dtype)
    for x0, y0, x1, y1 in boxes:
        xa, ya = int(np.ceil(max(x0, 0))), int(np.ceil(max(y0, 0)))
        xb, yb = int(np.floor(min(x1, w))), int(np.floor(min(y1, h)))
        img[ya:yb, xa:xb] = bright if bright is not None else top
    return img


def roundtrip(tmp_path, images, quarantine, source: str = "test") -> Cohort:
    """write_part + finalize_cohort into a Store on a tmp folder, read back as a Cohort."""
    store = Store(str(tmp_path / "cohort"))
    part = write_part(store, 0, images, source)
    finalize_cohort(store, [part], source, quarantine)
    return Cohort(store)


def all_output_text(root) -> str:
    """Every output under ``root`` as text: Parquet tables decoded (they are compressed),
    other files raw; used to scan outputs for leaked identifiers."""
    import pyarrow.parquet as pq

    out = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if f.endswith(".parquet"):
                out.append(str(pq.read_table(p).to_pylist()))
            with open(p, "rb") as fh:
                out.append(fh.read().decode("latin-1"))
    return "\n".join(out)


def assert_bright_inside(pixels: np.ndarray, boxes: np.ndarray, thr: float = 0.6) -> None:
    """Every pixel brighter than ``thr`` (of max) lies in a box grown by 1 px, and each box's
    interior (shrunk by 1 px) is bright."""
    x = pixels.astype(np.float64) / pixels.max()
    h, w = x.shape
    inside = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        inside[max(int(np.floor(y0)) - 1, 0):int(np.ceil(y1)) + 1,
               max(int(np.floor(x0)) - 1, 0):int(np.ceil(x1)) + 1] = True
        core = x[int(np.ceil(y0)) + 1:int(np.floor(y1)) - 1,
                 int(np.ceil(x0)) + 1:int(np.floor(x1)) - 1]
        if core.size:
            assert core.min() > thr, (x0, y0, x1, y1, core.min())
    assert not np.any((x > thr) & ~inside), "bright pixels outside every transformed box"
