"""A folder of PNG/JPEG/DICOM files described by a CSV or a COCO JSON.

CSV (``input_path`` ends in ``.csv``): columns ``image_id,path,label`` and optionally
``x0,y0,x1,y1,finding``; one row per box, empty box cells for an image without boxes; paths
relative to the CSV's folder (the input root). Rows of one ``image_id`` form one record; a
second path under the same id is a duplicate image id. ``source_ref`` is the file's path, or
``labels.csv:line N`` / ``coco.json:images[j]`` when the path is unusable, already named by an
earlier record, or ids are pseudonymised (so every record has its own ``source_ref``).

COCO JSON (``input_path`` ends in ``.json``): ``images[{id, file_name, width, height}]``,
``annotations[{image_id, bbox: [x, y, w, h], category_id}]``, ``categories[{id, name}]``.
Label 1 iff the image has an annotation of ``category`` (any category when None), else 0,
unless the image carries its own ``label``; boxes are the matching annotations.

Paths must stay inside the input root: absolute paths and ``..`` are quarantined.
"""

from __future__ import annotations

import json
import os

from medxgan.cohort.writer import quarantine_row
from medxgan.ingest._table import read_csv
from medxgan.ingest.records import (BadRecord, RawBox, SourceRecord, dedupe, group_rows,
                                    parse_float, parse_label, pseudonymise_id, safe_relpath)

_BOX = ("x0", "y0", "x1", "y1")


def input_root(input_path: str) -> str:
    """The folder record paths are relative to: the CSV's / JSON's folder."""
    return os.path.dirname(os.path.abspath(input_path))


def list_records(input_path: str, *, category: str | None = None, finding: str = "",
                 pseudonymise_key: bytes | str | None = None,
                 ) -> tuple[list[SourceRecord], list[dict]]:
    """Records and table-level quarantine rows of a folder CSV or COCO JSON.

    Args:
        category: COCO only: the category name (case-insensitive) that is positive.
        finding: name given to boxes without a finding (CSV) / to the positive class.
        pseudonymise_key: replace image ids by keyed pseudonyms; ``source_ref`` is then the
            CSV line / JSON entry instead of the file path.

    Raises:
        ValueError: unreadable file, missing columns/keys, unknown category.
    """
    if input_path.lower().endswith(".json"):
        records, rows = _coco(input_path, category, finding, pseudonymise_key)
    else:
        records, rows = _csv(input_path, finding, pseudonymise_key)
    records, dup = dedupe(records)
    return records, rows + dup


def _csv(path: str, finding: str, key) -> tuple[list[SourceRecord], list[dict]]:
    name = os.path.basename(path)
    rows = read_csv(path, ["image_id", "path", "label"])
    has_box = rows and all(c in rows[0][1] for c in _BOX)
    if rows and any(c in rows[0][1] for c in _BOX) and not has_box:
        raise ValueError(f"{name}: box columns must be all of x0, y0, x1, y1")
    records, quarantine, used = [], [], set()
    groups = group_rows([f"{r['image_id']}\x00{r['path']}" for _, r in rows])
    for _, idx in groups.items():
        line, first = rows[idx[0]]
        line_ref = f"{name}:line {line}"
        try:
            if not first["image_id"]:
                raise BadRecord("empty image_id")
            rel = safe_relpath(first["path"])
        except BadRecord as exc:
            quarantine.append(quarantine_row(line_ref, str(exc)))
            continue
        ref = line_ref if (key or rel in used) else rel  # a path used twice: name the line
        used.add(rel)
        try:
            labels, boxes = set(), []
            for i in idx:
                ln, r = rows[i]
                try:
                    labels.add(parse_label(r["label"]))
                    if has_box:
                        cells = [r[c] for c in _BOX]
                        if any(cells):
                            if not all(cells):
                                raise BadRecord("partly empty box (x0, y0, x1, y1)")
                            boxes.append(RawBox(*(parse_float(r[c], c) for c in _BOX),
                                                finding=r.get("finding", "") or finding))
                except BadRecord as exc:
                    raise BadRecord(f"line {ln}: {exc}") from None
            if len(labels) > 1:
                raise BadRecord("conflicting labels for one image")
        except BadRecord as exc:
            quarantine.append(quarantine_row(ref, str(exc)))
            continue
        image_id = pseudonymise_id(first["image_id"], key) if key else first["image_id"]
        records.append(SourceRecord(ref, image_id, labels.pop(), rel, boxes, finding))
    return records, quarantine


def _coco(path: str, category: str | None, finding: str, key
          ) -> tuple[list[SourceRecord], list[dict]]:
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: cannot read COCO JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ValueError(f"{name}: COCO JSON needs a list 'images'")
    anns = doc.get("annotations", []) or []
    cats = {c.get("id"): str(c.get("name", "")) for c in doc.get("categories", []) or []
            if isinstance(c, dict)}
    if category is not None:
        wanted = {k for k, v in cats.items() if v.strip().lower() == category.strip().lower()}
        if not wanted:
            raise ValueError(f"{name}: no category named {category!r}")
    else:
        wanted = None

    quarantine, boxes_of, bad = [], {}, {}
    ids = {im.get("id") for im in doc["images"] if isinstance(im, dict)}
    for j, a in enumerate(anns):
        ref = f"{name}:annotations[{j}]"
        if not isinstance(a, dict) or a.get("image_id") not in ids:
            quarantine.append(quarantine_row(ref, "annotation for an unknown image id"))
            continue
        if wanted is not None and a.get("category_id") not in wanted:
            continue
        bb = a.get("bbox")
        try:
            if not isinstance(bb, (list, tuple)) or len(bb) != 4:
                raise BadRecord("bbox is not [x, y, w, h]")
            x, y, w, h = (parse_float(v, "bbox") for v in bb)
        except BadRecord as exc:
            bad.setdefault(a["image_id"], f"annotations[{j}]: {exc}")
            continue
        boxes_of.setdefault(a["image_id"], []).append(
            RawBox(x, y, x + w, y + h, cats.get(a.get("category_id"), "") or finding))

    records, used = [], set()
    for j, im in enumerate(doc["images"]):
        line_ref = f"{name}:images[{j}]"
        try:
            if not isinstance(im, dict) or im.get("id") is None:
                raise BadRecord("image entry without id")
            rel = safe_relpath(im.get("file_name") or "")
        except BadRecord as exc:
            quarantine.append(quarantine_row(line_ref, str(exc)))
            continue
        iid = im["id"]
        ref = line_ref if (key or rel in used) else rel  # a path used twice: name the entry
        used.add(rel)
        try:
            if iid in bad:
                raise BadRecord(bad[iid])
            boxes = boxes_of.get(iid, [])
            label = parse_label(im["label"]) if "label" in im else int(bool(boxes))
        except BadRecord as exc:
            quarantine.append(quarantine_row(ref, str(exc)))
            continue
        image_id = pseudonymise_id(str(iid), key) if key else str(iid)
        records.append(SourceRecord(ref, image_id, label, rel, boxes,
                                    finding or (category or "")))
    return records, quarantine
