"""Loading a cohort's images into memory for training: the GAN's train split and its held-out
set of real images with lesion masks (beside :mod:`medxgan.cohort.reader`, which streams them).

- :func:`load_train_data` -> :class:`TrainData`: the labelled train images at one size;
- :func:`load_heldout` -> :class:`HeldOut`: positives with boxes (and half as many negatives)
  with their masks, for inversion health and the encoder's keep-or-drop test;
- :func:`resize_square`: every training path's resize (antialiased when shrinking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TrainData:
    """The train split in memory: images (N, 1, S, S) in [0, 1], labels (N,) int64 in {0, 1}."""

    images: torch.Tensor
    labels: torch.Tensor

    @property
    def pos_frac(self) -> float:
        return float(self.labels.float().mean())


@dataclass
class HeldOut:
    """A fixed set of real images for inversion and fidelity.

    Attributes:
        images: (N, 1, S, S) float in [0, 1] at the generator's size.
        labels: (N,) int64.
        masks: (N, S, S) bool lesion masks (empty for images without boxes).
        ids: the N image ids (None when built by hand).
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    ids: list[str] | None = None

    def to(self, device: torch.device | str) -> "HeldOut":
        return HeldOut(self.images.to(device), self.labels.to(device), self.masks.to(device),
                       self.ids)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] resized to (B, C, size, size) (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > size).clamp(0, 1)


def load_train_data(cohort, size: int) -> TrainData:
    """The cohort's labelled train images at ``size`` px, in memory."""
    imgs, labels = [], []
    for b in cohort.iter_batches(512, split="train", labels=[0, 1]):
        imgs.append(resize_square(b.images, size))
        labels.append(b.labels)
    if not imgs:
        raise ValueError(f"cohort {cohort.url} has no labelled images in its train split")
    return TrainData(torch.cat(imgs), torch.cat(labels).long())


def load_heldout(cohort, size: int, n: int, split: str = "val") -> HeldOut | None:
    """Up to ``n`` positives with boxes and ``n // 2`` negatives from ``split`` (first split of
    ``split``, ``test``, ``train`` that has positives with boxes), with masks at ``size`` px."""
    from medxgan.metrics.masks import boxes_to_masks

    if n <= 0:
        return None
    for sp in dict.fromkeys([split, "test", "train"]):
        pos, neg = [], []
        for b in cohort.iter_batches(256, split=sp, labels=[0, 1]):
            for j in range(len(b)):
                if b.labels[j] == 1 and len(b.boxes[j]) and len(pos) < n:
                    pos.append((b.images[j], 1, b.boxes[j], b.image_ids[j]))
                elif b.labels[j] == 0 and len(neg) < n // 2:
                    neg.append((b.images[j], 0, b.boxes[j], b.image_ids[j]))
            if len(pos) >= n and len(neg) >= n // 2:
                break
        if len(pos) >= 2:
            rows = pos + neg
            H0, W0 = rows[0][0].shape[-2:]
            images = resize_square(torch.stack([r[0] for r in rows]), size)  # (N, 1, S, S)
            masks = boxes_to_masks([r[2] for r in rows], size, size, image_size=(H0, W0))
            return HeldOut(images, torch.tensor([r[1] for r in rows]), masks,
                           [r[3] for r in rows])
    return None
