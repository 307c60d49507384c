"""Reading a cohort as a stream of tensor batches (never the whole cohort in memory).

>>> cohort = Cohort("s3://bucket/cohorts/cxr")            # doctest: +SKIP
>>> for batch in cohort.iter_batches(64, split="test"):   # doctest: +SKIP
...     batch.images.shape                                 # (B, 1, H, W) float32 in [0, 1]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from medxgan.cohort.png import decode_png, to_unit
from medxgan.settings import Settings
from medxgan.storage import Store


@dataclass
class CohortBatch:
    """A batch of cohort images.

    Attributes:
        image_ids: B ids.
        images: (B, 1, H, W) float32 in [0, 1] (the cohort's pixel space).
        labels: (B,) int64: 1 positive, 0 negative, -1 unknown.
        splits: B split names.
        boxes: B arrays of shape (k, 4) float32 ``x0, y0, x1, y1`` (k may be 0).
    """

    image_ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    splits: list[str]
    boxes: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.image_ids)


class Cohort:
    """A finished cohort (its manifest exists) at ``url``.

    Raises:
        medxgan.storage.StorageError: no manifest (missing or half-written cohort).
    """

    def __init__(self, url: str | Store, settings: Settings | None = None):
        self.store = url if isinstance(url, Store) else Store(url, settings)
        self.manifest = self.store.require_manifest()
        self._boxes: dict[str, np.ndarray] | None = None

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) when every image has the same size, else None."""
        s = self.manifest.get("image_size")
        return (int(s[0]), int(s[1])) if s else None

    # ------------------------------------------------------------------ tables
    def index(self) -> pa.Table:
        """``image_id, label, split, height, width, source_ref`` of every image (no pixels)."""
        cols = ["image_id", "label", "split", "height", "width", "source_ref"]
        tables = [self.store.read_parquet(k, columns=cols) for k in self.manifest["parts"]]
        if not tables:
            from medxgan.cohort.schema import IMAGES
            return pa.schema([IMAGES.field(c) for c in cols]).empty_table()
        return pa.concat_tables(tables)

    def boxes_table(self) -> pa.Table:
        return self.store.read_parquet("boxes.parquet")

    def quarantine_table(self) -> pa.Table:
        return self.store.read_parquet("quarantine.parquet")

    def boxes_by_id(self) -> dict[str, np.ndarray]:
        """``image_id -> (k, 4) float32`` boxes (only images that have boxes)."""
        if self._boxes is None:
            t = self.boxes_table()
            ids = t.column("image_id").to_pylist()
            arr = np.stack([t.column(c).to_numpy() for c in ("x0", "y0", "x1", "y1")], 1) \
                if t.num_rows else np.zeros((0, 4), np.float32)
            out: dict[str, list] = {}
            for i, row in zip(ids, arr):
                out.setdefault(i, []).append(row)
            self._boxes = {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in out.items()}
        return self._boxes

    # ------------------------------------------------------------------ batches
    def iter_batches(self, batch_size: int = 64, split: str | Sequence[str] | None = None,
                     labels: Sequence[int] | None = None,
                     ids: Sequence[str] | None = None,
                     limit: int | None = None) -> Iterator[CohortBatch]:
        """Stream images part by part as :class:`CohortBatch` es of at most ``batch_size``.

        Args:
            split: keep only these split(s).
            labels: keep only these labels.
            ids: keep only these image ids (order follows the cohort, not ``ids``).
            limit: stop after this many images.
        """
        splits = [split] if isinstance(split, str) else split
        idset = set(ids) if ids is not None else None
        boxes = self.boxes_by_id()
        pending: list[tuple] = []
        emitted = 0
        for key in self.manifest["parts"]:
            if limit is not None and emitted + len(pending) >= limit:
                break
            for rb in self.store.iter_parquet_batches(key, batch_size=max(batch_size, 256)):
                t = pa.Table.from_batches([rb])
                mask = None
                if splits is not None:
                    mask = pc.is_in(t["split"], pa.array(splits, pa.string()))
                if labels is not None:
                    m = pc.is_in(t["label"], pa.array(list(labels), pa.int8()))
                    mask = m if mask is None else pc.and_(mask, m)
                if idset is not None:
                    m = pc.is_in(t["image_id"], pa.array(sorted(idset), pa.string()))
                    mask = m if mask is None else pc.and_(mask, m)
                if mask is not None:
                    t = t.filter(mask)
                for row in zip(t["image_id"].to_pylist(), t["label"].to_pylist(),
                               t["split"].to_pylist(), t["pixels"].to_pylist()):
                    if limit is not None and emitted + len(pending) >= limit:
                        break
                    pending.append(row)
                    if len(pending) == batch_size:
                        yield self._make_batch(pending, boxes)
                        emitted += len(pending)
                        pending = []
        if pending:
            yield self._make_batch(pending, boxes)

    def load(self, ids: Sequence[str]) -> CohortBatch:
        """The images with ``ids``, in the order given (for small sets)."""
        got = {}
        for b in self.iter_batches(256, ids=ids):
            for j, i in enumerate(b.image_ids):
                got[i] = (b.images[j], b.labels[j], b.splits[j], b.boxes[j])
        missing = [i for i in ids if i not in got]
        if missing:
            raise KeyError(f"image ids not in cohort {self.url}: {missing[:3]}")
        return CohortBatch(list(ids), torch.stack([got[i][0] for i in ids]),
                           torch.stack([got[i][1] for i in ids]), [got[i][2] for i in ids],
                           [got[i][3] for i in ids])

    @staticmethod
    def _make_batch(rows: list[tuple], boxes: dict[str, np.ndarray]) -> CohortBatch:
        arrs = [to_unit(decode_png(r[3])) for r in rows]
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise ValueError(f"images of different sizes in one batch: {sorted(shapes)[:3]}")
        images = torch.from_numpy(np.stack(arrs)[:, None])  # (B, 1, H, W)
        empty = np.zeros((0, 4), np.float32)
        return CohortBatch(
            image_ids=[r[0] for r in rows],
            images=images,
            labels=torch.tensor([r[1] for r in rows], dtype=torch.int64),
            splits=[r[2] for r in rows],
            boxes=[boxes.get(r[0], empty) for r in rows],
        )
