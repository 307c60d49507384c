"""Square resizing of an image with its boxes transformed consistently.

The rule (every adapter uses it):

1. Validate boxes in ORIGINAL pixel-edge coordinates of an (H, W) image (pixel column ``c``
   covers ``[c, c + 1)``, x1/y1 exclusive): a NaN/infinite coordinate, zero or negative
   width/height, or a box with no overlap with ``[0, W) x [0, H)`` rejects the record; a box
   partly outside is clipped to the image and kept.
2. Pad the image centred to a square of side ``S = max(H, W)`` with 0 (black) on the short
   side: offsets ``px = (S - W) // 2``, ``py = (S - H) // 2``.
3. Resize the square to ``size x size`` with antialiasing (Pillow, float 'F' mode): when
   shrinking, area averaging (Pillow's BOX filter: each output pixel is the mean of the input
   area it covers, so no aliasing, no overshoot and no bleeding past a box edge by more than
   the one output pixel that straddles it); when enlarging, bilinear.
4. Boxes follow the same map: ``x' = (x + px) * size / S``, ``y' = (y + py) * size / S``.
   Pillow's resize maps pixel edges to pixel edges, so a box stays exactly on the content it
   covered.

Labels must be 1, 0 or -1 (unknown); a box on an image labelled 0 rejects the record.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from medxgan.ingest.records import BadRecord, RawBox


def validate_label(label: object) -> int:
    """``label`` as int if it is 1, 0 or -1. Raises BadRecord otherwise."""
    try:
        ok = float(label) in (-1.0, 0.0, 1.0) and not isinstance(label, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BadRecord(f"label {str(label)[:20]!r} not in {{0, 1, -1}}")
    return int(float(label))


def clip_boxes(boxes: list[RawBox], height: int, width: int) -> np.ndarray:
    """Validate boxes on an (height, width) image and clip those partly outside.

    Returns:
        (k, 4) float64 ``x0, y0, x1, y1`` in original pixel-edge coordinates, inside the image.

    Raises:
        BadRecord: NaN/inf coordinate, zero/negative size, or a box fully outside the image.
    """
    if not boxes:
        return np.zeros((0, 4), np.float64)
    b = np.array([[r.x0, r.y0, r.x1, r.y1] for r in boxes], dtype=np.float64)  # (k, 4)
    for i, row in enumerate(b):
        if not np.all(np.isfinite(row)):
            raise BadRecord(f"box {i} has a NaN or infinite coordinate")
        if row[2] <= row[0] or row[3] <= row[1]:
            raise BadRecord(f"box {i} is degenerate (zero or negative width/height)")
        if row[2] <= 0 or row[3] <= 0 or row[0] >= width or row[1] >= height:
            raise BadRecord(f"box {i} lies fully outside the {width}x{height} image")
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, height)
    return b


def square_transform(height: int, width: int, size: int) -> tuple[float, float, float]:
    """``(px, py, scale)`` mapping original coordinates to the ``size`` square.

    ``x' = (x + px) * scale``, ``y' = (y + py) * scale``.
    """
    side = max(height, width)
    return float((side - width) // 2), float((side - height) // 2), size / side


def transform_boxes(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """(k, 4) original-coordinate boxes -> (k, 4) float32 boxes of the ``size`` square image."""
    px, py, s = square_transform(height, width, size)
    out = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] + px) * s
    out[:, [1, 3]] = (out[:, [1, 3]] + py) * s
    return out.astype(np.float32)


def pad_resize(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W) float image in [0, 1] -> (size, size) float32 in [0, 1] (centred black pad)."""
    h, w = img.shape
    px, py, _ = square_transform(h, w, size)
    side = max(h, w)
    sq = np.zeros((side, side), np.float32)
    sq[int(py):int(py) + h, int(px):int(px) + w] = img
    if side == size:
        return sq
    flt = Image.Resampling.BOX if size < side else Image.Resampling.BILINEAR
    out = Image.fromarray(sq, mode="F").resize((size, size), flt)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
