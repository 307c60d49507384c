"""The U-Net trunk of the image-conditioned families and the helpers of their training loops.

:class:`UNet` is shared by the inpaint family's in-filler
(:class:`~medxgan.generators.inpaint.inpainter.Inpainter`) and amortised mask
(:class:`~medxgan.generators.inpaint.amortised.MaskNet`) and by the residual family's map
generator (:class:`~medxgan.generators.residual.vagan.ResidualNet`), so that no family imports
another. Images (B, C, H, W); H and W divisible by ``2**depth``.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.cpu import fast_layout

__all__ = ["UNet", "budget_spent", "device", "draw_batch", "spent_share"]


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + ReLU at one resolution (no normalisation: batch-independent output)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A plain U-Net trunk: ``base * 2**i`` channels at level i = 0..depth (max-pool down,
    nearest up + skip concatenation, two 3x3 conv + ReLU per level, no normalisation), then a
    1x1 conv to one channel. Shared by the inpaint family's in-filler and amortised mask and the residual
    family's map generator (:class:`~medxgan.generators.residual.vagan.ResidualNet`).

    Args:
        cin: input channels.
        base: channels of the first level.
        depth: number of 2x down-samplings; H and W must be divisible by ``2**depth``.
    """

    def __init__(self, cin: int, base: int = 8, depth: int = 3):
        super().__init__()
        self.base, self.depth = int(base), int(depth)
        ch = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(cin, ch[0])] + [_block(ch[i - 1], ch[i])
                                                           for i in range(1, depth + 1)])
        self.up = nn.ModuleList([_block(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(ch[0], 1, 1)

    def trunk(self, h: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, 1, H, W) pre-activation output (channels-last strides on the
        CPU, :mod:`medxgan.cpu`; the values do not depend on the layout beyond rounding)."""
        k = 2 ** self.depth
        if h.shape[-1] % k or h.shape[-2] % k:
            raise ValueError(f"image sides {tuple(h.shape[-2:])} must be divisible by {k}")
        h = fast_layout(h)  # channels-last on the CPU: medxgan.cpu
        skips = []
        for i, blk in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2)                         # (B, C, H/2^i, W/2^i)
            h = blk(h)
            skips.append(h)
        for blk, s in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, C, 2h, 2w)
            h = blk(torch.cat([h, s], 1))
        return self.out(h)                                     # (B, 1, H, W)


def device(name: str) -> torch.device:
    """A training config's ``device`` (``auto``, ``cpu``, ``cuda``) as a torch device; asking
    for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def spent_share(steps: int | None, seconds: float | None, step: int, t0: float) -> float:
    """The share of a training budget (``steps`` and/or ``seconds``; None: no limit) used by a
    loop that started at ``time.perf_counter() == t0`` and has taken ``step`` steps: of
    whichever limit is further spent (the first one spent stops the loop); 0 with no limit."""
    shares = [0.0]
    if steps is not None:
        shares.append(step / steps)
    if seconds:
        shares.append((time.perf_counter() - t0) / seconds)
    return max(shares)


def budget_spent(steps: int | None, seconds: float | None, step: int, t0: float) -> bool:
    """Whether a training loop that started at ``time.perf_counter() == t0`` and has taken
    ``step`` steps has used its budget (``steps`` and/or ``seconds``; None: no limit)."""
    return spent_share(steps, seconds, step, t0) >= 1.0


def draw_batch(xs: torch.Tensor, batch: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """``batch`` images of xs (N, 1, H, W) drawn with replacement from the CPU generator g,
    each flipped horizontally with probability 1/2 when ``flip``."""
    xb = xs[torch.randint(len(xs), (batch,), generator=g)]               # (b, 1, H, W)
    if flip:
        fl = torch.rand(batch, 1, 1, 1, generator=g) < 0.5
        xb = torch.where(fl, xb.flip(-1), xb)
    return xb
