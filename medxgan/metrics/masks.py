"""Lesion masks from bounding boxes, at the resolution of the maps being scored.

Coordinate convention (the cohort's): a box ``x0, y0, x1, y1`` is in pixel-edge
coordinates of the stored image of size (H0, W0): pixel column ``j`` spans ``[j, j + 1)``,
so a box ``0, 0, W0, H0`` covers the whole image and ``x1``/``y1`` are exclusive.

Coverage rule (per axis, the mask is the outer product of a row and a column rule):
boxes are rescaled to the map grid (x * W / W0, y * H / H0) and clipped to it; a map
pixel belongs to a box iff its centre ``(j + 0.5, i + 0.5)`` lies inside the box
(half-open: ``x0 <= j + 0.5 < x1``). A box that contains no pixel centre along an axis
(narrower than a map pixel there) still marks the pixel containing its centre on that
axis, so no box is ever lost when maps are coarser than the image. Boxes with no area
after clipping to the image (x1 <= x0 or y1 <= y0) are ignored. An image's mask is the
union of its boxes; an image without boxes has an empty mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _axis_cover(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """Pixels of an axis of length n covered by intervals [lo, hi) (map-grid units).

    Args:
        lo, hi: (K,) float64 interval ends, already clipped to [0, n], hi > lo.

    Returns:
        (K, n) bool.
    """
    c = torch.arange(n, dtype=torch.float64) + 0.5  # (n,) pixel centres
    cover = (c >= lo[:, None]) & (c < hi[:, None])  # (K, n)
    centre = ((lo + hi) / 2).floor().clamp(0, n - 1).long()  # (K,)
    empty = ~cover.any(1)
    cover[empty, centre[empty]] = True
    return cover


def boxes_to_masks(
    boxes: Sequence[np.ndarray],
    height: int,
    width: int,
    image_size: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Union of each image's boxes as a bool mask on a (height, width) map grid.

    Args:
        boxes: B arrays (k, 4) ``x0, y0, x1, y1`` in pixel-edge coordinates of the stored
            image (k may be 0), as in ``CohortBatch.boxes``.
        height, width: size of the map grid (H, W).
        image_size: (H0, W0) of the stored images the boxes refer to, one pair for all or
            B pairs; None when the boxes are already in map pixels (H0, W0 = H, W).

    Returns:
        (B, H, W) bool: True inside the union of the image's boxes (rule in module doc).
    """
    B = len(boxes)
    if image_size is None:
        sizes = np.tile([height, width], (B, 1))
    elif len(image_size) == 2 and np.isscalar(image_size[0]):
        sizes = np.tile(np.asarray(image_size, dtype=np.float64), (B, 1))
    else:
        sizes = np.asarray(image_size, dtype=np.float64).reshape(B, 2)
    counts = [len(b) for b in boxes]
    masks = torch.zeros(B, height, width, dtype=torch.bool)
    if sum(counts) == 0:
        return masks
    arr = torch.from_numpy(np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]))
    owner = torch.repeat_interleave(torch.arange(B), torch.tensor(counts))  # (K,)
    sz = torch.from_numpy(np.repeat(sizes, counts, axis=0)).double()  # (K, 2) H0, W0
    sx, sy = width / sz[:, 1], height / sz[:, 0]  # (K,)
    x0 = (arr[:, 0] * sx).clamp(0, width)
    x1 = (arr[:, 2] * sx).clamp(0, width)
    y0 = (arr[:, 1] * sy).clamp(0, height)
    y1 = (arr[:, 3] * sy).clamp(0, height)
    ok = (x1 > x0) & (y1 > y0)
    if not bool(ok.any()):
        return masks
    x0, x1, y0, y1, owner = x0[ok], x1[ok], y0[ok], y1[ok], owner[ok]
    rows = _axis_cover(y0, y1, height)  # (K, H)
    cols = _axis_cover(x0, x1, width)  # (K, W)
    box_masks = (rows[:, :, None] & cols[:, None, :]).to(torch.int32)  # (K, H, W)
    hits = torch.zeros(B, height, width, dtype=torch.int32).index_add_(0, owner, box_masks)
    return hits > 0
