"""Per-image seeds, so that seeded randomness does not depend on the batch an image is in.

A seed drawn from ``(seed, index within the call)`` changes when the same image is explained
in another batch; a seed drawn from ``(seed, image id)`` or ``(seed, image content)`` does not.
Explainers use content seeds by default (batch-size independence without needing ids) and
id seeds when the caller passes image ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

_MASK63 = (1 << 63) - 1


def mix_seed(*parts: object) -> int:
    """A 63-bit seed that is a stable hash of ``parts`` (same on every machine and run)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _MASK63


def index_seeds(n: int, seed: int) -> list[int]:
    """Seeds for images ``0..n-1`` of one call, from ``(seed, index)`` (batch dependent)."""
    return [mix_seed("index", seed, i) for i in range(n)]


def id_seeds(ids: Sequence[str], seed: int) -> list[int]:
    """Seeds from ``(seed, image id)``: the same image id always gets the same seed."""
    return [mix_seed("id", seed, i) for i in ids]


def content_seeds(images: torch.Tensor, seed: int) -> list[int]:
    """Seeds from ``(seed, pixel bytes)`` of each image ``images[i]`` (any shape, B leading)."""
    arr = images.detach().to("cpu", torch.float32).contiguous().numpy()
    return [mix_seed("content", seed, hashlib.blake2b(np.ascontiguousarray(a).tobytes(),
                                                      digest_size=16).hexdigest())
            for a in arr]


def per_image_normal(seeds: Sequence[int], shape: tuple[int, ...],
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal draws, one seeded generator per image: (len(seeds), *shape) float32."""
    out = torch.empty((len(seeds), *shape), dtype=torch.float32)
    for i, s in enumerate(seeds):  # one generator per image: the draw is the image's own
        g = torch.Generator().manual_seed(int(s))
        out[i] = torch.randn(shape, generator=g)
    return out.to(device)
