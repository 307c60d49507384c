"""A cohort seen through one finding: the cohort that a per-finding audit explains and scores
(``explain.findings``; docs/design.md, "Multi-finding audits").

A cohort stores one label per image (1: some finding, 0: none, -1: unknown) and boxes that
name their finding. The view of finding F is a cohort of the same images, splits and pixels in
which

- the boxes are those whose ``finding`` denotes F (:func:`box_denotes`: the same name after
  normalisation, or a synonym from :data:`medxgan.findings.SYNONYMS`);
- an image with such a box is labelled 1, an image labelled 0 stays 0, and every other image
  (positive for another finding only, or positive without a box that names its finding) is
  labelled -1: the cohort does not say whether it shows F.

The view is written like any cohort (image parts first, boxes and quarantine, the manifest
last), so every stage that takes a cohort URL runs on it unchanged. Its ``content_hash`` is
derived from the source cohort's and the finding's normalised name (no pixel is decoded); its
manifest keeps the source's other keys and records both under ``view``. The source's quarantine is carried over, so every input
record still ends in the cohort or in quarantine.
"""

from __future__ import annotations

import datetime as _dt
import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from medxgan.cohort.reader import Cohort
from medxgan.cohort.schema import BOXES, IMAGES, QUARANTINE, SCHEMA_VERSION
from medxgan.findings import normalise, synonyms
from medxgan.storage import Store

__all__ = ["FindingViewError", "box_denotes", "finding_view", "view_hash"]

VIEW_VERSION = 1


class FindingViewError(ValueError):
    """A finding that no box of the cohort names (one-line message)."""


def box_denotes(box_finding: str, finding: str) -> bool:
    """Whether a box labelled ``box_finding`` shows ``finding`` (normalised names, synonyms)."""
    n = normalise(box_finding)
    return bool(n) and n in synonyms(finding)


def view_hash(source_hash: str, finding: str) -> str:
    """Content hash of the view of ``finding`` of a cohort with content hash ``source_hash``."""
    return hashlib.sha256(
        f"finding-view-v{VIEW_VERSION}\t{source_hash}\t{normalise(finding)}".encode()).hexdigest()


def finding_view(source: str | Cohort, out: str, finding: str) -> dict:
    """Write the view of ``finding`` of the cohort ``source`` to ``out``; returns its manifest.

    An ``out`` that already holds the finished view is reused as it is.

    Raises:
        FindingViewError: no box of the cohort denotes ``finding`` (the message lists the
            cohort's box findings).
    """
    src = source if isinstance(source, Cohort) else Cohort(source)
    dst = Store(out)
    want = view_hash(src.content_hash, finding)
    done = dst.read_manifest()
    if done is not None and done.get("content_hash") == want:
        return done

    boxes = src.boxes_table()
    names = boxes.column("finding").to_pylist()
    keep = [box_denotes(n, finding) for n in names]
    if not any(keep):
        seen = sorted({n for n in names if n})
        raise FindingViewError(
            f"finding {finding!r}: no box of cohort {src.content_hash[:12]} names it "
            f"(box findings: {', '.join(map(repr, seen)) or 'none'})")
    kept = boxes.filter(pa.array(keep, pa.bool_()))
    shown = set(kept.column("image_id").to_pylist())

    dst.delete("manifest.json")  # an unfinished rewrite must not look complete
    parts, counts = [], {"images": 0, "positives": 0, "negatives": 0, "unknown": 0}
    by_split = {"train": 0, "val": 0, "test": 0}
    for key in src.manifest["parts"]:
        t = src.store.read_parquet(key)
        ids = t.column("image_id").to_pylist()
        old = t.column("label").to_pylist()
        new = [1 if i in shown else 0 if lab == 0 else -1 for i, lab in zip(ids, old)]
        t = t.set_column(t.schema.get_field_index("label"), IMAGES.field("label"),
                         pa.array(new, IMAGES.field("label").type))
        dst.write_parquet(key, t.cast(IMAGES))
        parts.append(key)
        counts["images"] += len(new)
        counts["positives"] += new.count(1)
        counts["negatives"] += new.count(0)
        counts["unknown"] += new.count(-1)
        for s, n in zip(*pc.value_counts(t.column("split")).flatten()):
            by_split[s.as_py()] = by_split.get(s.as_py(), 0) + n.as_py()
    for k in dst.list("images/", suffix=".parquet"):
        if k not in parts:
            dst.delete(k)
    quarantine = src.quarantine_table()
    dst.write_parquet("boxes.parquet", kept.cast(BOXES))
    dst.write_parquet("quarantine.parquet", quarantine.cast(QUARANTINE))
    manifest = {
        **src.manifest,  # the source's own keys (e.g. a phantom's render parameters)
        "schema_version": SCHEMA_VERSION,
        "content_hash": want,
        "parts": sorted(parts),
        "image_size": src.manifest.get("image_size"),
        "counts": {**counts, "boxes": kept.num_rows, "images_with_boxes": len(shown),
                   "quarantined": quarantine.num_rows, "by_split": by_split},
        "view": {"of": src.content_hash, "finding": finding, "finding_normalised":
                 normalise(finding), "version": VIEW_VERSION},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    dst.write_manifest(manifest)
    return manifest
