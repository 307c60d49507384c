"""How batched convolutions run on the CPU: channels-last U-Nets and cache-sized batches.

Two settings, measured together on the project's 2-core VM at one thread (``python -m
bench.cpu_speed``, ``docs/benchmarks.md``, "CPU execution"): the inpaint family's 128 px
explanation 1.6x faster, f's no-grad probabilities 2.3-2.5x, the in-filler's training step
1.0-1.4x.

- **Channels-last U-Nets** (:func:`fast_layout`): the U-Net trunk of the image-conditioned
  families (:class:`medxgan.generators.unet.UNet`: the in-filler, the amortised mask net, the
  residual map generator) runs on channels-last (NHWC) activations on the CPU, where oneDNN's
  convolutions are faster than on NCHW ones, in training and inference. *Training* a
  classifier (``train-classifier``, the audit's classifier stage) runs channels-last since
  session 18 (:func:`fast_training`): there it was 1.0-1.5x faster.
- **The audited classifier's no-grad passes** (:func:`inference_copy`, session 19): the
  counterfactual search, ``probabilities``, ``positive_probability`` and the deletion /
  insertion curves put their passes through a copy of f with channels-last weights (made once
  per classifier, checked against f on two images, f itself where the copy would compute
  otherwise): 1.4-2.7x faster per pass for small_cnn, small_cnn2, ResNet-18 and DenseNet-121
  in session 19's measurements. Gradient passes (Grad-CAM, IG, the published inversion's
  one-image steps) keep f as it comes: session 17 measured the published inversion's steps
  10-15 % slower channels-last.
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

None changes what is computed: outputs equal up to float rounding (about 1e-6 on [0, 1]
images; the search's masks were identical on the 64 held-out images of both 128 px phantoms,
with the classifier's copy too).

All are on by default; ``MEDXGAN_CPU_TUNING=0`` (read at import) turns all off for the
process, :func:`cpu_execution` sets them for a block of code (the benchmarks time both ways
on the same models; ``channels_last`` covers the U-Nets, classifier training and the
classifier's copy). On GPUs nothing changes.
"""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["CPU_BATCH_PIXELS", "cpu_batch", "cpu_chunks", "cpu_execution", "fast_layout",
           "fast_training", "inference_copy"]

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


#: how far the copy's outputs on the probe may be from the classifier's (abs and rel, logits)
_COPY_TOL = 1e-4
#: the copies made, by classifier: (the state they were made from, the copy or the classifier)
_copies: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, torch.nn.Module]]" = \
    weakref.WeakKeyDictionary()


def _state_of(f: torch.nn.Module) -> tuple:
    """What a copy of ``f`` was made from: each parameter and buffer, its storage (a ``.data``
    assignment replaces it) and its in-place version (an optimiser step or
    ``load_state_dict`` bumps it). f's mode is not part of it: a train-mode f is never copied."""
    return tuple((id(t), t.data_ptr(), t._version) for t in (*f.parameters(), *f.buffers()))


@torch.no_grad()
def inference_copy(f: torch.nn.Module, probe: torch.Tensor) -> torch.nn.Module:
    """A copy of the audited classifier ``f`` for many no-grad passes on the CPU, its 4-D
    weights channels-last (the counterfactual search's thousands of classifier passes).

    oneDNN's convolutions run faster on channels-last weights than on NCHW ones; the inputs
    need not change. Session 19's measurements (no-grad, cache-sized batches, 1 and 2
    threads, ``docs/benchmarks.md``, "CPU execution"): 128 px small_cnn2 6.9-13.1 -> 4.0-4.9
    ms per image, 64 px small_cnn 1.0-1.7 -> 0.6-0.8, 128 px ResNet-18 14-19 -> 11-15, 224 px
    DenseNet-121 80-114 -> 56-99.

    Returns ``f`` itself where the tuning is off, ``f`` is not a module with parameters on
    the CPU in eval mode (a train-mode pass updates f's BatchNorm statistics), the copy
    cannot be made (a module ``copy.deepcopy`` refuses) or its outputs on ``probe`` (images it
    will see, (b, 1, H, W) in [0, 1]; the first two are used) differ from ``f``'s by more than
    float rounding (``1e-4`` abs + rel on the logits): the copy must compute what ``f`` does.
    ``f`` is never changed; the copy keeps its attributes (``threshold``). The copy is made
    once per classifier and state (a classifier changed in place since is copied again); a
    copy given again is returned as it is."""
    if not isinstance(f, torch.nn.Module) or getattr(f, "_medxgan_inference_copy", False):
        return f
    p = next(f.parameters(), None)
    if (not _state["channels_last"] or p is None or p.device.type != "cpu" or not len(probe)
            or f.training):   # in train mode a BatchNorm pass updates f's own statistics
        return f
    state = _state_of(f)
    made = _copies.get(f)
    if made is not None and made[0] == state:
        return made[1]
    g = _make_copy(f, probe[:cpu_batch(2, probe.shape[-2:], "cpu")])  # within the budget
    _copies[f] = (state, g)
    return g


def _make_copy(f: torch.nn.Module, probe: torch.Tensor) -> torch.nn.Module:
    """:func:`inference_copy`'s copy of ``f``, checked on ``probe``, or ``f``."""
    try:
        g = copy.deepcopy(f).to(memory_format=torch.channels_last)
        want, got = f(probe), g(probe)
    except Exception:  # noqa: BLE001 - any module the copy or the layout breaks keeps f
        return f
    if want.shape != got.shape or not torch.allclose(got.float(), want.float(), rtol=_COPY_TOL,
                                                      atol=_COPY_TOL):
        return f
    g._medxgan_inference_copy = True  # a copy of a copy is the copy
    return g
