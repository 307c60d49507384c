"""How batched convolutions run on the CPU: channels-last U-Nets and cache-sized batches.

Two settings, measured together on the project's 2-core VM at one thread (``python -m
bench.cpu_speed``, ``docs/benchmarks.md``, "CPU execution"): the inpaint family's 128 px
explanation 1.6x faster, f's no-grad probabilities 2.3-2.5x, the in-filler's training step
1.0-1.4x.

- **Channels-last U-Nets** (:func:`fast_layout`): the U-Net trunk of the image-conditioned
  families (:class:`medxgan.generators.unet.UNet`: the in-filler, the amortised mask net, the
  residual map generator) runs on channels-last (NHWC) activations on the CPU, where oneDNN's
  convolutions are faster than on NCHW ones, in training and inference. The audited
  classifier is left as it comes: channels-last made a 64 px small_cnn slower and the
  published inversion's one-image gradient steps slower (session 17's measurements). Only
  *training* a classifier (``train-classifier``, the audit's classifier stage) runs
  channels-last since session 18 (:func:`fast_training`): there it was 1.0-1.5x faster.
- **Cache-sized batches** (:func:`cpu_batch`): a no-grad forward of many images on the CPU
  runs in chunks of at most ``batch_pixels`` pixels per pass (16 images at 128 px, 64 at
  64 px, 5 at 224 px) instead of 256 images at once: a 256-image pass of a 128 px network
  streams hundreds of MB of activations through memory per layer; small chunks stay in the
  caches. This is where the counterfactual search spends its time (thousands of in-fillings
  and classifier passes per cohort). Since session 18 the same budget holds for gradient
  passes (:func:`cpu_chunks`: IG, SmoothGrad, occlusion, Grad-CAM, latent and counterfactual
  IG) and for the score stage's deletion / insertion curves: a forward-and-backward pass of a
  128 px small_cnn2 took 10-12 ms per image at 16 images against 27-30 ms at 128 (2 threads;
  64 px: 3.0-3.4 ms at 32-64 against 6.5 at 256; a 224 px DenseNet-121: 181-195 ms at 5-10
  against 397 at 40).

Neither changes what is computed: outputs equal up to float rounding (about 1e-6 on [0, 1]
images; the search's masks were identical on the 64 held-out images of both 128 px phantoms).

Both are on by default; ``MEDXGAN_CPU_TUNING=0`` (read at import) turns both off for the
process, :func:`cpu_execution` sets them for a block of code (the benchmarks time both ways on
the same models). On GPUs nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["CPU_BATCH_PIXELS", "cpu_batch", "cpu_chunks", "cpu_execution", "fast_layout",
           "fast_training"]

#: pixels per no-grad forward pass on the CPU (16 images at 128 px; 2**18)
CPU_BATCH_PIXELS = 1 << 18

_on = os.environ.get("MEDXGAN_CPU_TUNING", "1").strip().lower() not in ("0", "false", "no",
                                                                         "off")
_state = {"channels_last": _on, "batch_pixels": CPU_BATCH_PIXELS if _on else None}


@contextmanager
def cpu_execution(channels_last: bool = True, batch_pixels: int | None = CPU_BATCH_PIXELS
                  ) -> Iterator[None]:
    """Set both settings inside a ``with`` block (process-wide, not thread-local):
    ``channels_last`` for the U-Nets, ``batch_pixels`` the chunk of :func:`cpu_batch` (None:
    the caller's batch as it is)."""
    before = dict(_state)
    _state.update(channels_last=bool(channels_last), batch_pixels=batch_pixels)
    try:
        yield
    finally:
        _state.update(before)


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) as channels-last where that is on and x is on the CPU, else x itself.
    The values are unchanged (differentiable; a copy only where the layout changes)."""
    if _state["channels_last"] and x.ndim == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def fast_training(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with its 4-D weights channels-last where that is on and it lives on the CPU,
    for training (the classifier that ``train-classifier`` trains; its inputs go through
    :func:`fast_layout`); else the module as it is. Values are unchanged; convert back with
    ``module.to(memory_format=torch.contiguous_format)`` before saving, so checkpoints keep
    their layout. Session 18's measurements (2 threads, batch 64, forward, backward and Adam
    step): small_cnn2 at 128 px 1.99-2.13 -> 1.52 s per step, small_cnn at 64 px 1.4-1.5x
    faster, small_cnn2 at 64 px about the same."""
    p = next(module.parameters(), None)
    if _state["channels_last"] and p is not None and p.device.type == "cpu":
        return module.to(memory_format=torch.channels_last)
    return module


def cpu_batch(batch: int, side: tuple[int, int] | torch.Size, device: torch.device | str,
              module: object | None = None) -> int:
    """Images per forward pass for images of ``side`` (H, W) px on ``device``: ``batch`` on a
    GPU, on the CPU at most ``batch_pixels // (H W)`` (at least 1).

    A ``module`` whose output for one image depends on the other images of its pass declares
    ``batch_dependent = True`` (the shortcut search's fixed infills: ROAD's noise is drawn for
    the whole pass and its solver stops on the worst image) and keeps ``batch``: smaller
    passes would change what it computes, not only how fast."""
    px = _state["batch_pixels"]
    if px is None or torch.device(device).type != "cpu" or getattr(module, "batch_dependent",
                                                                     False):
        return max(1, int(batch))
    H, W = int(side[-2]), int(side[-1])
    return max(1, min(int(batch), px // max(1, H * W)))


def cpu_chunks(n: int, per_image: int, batch: int | None, side: tuple[int, int] | torch.Size,
               device: torch.device | str) -> tuple[int, int]:
    """How an attribution method that puts ``per_image`` inputs of each of ``n`` images through
    f, ``batch`` inputs per pass (None: all at once), splits its work on ``device``:
    (images per call, inputs per pass).

    On a GPU (or with the budget off) that is ``(n, batch)``, the method as configured. On the
    CPU the passes keep to :func:`cpu_batch`'s budget, forward and backward alike (gradient
    passes through a 128 px classifier ran 2-2.5x faster per image at 16 images a pass than at
    64-128, session 18's measurements): the images are split into calls of
    ``max(1, passes // per_image)`` images. Every image's attribution depends on that image
    alone, so the split changes nothing but float rounding."""
    total = n * per_image if batch is None else int(batch)
    if _state["batch_pixels"] is None or torch.device(device).type != "cpu":
        return n, total
    p = cpu_batch(total, side, device)
    return max(1, min(n, p // max(1, per_image))), p
