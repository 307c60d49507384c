"""The shortcut tag: where it is drawn (:func:`tag_box`) and how to remove it (:func:`remove_tag`).

A bright square (about 6 % of the side) in the top-right corner, placed by the renderer on a
fraction ``shortcut_rate`` of positives and on ``min(shortcut_rate, NEGATIVE_TAG_RATE)`` of
negatives. It is not a finding and gets no box.
"""

from __future__ import annotations

import torch

from medxgan.phantoms.shortcuts import _TAG_MARGIN, _TAG_SIDE, tag_box  # noqa: F401

NEGATIVE_TAG_RATE = 0.02  # share of negatives tagged (capped by shortcut_rate)


def remove_tag(images: torch.Tensor) -> torch.Tensor:
    """Remove the shortcut tag: fill :func:`tag_box` with the background mirrored from below it.

    The tag region is replaced by the equally tall strip directly beneath it, flipped vertically
    (corner background: air / outside the head, with its noise). Pixels outside the region are
    unchanged. Apply it to every image so tagged and untagged images are treated alike.

    Args:
        images: (B, 1, H, W) float in [0, 1], square (H == W).

    Returns:
        A new tensor like ``images``.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square (B, 1, H, W) images, got shape {tuple(images.shape)}")
    x0, y0, x1, y1 = tag_box(images.shape[-1])
    h = y1 - y0
    out = images.clone()
    out[..., y0:y1, x0:x1] = images[..., y1:y1 + h, x0:x1].flip(-2)  # (B, 1, h, w)
    return out

