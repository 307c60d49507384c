"""From source records to cohort images: load, validate, resize, quantise.

Every record ends in exactly one of the returned images or quarantine rows (the accounting
invariant of the cohort format); a bad record never raises. Geometry rule:
:mod:`medxgan.ingest.geometry`; pixel rule: :mod:`medxgan.ingest.pixels`.
"""

from __future__ import annotations

import os

from medxgan.cohort.png import from_unit
from medxgan.cohort.writer import Box, CohortImage, quarantine_row
from medxgan.ingest.geometry import clip_boxes, pad_resize, transform_boxes, validate_label
from medxgan.ingest.pixels import MAX_PIXELS, load_pixels
from medxgan.ingest.records import BadRecord, SourceRecord, dedupe, safe_relpath

__all__ = ["dedupe", "process_record", "process_records"]


def process_record(record: SourceRecord, *, input_root: str, size: int,
                   bits: int | None = None, max_pixels: int = MAX_PIXELS) -> CohortImage:
    """One record as a ``size x size`` :class:`CohortImage`.

    Args:
        record: the source record (``path`` relative to ``input_root``).
        input_root: local folder the record's path is relative to.
        size: side of the stored square image, pixels.
        bits: 8 or 16 bit storage; None picks 16 when the source has more than 8 bits.
        max_pixels: refuse source images with more pixels than this.

    Raises:
        BadRecord: the one-line quarantine reason.
    """
    label = validate_label(record.label)
    if record.path is None:
        raise BadRecord("no image file for this record")
    rel = safe_relpath(record.path)
    root = os.path.realpath(input_root)
    full = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, full]) != root:
        raise BadRecord("path escapes the input root (symbolic link)")
    if label == 0 and record.boxes:
        raise BadRecord(f"{len(record.boxes)} box(es) on an image labelled negative")
    img, src_bits = load_pixels(full, max_pixels=max_pixels)  # (H, W) float32 in [0, 1]
    h, w = img.shape
    clipped = clip_boxes(record.boxes, h, w)                    # (k, 4) original coordinates
    boxes = transform_boxes(clipped, h, w, size)                # (k, 4) stored coordinates
    out_bits = bits if bits is not None else (16 if src_bits > 8 else 8)
    pixels = from_unit(pad_resize(img, size), out_bits)        # (size, size) uint8/uint16
    return CohortImage(
        image_id=record.image_id, label=label, pixels=pixels, source_ref=record.source_ref,
        boxes=[Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]),
                   rb.finding or record.finding) for b, rb in zip(boxes, record.boxes)])


def process_records(records: list[SourceRecord], *, input_root: str, size: int,
                    bits: int | None = None, max_pixels: int = MAX_PIXELS,
                    ) -> tuple[list[CohortImage], list[dict]]:
    """Process many records; never raises for a bad record.

    Duplicate image ids within ``records`` are quarantined (first occurrence wins).

    Returns:
        (images ready for :func:`medxgan.cohort.writer.write_part`, quarantine rows), with
        ``len(images) + len(rows) == len(records)``.
    """
    if bits not in (None, 8, 16):
        raise ValueError("bits must be 8, 16 or None")
    if size < 1:
        raise ValueError("size must be a positive number of pixels")
    unique, rows = dedupe(records)
    images = []
    for r in unique:
        try:
            images.append(process_record(r, input_root=input_root, size=size, bits=bits,
                                         max_pixels=max_pixels))
        except BadRecord as exc:
            rows.append(quarantine_row(r.source_ref, str(exc)))
        except Exception as exc:  # never lose a record; the reason names the error type only
            rows.append(quarantine_row(r.source_ref, f"unexpected error ({type(exc).__name__})"))
    return images, rows
