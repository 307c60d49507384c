"""Private torch helpers shared by the explainers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from medxgan.cpu import cpu_batch, inference_copy


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` for every parameter; restored on exit.

    Gradients still flow *through* the modules to their inputs; their parameters are neither
    updated nor given ``.grad``; BatchNorm uses running statistics (so each sample's output
    depends on that sample only).
    """
    saved = []
    for m in modules:
        params = list(m.parameters())
        modes = [(sub, sub.training) for sub in m.modules()]   # each submodule's own mode
        saved.append((modes, [p.requires_grad for p in params], params))
        m.eval()
        for p in params:
            p.requires_grad_(False)
    try:
        yield
    finally:
        for modes, flags, params in saved:
            for sub, training in modes:
                sub.training = training
            for p, f in zip(params, flags):
                p.requires_grad_(f)


def to_gan(x01: torch.Tensor) -> torch.Tensor:
    """Pixel space [0, 1] -> GAN space [-1, 1]."""
    return 2.0 * x01 - 1.0


def to_unit(xg: torch.Tensor) -> torch.Tensor:
    """GAN space [-1, 1] -> pixel space [0, 1]."""
    return (xg + 1.0) / 2.0


def logit(f: nn.Module, x01: torch.Tensor) -> torch.Tensor:
    """f's positive-class logit, always shaped (B,) (a (B, 1) output is flattened)."""
    out = f(x01)
    return out.reshape(x01.shape[0])


@torch.no_grad()
def probabilities(f: nn.Module, x01: torch.Tensor, batch: int = 256,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """f's positive-class probability (N,) of images x01 (N, 1, H, W), ``batch`` at a time on
    ``device`` (default: where x01 is; on the CPU fewer at a time,
    :func:`medxgan.cpu.cpu_batch`, through f's channels-last copy,
    :func:`medxgan.cpu.inference_copy`), returned on the CPU; (0,) for no images."""
    dev = device or x01.device
    f = inference_copy(f, x01[:2].to(dev))
    out = [torch.sigmoid(f(x01[s].to(dev)).float().reshape(-1)).cpu()
           for s in chunks(len(x01), cpu_batch(batch, x01.shape[-2:], dev))]
    return torch.cat(out) if out else torch.zeros(0)


def threshold(f: nn.Module) -> float:
    """f's decision threshold on the probability (attribute ``threshold``, default 0.5)."""
    return float(getattr(f, "threshold", 0.5))


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0, size), [size, 2 size), ...`` covering ``range(n)``."""
    size = max(1, int(size))
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))
