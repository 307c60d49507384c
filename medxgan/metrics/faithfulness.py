"""Faithfulness: does removing (inserting) what the map calls relevant move the classifier?

Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018). Pixels are ordered by
the map, most relevant first (ties broken by pixel index, row-major, so results are
deterministic). At step k = 0..steps the first ``round(k * N / steps)`` pixels are

- **deletion**: replaced by the baseline (start: the image; end: the baseline);
- **insertion**: taken from the image, the rest from the baseline (start: the baseline).

The score is the area under f's positive-class probability sigmoid(model(x_k)) over the
fraction of pixels changed, trapezoid rule on [0, 1], so it lies in [0, 1]. A faithful map
gives a **low** deletion AUC and a **high** insertion AUC.

Baselines: ``"blur"``: the image blurred with a Gaussian (``blur_sigma`` pixels, default
5 px; reflect padding), ``"mean"``: each image's mean intensity.

``model`` is any callable mapping images (N, 1, H, W) float32 in [0, 1] to positive-class
logits (N,) (or (N, 1)); it is called under ``torch.no_grad()`` and its mode is not changed.
All steps of all images go through the model as one flat batch, in chunks of ``batch_size``
images (only one chunk of curve images is in memory at a time); on the CPU at most
:func:`medxgan.cpu.cpu_batch` images (16 at 128 px), which stay in the caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from medxgan.cpu import cpu_batch, inference_copy

Model = Callable[[torch.Tensor], torch.Tensor]


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, kernel radius ceil(3 sigma), reflect padding.

    Args:
        images: (B, C, H, W) float.
        sigma: standard deviation in pixels (> 0).

    Returns: (B, C, H, W) same dtype.
    """
    B, C, H, W = images.shape
    r = max(1, int(torch.tensor(3.0 * sigma).ceil()))
    r = min(r, H - 1, W - 1)
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()  # (2r+1,)
    y = F.pad(images.reshape(B * C, 1, H, W), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))  # (BC, 1, H+2r, W)
    y = F.conv2d(y, k.view(1, 1, -1, 1))  # (BC, 1, H, W)
    return y.reshape(B, C, H, W)


def _baseline(images: torch.Tensor, kind: str, blur_sigma: float) -> torch.Tensor:
    if kind == "blur":
        return gaussian_blur(images, blur_sigma)
    if kind == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images)
    raise ValueError(f"unknown baseline {kind!r}: use 'blur' or 'mean'")


def _pixel_rank(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Rank of each pixel, 0 = most relevant, after bilinear upsampling to ``size``.

    Args:
        maps: (B, h, w) float.

    Returns: (B, H*W) int64.
    """
    B = maps.shape[0]
    m = maps.detach().to(torch.float32)
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
    order = torch.sort(m.reshape(B, -1), dim=1, descending=True, stable=True).indices  # (B, N)
    n = order.shape[1]
    return torch.empty_like(order).scatter_(1, order, torch.arange(n, device=order.device).expand(B, n))


def _curve_auc(
    model: Model,
    images: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int,
    baseline: str,
    batch_size: int,
    blur_sigma: float,
    insertion: bool,
) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] != 1 or maps.dim() != 3 or maps.shape[0] != images.shape[0]:
        raise ValueError(f"images must be (B, 1, H, W) and maps (B, h, w), got {tuple(images.shape)}, {tuple(maps.shape)}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    B, _, H, W = images.shape
    N = H * W
    x = images.to(torch.float32)
    base = _baseline(x, baseline, blur_sigma)  # (B, 1, H, W)
    rank = _pixel_rank(maps, (H, W)).view(B, 1, 1, H, W)
    n_k = torch.round(torch.arange(steps + 1, dtype=torch.float64) * N / steps).long().to(x.device)  # (S,)
    S = steps + 1
    src, dst = (x, base) if insertion else (base, x)  # changed pixels come from src
    batch_size = cpu_batch(batch_size, (H, W), x.device)  # medxgan.cpu
    model = inference_copy(model, x[:2])  # a module's channels-last copy on the CPU: medxgan.cpu
    probs = []
    with torch.no_grad():
        for j in range(0, B * S, batch_size):  # chunks of the flattened (image, step) grid
            flat = torch.arange(j, min(j + batch_size, B * S), device=x.device)  # (n,)
            img, step = flat // S, flat % S
            changed = rank[img, 0] < n_k[step].view(-1, 1, 1, 1)  # (n, 1, H, W)
            xs = torch.where(changed, src[img], dst[img])  # (n, 1, H, W)
            probs.append(torch.sigmoid(model(xs).reshape(-1).to(torch.float64)))
    p = torch.cat(probs).view(B, S)  # (B, S)
    return (p.sum(1) - (p[:, 0] + p[:, -1]) / 2) / steps


def deletion_auc(
    model: Model,
    images: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = 20,
    baseline: Literal["blur", "mean"] = "blur",
    batch_size: int = 256,
    blur_sigma: float = 5.0,
) -> torch.Tensor:
    """Area under f's positive probability as the most relevant pixels are removed.

    Args:
        model: images (N, 1, H, W) in [0, 1] -> positive-class logits (N,).
        images: (B, 1, H, W) float in [0, 1].
        maps: (B, h, w) float; upsampled bilinearly to (H, W) when smaller.
        steps: number of removal steps (steps + 1 forward passes per image).
        baseline: what removed pixels become ("blur" or "mean").
        batch_size: most images per forward pass.
        blur_sigma: Gaussian sigma of the blur baseline, pixels.

    Returns: (B,) float64 in [0, 1]; lower is more faithful.
    """
    return _curve_auc(
        model, images, maps, steps=steps, baseline=baseline, batch_size=batch_size, blur_sigma=blur_sigma, insertion=False
    )


def insertion_auc(
    model: Model,
    images: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = 20,
    baseline: Literal["blur", "mean"] = "blur",
    batch_size: int = 256,
    blur_sigma: float = 5.0,
) -> torch.Tensor:
    """Area under f's positive probability as the most relevant pixels are inserted into
    the baseline (blurred image by default). Arguments as ``deletion_auc``.

    Returns: (B,) float64 in [0, 1]; higher is more faithful.
    """
    return _curve_auc(
        model, images, maps, steps=steps, baseline=baseline, batch_size=batch_size, blur_sigma=blur_sigma, insertion=True
    )
