"""Explanations as Arrow tables (one row per image) and back.

Columns of ``explanation_table``:

- ``image_id`` (string), ``map`` (binary: the (H, W) map as float16 little-endian raw bytes,
  row-major, values clipped to the float16 range), ``map_height``, ``map_width`` (int32);
- every scalar extra (a tensor shaped (B,)) as a float64 column (``recon_mse``, ``p_x``,
  ``p_pos``, ``p_neg``, ``counterfactual_flip``, ``completeness_error``, ``delta_logit``,
  ``steps_run``, ...); every list extra of B strings as a string column (``form``);
- when the explanation has medXGAN extras (``x_neg``, ``frames``, ``change``): ``x_neg_png``
  (8-bit greyscale PNG of x_neg in [0, 1]), ``strip_png`` (8-bit PNG, the interpolation frames
  side by side: (H, n_frames * W)), ``frame_probs`` (list<float64>, f's probability per frame),
  ``change`` (binary: x_pos - x_neg as float16 bytes, like ``map``), ``z_a``, ``z_p``
  (list<float32>: the latents, so latent IG can reuse the inversion).

The schema metadata holds ``method``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch

from medxgan.cohort.png import decode_png, encode_png, from_unit
from medxgan.explain.base import Explanation

_F16_MAX = float(np.finfo(np.float16).max)


def explanation_table(image_ids: Sequence[str], expl: Explanation, method: str) -> pa.Table:
    """One row per image: map, scalar extras and (medXGAN) images; see the module docstring."""
    B = len(image_ids)
    if expl.maps.ndim != 3 or expl.maps.shape[0] != B:
        raise ValueError(f"maps {tuple(expl.maps.shape)} do not match {B} image ids")
    H, W = expl.maps.shape[1:]
    cols: dict[str, pa.Array] = {
        "image_id": pa.array([str(i) for i in image_ids], pa.string()),
        "map": pa.array(_f16_bytes(expl.maps), pa.binary()),
        "map_height": pa.array([H] * B, pa.int32()),
        "map_width": pa.array([W] * B, pa.int32()),
    }
    ex = expl.extras
    for k, v in ex.items():
        if isinstance(v, torch.Tensor) and v.ndim == 1 and v.shape[0] == B and k not in cols:
            cols[k] = pa.array(v.detach().cpu().double().numpy(), pa.float64())
        elif isinstance(v, list) and len(v) == B and all(isinstance(s, str) for s in v):
            cols[k] = pa.array(v, pa.string())
    if all(k in ex for k in ("x_neg", "frames", "change")):
        x_neg = ex["x_neg"].detach().cpu().reshape(B, H, W).numpy()
        frames = ex["frames"].detach().cpu().numpy()                   # (B, n, H, W)
        strips = frames.transpose(0, 2, 1, 3).reshape(B, H, -1)        # (B, H, n W)
        cols["x_neg_png"] = pa.array([encode_png(from_unit(a)) for a in x_neg], pa.binary())
        cols["strip_png"] = pa.array([encode_png(from_unit(a)) for a in strips], pa.binary())
        if "frame_probs" in ex:
            cols["frame_probs"] = pa.array(ex["frame_probs"].detach().cpu().double().tolist(),
                                           pa.list_(pa.float64()))
        cols["change"] = pa.array(_f16_bytes(ex["change"].reshape(B, H, W)), pa.binary())
        for k in ("z_a", "z_p"):
            if k in ex:
                cols[k] = pa.array(ex[k].detach().cpu().float().tolist(), pa.list_(pa.float32()))
    table = pa.table(cols)
    return table.replace_schema_metadata({"method": method})


def read_maps(table: pa.Table) -> tuple[list[str], torch.Tensor]:
    """``(image ids, maps (B, H, W) float32)`` from an :func:`explanation_table` table."""
    return table.column("image_id").to_pylist(), _decode(table, "map")


def read_changes(table: pa.Table) -> tuple[list[str], torch.Tensor]:
    """``(image ids, changes x_pos - x_neg (B, H, W) float32)`` of a medxgan table."""
    return table.column("image_id").to_pylist(), _decode(table, "change")


def read_latents(table: pa.Table) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``(image ids, z_a (B, d_a), z_p (B, d_p))`` of a medxgan table (to reuse the inversion)."""
    ids = table.column("image_id").to_pylist()
    z = [torch.tensor(table.column(k).to_pylist(), dtype=torch.float32) for k in ("z_a", "z_p")]
    return ids, z[0], z[1]


def read_png_column(table: pa.Table, column: str) -> list[np.ndarray]:
    """Decoded PNGs of ``column`` (``x_neg_png``, ``strip_png``) as (H, W) uint8 arrays."""
    return [decode_png(b) for b in table.column(column).to_pylist()]


def _f16_bytes(maps: torch.Tensor) -> list[bytes]:
    a = maps.detach().cpu().double().clamp(-_F16_MAX, _F16_MAX).numpy().astype("<f2")
    return [np.ascontiguousarray(m).tobytes() for m in a]


def _decode(table: pa.Table, column: str) -> torch.Tensor:
    hs = table.column("map_height").to_pylist()
    ws = table.column("map_width").to_pylist()
    data = table.column(column).to_pylist()
    if not data:
        return torch.zeros(0, 0, 0)
    arrs = [np.frombuffer(b, "<f2").reshape(h, w) for b, h, w in zip(data, hs, ws)]
    return torch.from_numpy(np.stack(arrs).astype(np.float32))        # (B, H, W)
