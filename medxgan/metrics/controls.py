"""The image-specificity control ``<metric>_shuffled``: each map against another image's boxes.

One rule for the whole run (the score stage, the benchmarks): every explained image with at
least one box gets a **partner**, another explained image with boxes, by a seeded derangement
(``localization.derangement``: one cycle, no image is its own partner) over the boxed ids in
sorted order. The pairing depends only on the set of explained ids, the boxes and the seed, not
on how the images are split into shards or batches. Images without boxes, and every image when
fewer than two have boxes, get no partner: their ``_shuffled`` scores are NaN.

No I/O here: callers pass the cohort's boxes (``Cohort.boxes_by_id()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from medxgan.metrics.localization import derangement
from medxgan.metrics.masks import boxes_to_masks

_EMPTY = np.zeros((0, 4), np.float32)


def shuffle_partners(ids: Sequence[str], boxes_by_id: Mapping[str, np.ndarray],
                     seed: int) -> dict[str, str]:
    """Partner of each explained image with boxes.

    Args:
        ids: every image id explained in the run (any order, duplicates ignored).
        boxes_by_id: image id -> (k, 4) boxes (ids missing or with k = 0 have no boxes).
        seed: seed of the derangement.

    Returns: image id -> partner id, for the boxed ids; empty when fewer than two have boxes.
    """
    boxed = sorted(i for i in set(ids) if len(boxes_by_id.get(i, _EMPTY)))
    if len(boxed) < 2:
        return {}
    d = derangement(len(boxed), seed=seed).tolist()
    return {boxed[i]: boxed[j] for i, j in enumerate(d)}


def partner_boxes(ids: Sequence[str], partners: Mapping[str, str],
                  boxes_by_id: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The partner's boxes of each of ``ids``: B arrays (k, 4), (0, 4) where none."""
    return [boxes_by_id.get(partners[i], _EMPTY) if i in partners else _EMPTY for i in ids]


def partner_masks(ids: Sequence[str], partners: Mapping[str, str],
                  boxes_by_id: Mapping[str, np.ndarray], height: int, width: int,
                  image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Masks of the partners' boxes for a batch, on the (height, width) map grid.

    Args:
        ids: the batch's B image ids. partners: :func:`shuffle_partners` of the run.
        boxes_by_id: image id -> (k, 4) boxes in pixel-edge coordinates of the stored images.
        height, width: map grid. image_size: (H0, W0) of the stored images (None: the boxes
            are in map pixels), as ``masks.boxes_to_masks``.

    Returns: (B, height, width) bool; empty for images without a partner.
    """
    return boxes_to_masks(partner_boxes(ids, partners, boxes_by_id), height, width, image_size)
