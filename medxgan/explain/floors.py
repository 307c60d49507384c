"""Floors every explanation must beat: a seeded random map and the average-box prior map.

- ``random``: i.i.d. uniform [0, 1) noise per pixel, seeded per image (by image id when given,
  else by pixel content) and by ``seed``: deterministic and independent of the batch.
- ``box_prior``: the same map for every image: the mean over the cohort's train-split images
  with boxes of each image's box mask (boxes of one image unioned), i.e. the fraction of those
  images whose boxes cover each pixel. It marks where lesions usually are, not where this
  image's lesion is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medxgan.config.explain import RandomConfig
from medxgan.explain.base import Explainer, ExplainerConfig, Explanation
from medxgan.explain.seeding import mix_seed


def box_mask(boxes: np.ndarray, image_size: tuple[int, int],
             out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Union mask (H, W) bool of boxes (k, 4) ``x0, y0, x1, y1`` (pixel edges, x1/y1 exclusive).

    Boxes are given in the coordinates of an ``image_size`` (H, W) image and scaled to
    ``out_size``; a pixel is inside when its centre is.
    """
    H, W = image_size
    oh, ow = out_size or image_size
    b = np.asarray(boxes, np.float64).reshape(-1, 4) * [ow / W, oh / H, ow / W, oh / H]
    cx = np.arange(ow) + 0.5                                           # (ow,) pixel centres
    cy = np.arange(oh) + 0.5
    inx = (cx[None] >= b[:, :1]) & (cx[None] < b[:, 2:3])              # (k, ow)
    iny = (cy[None] >= b[:, 1:2]) & (cy[None] < b[:, 3:4])             # (k, oh)
    return (iny[:, :, None] & inx[:, None, :]).any(0)                  # (oh, ow)


def box_prior_map(boxes_list: Sequence[np.ndarray], image_size: tuple[int, int],
                  out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Average box mask (H, W) float32 over the images with at least one box.

    Args:
        boxes_list: one (k, 4) array per image (e.g. the train split's ``CohortBatch.boxes``);
            images with k = 0 are skipped.
        image_size: (H, W) of the images the boxes refer to.
        out_size: (H, W) of the map (default ``image_size``).
    Returns:
        (H, W) float32 in [0, 1]; all zeros when no image has a box.
    """
    oh, ow = out_size or image_size
    acc = np.zeros((oh, ow), np.float64)
    n = 0
    for boxes in boxes_list:
        if len(boxes):
            acc += box_mask(boxes, image_size, (oh, ow))
            n += 1
    return torch.from_numpy((acc / max(n, 1)).astype(np.float32))


class RandomExplainer(Explainer):
    """Seeded uniform noise maps (B, H, W)."""

    name = "random"
    Config = RandomConfig

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
        out = torch.empty(B, H, W)
        for i, s in enumerate(self._seeds(images, ids, self.config.seed)):
            out[i] = torch.rand(H, W, generator=torch.Generator().manual_seed(mix_seed("rnd", s)))
        return Explanation(maps=out.to(images.device))

    def _modules(self) -> list[nn.Module]:
        return []


class BoxPriorExplainer(Explainer):
    """The average-box prior (H, W) for every image (resized bilinearly if sizes differ)."""

    name = "box_prior"
    Config = ExplainerConfig

    def __init__(self, classifier: nn.Module | None, prior: torch.Tensor,
                 config: dict | ExplainerConfig | None = None):
        super().__init__(classifier, config)
        if prior.ndim != 2:
            raise ValueError(f"box prior must be (H, W), got {tuple(prior.shape)}")
        self.prior = prior.float()

    def _modules(self) -> list[nn.Module]:
        return []

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
        p = self.prior.to(images.device)
        if p.shape != (H, W):
            p = F.interpolate(p[None, None], (H, W), mode="bilinear", align_corners=False)[0, 0]
        return Explanation(maps=p.expand(B, H, W).clone())
