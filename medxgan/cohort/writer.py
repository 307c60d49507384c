"""Writing a cohort: image parts first, then boxes and quarantine, the manifest last.

Two ways in:

* :class:`CohortWriter` for a single process: ``add`` images, ``quarantine`` bad records,
  ``close`` to finish.
* :func:`write_part` + :func:`finalize_cohort` for parallel ingestion: each worker writes its
  own ``images/part-NNNNN.parquet`` and returns a small :class:`PartSummary`; one finaliser
  writes the rest. Both paths share these two functions.

A rerun with the same inputs writes the same objects (idempotent). Parts that a finished
cohort does not list are deleted before the manifest is written, so a reader never mixes runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from medxgan.cohort.png import encode_png
from medxgan.cohort.schema import BOXES, IMAGES, QUARANTINE, SCHEMA_VERSION
from medxgan.cohort.splits import DEFAULT_FRACTIONS, assign_split
from medxgan.storage import Store


@dataclass(frozen=True)
class Box:
    """A finding's box in stored-image pixel-edge coordinates (x1, y1 exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float
    finding: str = ""


@dataclass
class CohortImage:
    """One image ready for the cohort.

    Attributes:
        image_id: unique id within the cohort.
        label: 1 positive, 0 negative, -1 unknown.
        pixels: (H, W) ``uint8`` or ``uint16`` greyscale array.
        source_ref: where the record came from (file path relative to the input, row, ...).
        boxes: findings in coordinates of ``pixels``.
    """

    image_id: str
    label: int
    pixels: np.ndarray
    source_ref: str
    boxes: list[Box] = field(default_factory=list)


@dataclass
class PartSummary:
    """What a finaliser needs to know about one written part (no pixels)."""

    key: str
    entries: list[tuple[str, int, str, str]]  # (image_id, label, split, pixel sha256)
    boxes: list[dict]
    quarantine: list[dict]
    shape: tuple[int, int] | None = None


def quarantine_row(source_ref: str, reason: str) -> dict:
    """A quarantine row; ``reason`` is flattened to one line."""
    return {"source_ref": str(source_ref), "reason": " ".join(str(reason).split())}


def write_part(store: Store, index: int, images: list[CohortImage], source: str,
               quarantine: list[dict] | None = None,
               fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> PartSummary:
    """Write ``images`` as ``images/part-{index:05d}.parquet`` and summarise them.

    An empty ``images`` list writes nothing but still carries ``quarantine`` rows.
    """
    key = f"images/part-{index:05d}.parquet"
    entries, boxes = [], []
    cols: dict[str, list] = {name: [] for name in IMAGES.names}
    shape = None
    for im in images:
        if im.label not in (-1, 0, 1):
            raise ValueError(f"{im.image_id}: label {im.label} not in {{-1, 0, 1}}")
        png = encode_png(im.pixels)
        split = assign_split(im.image_id, fractions)
        h, w = im.pixels.shape
        shape = (h, w) if shape in (None, (h, w)) else (-1, -1)
        cols["image_id"].append(im.image_id)
        cols["label"].append(im.label)
        cols["split"].append(split)
        cols["height"].append(h)
        cols["width"].append(w)
        cols["pixels"].append(png)
        cols["source"].append(source)
        cols["source_ref"].append(im.source_ref)
        entries.append((im.image_id, int(im.label), split,
                        hashlib.sha256(im.pixels.tobytes()).hexdigest()))
        for b in im.boxes:
            boxes.append({"image_id": im.image_id, "x0": float(b.x0), "y0": float(b.y0),
                          "x1": float(b.x1), "y1": float(b.y1), "finding": b.finding})
    if images:
        store.write_parquet(key, pa.Table.from_pydict(cols, schema=IMAGES))
    return PartSummary(key=key if images else "", entries=entries, boxes=boxes,
                       quarantine=list(quarantine or []), shape=shape)


def finalize_cohort(store: Store, parts: list[PartSummary], source: str,
                    quarantine: list[dict] | None = None, extra: dict | None = None) -> dict:
    """Write boxes, quarantine and (last) the manifest of a cohort; returns the manifest.

    Raises:
        ValueError: two parts hold the same ``image_id`` (callers must de-duplicate first).
    """
    entries = [e for p in parts for e in p.entries]
    ids = [e[0] for e in entries]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"duplicate image ids across parts: {dup}")
    boxes = sorted((b for p in parts for b in p.boxes),
                   key=lambda b: (b["image_id"], b["x0"], b["y0"], b["x1"], b["y1"], b["finding"]))
    qrows = [q for p in parts for q in p.quarantine] + list(quarantine or [])
    qrows.sort(key=lambda q: (q["source_ref"], q["reason"]))

    store.delete("manifest.json")  # an unfinished rewrite must not look complete
    store.write_parquet("boxes.parquet", pa.Table.from_pylist(boxes, schema=BOXES))
    store.write_parquet("quarantine.parquet", pa.Table.from_pylist(qrows, schema=QUARANTINE))
    keep = {p.key for p in parts if p.key}
    for k in store.list("images/", suffix=".parquet"):
        if k not in keep:
            store.delete(k)

    by_box: dict[str, list] = {}
    for b in boxes:
        by_box.setdefault(b["image_id"], []).append(
            (b["x0"], b["y0"], b["x1"], b["y1"], b["finding"]))
    h = hashlib.sha256()
    for image_id, label, split, digest in sorted(entries):
        h.update(f"{image_id}\t{label}\t{digest}\t{by_box.get(image_id, [])}\n".encode())
    shapes = {p.shape for p in parts if p.shape is not None}
    size = list(shapes.pop()) if len(shapes) == 1 else None
    labels = [e[1] for e in entries]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "content_hash": h.hexdigest(),
        "parts": sorted(keep),
        "image_size": size if size and size[0] > 0 else None,
        "counts": {
            "images": len(entries),
            "positives": labels.count(1),
            "negatives": labels.count(0),
            "unknown": labels.count(-1),
            "boxes": len(boxes),
            "images_with_boxes": len(by_box),
            "quarantined": len(qrows),
            "by_split": {s: sum(1 for e in entries if e[2] == s) for s in ("train", "val", "test")},
        },
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    store.write_manifest(manifest)
    return manifest


class CohortWriter:
    """Single-process cohort writer: ``add`` images, ``quarantine`` records, then ``close``.

    Duplicate ``image_id`` s are quarantined (the first occurrence wins). Images are written
    in parts of ``part_size`` so memory stays bounded.
    """

    def __init__(self, store: Store, source: str, part_size: int = 512,
                 fractions: tuple[float, float, float] = DEFAULT_FRACTIONS):
        self.store, self.source, self.part_size, self.fractions = store, source, part_size, fractions
        self._buf: list[CohortImage] = []
        self._parts: list[PartSummary] = []
        self._seen: set[str] = set()
        self._quarantine: list[dict] = []

    def add(self, image: CohortImage) -> bool:
        """Queue ``image``; returns False (and quarantines it) if its id was seen before."""
        if image.image_id in self._seen:
            self.quarantine(image.source_ref, f"duplicate image_id {image.image_id!r}")
            return False
        self._seen.add(image.image_id)
        self._buf.append(image)
        if len(self._buf) >= self.part_size:
            self._flush()
        return True

    def quarantine(self, source_ref: str, reason: str) -> None:
        """Record an input that could not be used, with a one-line reason."""
        self._quarantine.append(quarantine_row(source_ref, reason))

    def _flush(self) -> None:
        if self._buf:
            self._parts.append(write_part(self.store, len(self._parts), self._buf, self.source,
                                          fractions=self.fractions))
            self._buf = []

    def close(self, extra: dict | None = None) -> dict:
        """Write the last part, boxes, quarantine and the manifest; returns the manifest."""
        self._flush()
        return finalize_cohort(self.store, self._parts, self.source, self._quarantine, extra)


def n_parts(n: int, part_size: int) -> int:
    """Number of parts for ``n`` images."""
    return max(1, math.ceil(n / part_size))
