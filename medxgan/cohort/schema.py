"""Arrow schemas of the cohort format (docs/design.md, "Data contracts"). Other tools read these.

Layout under a cohort URL::

    images/part-NNNNN.parquet   image_id, label, split, height, width, pixels, source, source_ref
    boxes.parquet               image_id, x0, y0, x1, y1, finding
    quarantine.parquet          source_ref, reason
    manifest.json               counts, source, content hash, schema version (written last)

Box coordinates are float32 pixel-edge coordinates of the *stored* image: pixel column ``c``
covers ``[c, c + 1)``, so a box ``x0=2, x1=5`` covers columns 2, 3 and 4 (x1/y1 exclusive).
``pixels`` is a PNG (8- or 16-bit greyscale); intensities are read back as ``value / (2**bits - 1)``
in ``[0, 1]`` ("the cohort's pixel space").
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

IMAGES = pa.schema([
    ("image_id", pa.string()),
    ("label", pa.int8()),
    ("split", pa.string()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("pixels", pa.binary()),
    ("source", pa.string()),
    ("source_ref", pa.string()),
])

BOXES = pa.schema([
    ("image_id", pa.string()),
    ("x0", pa.float32()),
    ("y0", pa.float32()),
    ("x1", pa.float32()),
    ("y1", pa.float32()),
    ("finding", pa.string()),
])

QUARANTINE = pa.schema([
    ("source_ref", pa.string()),
    ("reason", pa.string()),
])

LABEL_POSITIVE, LABEL_NEGATIVE, LABEL_UNKNOWN = 1, 0, -1
SPLITS = ("train", "val", "test")
