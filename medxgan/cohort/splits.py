"""Deterministic train/val/test assignment from ``image_id`` alone.

The split of an image depends only on its id (SHA-256 of the UTF-8 id mapped to [0, 1)), so it
is stable across reruns, machines and cohort sizes, and adding images never moves old ones.
"""

from __future__ import annotations

import hashlib

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test


def unit_hash(image_id: str, salt: str = "split") -> float:
    """A uniform number in [0, 1) derived from ``image_id``."""
    h = hashlib.sha256(f"{salt}:{image_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(image_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for ``image_id`` with the given fractions."""
    tr, va, te = fractions
    total = tr + va + te
    u = unit_hash(image_id) * total
    if u < tr:
        return "train"
    if u < tr + va:
        return "val"
    return "test"
