"""Ingest throughput: RSNA-format DICOMs (1024 x 1024 -> 256 px) and phantom-cxr at 256 px.

Synthesizes an RSNA layout (stage_2_train_labels.csv + stage_2_train_images/*.dcm, half the
patients positive with one or two boxes) in a temporary folder, then times

* ``rsna.list_records`` + ``process_records`` (read DICOM, validate, pad/resize, quantise), and
* the same plus ``write_part`` + ``finalize_cohort`` into a local store (PNG encoding, Parquet),

in one process on the CPU, after a warm-up on two images (imports). Prints one JSON line and
writes bench/results/ingest_speed.json.

    .venv/bin/python -m bench.ingest_speed [--quick] [--n 64] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medxgan.cohort.writer import finalize_cohort, write_part
from medxgan.ingest import rsna
from medxgan.ingest.process import process_records
from medxgan.storage import Store


def _dicom(path: str, img: np.ndarray) -> None:
    """Write a (H, W) uint8 array as an RSNA-like DICOM (MONOCHROME2, 8 bit)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = img.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _synthesize(root: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, rsna.IMAGES_DIR))
    lines = ["patientId,x,y,width,height,Target"]
    base = (rng.random((1024, 1024)) * 120).astype(np.uint8)
    for i in range(n):
        pid = f"{i:08d}-0000-4000-8000-{rng.integers(1 << 40):012x}"
        img = np.roll(base, i * 7, axis=1).copy()
        if i % 2:
            for _ in range(1 + i % 3 // 2):
                x, y = rng.integers(100, 700, 2)
                w, h = rng.integers(80, 300, 2)
                img[y:y + h, x:x + w] = 230
                lines.append(f"{pid},{x}.0,{y}.0,{w}.0,{h}.0,1")
        else:
            lines.append(f"{pid},,,,,0")
        _dicom(os.path.join(root, rsna.IMAGES_DIR, f"{pid}.dcm"), img)
    with open(os.path.join(root, rsna.LABELS_CSV), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _warm_up(tmp: str, size: int) -> None:
    """Run the whole path once on two images so lazy imports are paid before timing."""
    root = os.path.join(tmp, "warm")
    _synthesize(root, 2, seed=1)
    records, _ = rsna.list_records(root)
    images, _ = process_records(records, input_root=root, size=size)
    store = Store(os.path.join(tmp, "warm-cohort"))
    finalize_cohort(store, [write_part(store, 0, images, "rsna")], "rsna")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 images instead of --n")
    ap.add_argument("--n", type=int, default=96, help="number of synthesized DICOMs")
    ap.add_argument("--size", type=int, default=256, help="stored square size, pixels")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "ingest_speed.json"), help="result JSON")
    args = ap.parse_args(argv)
    n = 16 if args.quick else args.n
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "rsna")
        _synthesize(root, n)
        _warm_up(tmp, args.size)                 # one-off imports must not count
        t0 = time.perf_counter()
        records, q = rsna.list_records(root)
        images, q2 = process_records(records, input_root=root, size=args.size)
        t1 = time.perf_counter()
        store = Store(os.path.join(tmp, "cohort"))
        part = write_part(store, 0, images, "rsna", q + q2)
        finalize_cohort(store, [part], "rsna")
        t2 = time.perf_counter()
        # phantom-cxr generated at the same size, written the same way
        from medxgan.phantoms import phantom_image

        phantom_image("phantom-cxr", 0, size=args.size)  # warm-up
        t3 = time.perf_counter()
        ph = [phantom_image("phantom-cxr", i, size=args.size) for i in range(n)]
        t4 = time.perf_counter()
        pstore = Store(os.path.join(tmp, "phantom"))
        finalize_cohort(pstore, [write_part(pstore, 0, ph, "phantom-cxr")], "phantom-cxr")
        t5 = time.perf_counter()
    assert len(images) == n and not (q or q2), "synthesized records must all ingest"
    result = {
        "bench": "ingest_speed", "source": "rsna-format DICOM 1024x1024 MONOCHROME2 8-bit",
        "size": args.size, "n": n,
        "process_images_per_s": round(n / (t1 - t0), 2),
        "process_and_write_images_per_s": round(n / (t2 - t0), 2),
        "process_s": round(t1 - t0, 3), "write_s": round(t2 - t1, 3),
        "phantom_cxr_generate_images_per_s": round(n / (t4 - t3), 2),
        "phantom_cxr_generate_and_write_images_per_s": round(n / (t5 - t3), 2),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "command": "python -m bench.ingest_speed" + (" --quick" if args.quick else f" --n {n}"),
    }
    print(json.dumps(result))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
