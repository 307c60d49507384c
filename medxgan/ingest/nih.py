"""NIH ChestX-ray14 layout.

``ROOT/Data_Entry_2017*.csv`` (``Image Index``, ``Finding Labels`` pipe-separated, ...; several
files are concatenated), ``ROOT/BBox_List_2017.csv`` (``Image Index, Finding Label,
Bbox [x,y,w,h]``: the header splits the box into the columns ``Bbox [x``, ``y``, ``w``, ``h]``
and ends with empty unnamed columns) and PNGs in ``ROOT/images/`` or, as in the Kaggle
download, ``ROOT/images_NNN/images/``.

The user picks ``finding`` (case-insensitive): positives are images whose Finding Labels
contain it, negatives the "No Finding" images (or every other image with
``negatives="all"``); other images are not selected (not input records). Boxes are kept only
for the chosen finding. The box list names Infiltration "Infiltrate"; both spellings match.
"""

from __future__ import annotations

import glob
import os

from medxgan.cohort.writer import quarantine_row
from medxgan.ingest._table import read_csv
from medxgan.ingest.records import (BadRecord, RawBox, SourceRecord, dedupe, parse_float,
                                    pseudonymise_id)

BBOX_CSV = "BBox_List_2017.csv"
_BOX_COLS = ("Bbox [x", "y", "w", "h]")
_ALIASES = {"infiltration": {"infiltration", "infiltrate"}, "infiltrate": {"infiltration",
                                                                           "infiltrate"}}


def input_root(input_path: str) -> str:
    """The folder record paths are relative to (``ROOT`` itself)."""
    return input_path


def list_records(input_path: str, *, finding: str, negatives: str = "no_finding",
                 pseudonymise_key: bytes | str | None = None,
                 ) -> tuple[list[SourceRecord], list[dict]]:
    """Records and table-level quarantine rows of a ChestX-ray14 ``ROOT``.

    Args:
        finding: the positive class, e.g. "Pneumonia" (case-insensitive).
        negatives: "no_finding" (only "No Finding" images) or "all" (every other image).
        pseudonymise_key: replace image ids (which embed the NIH patient number) by keyed
            pseudonyms; ``source_ref`` then is the Data_Entry line.

    Raises:
        ValueError: no Data_Entry file, a missing column, or bad options.
    """
    if negatives not in ("no_finding", "all"):
        raise ValueError("negatives must be 'no_finding' or 'all'")
    if not finding or not finding.strip():
        raise ValueError("nih source needs a finding (e.g. 'Pneumonia')")
    want = _ALIASES.get(finding.strip().lower(), {finding.strip().lower()})
    entries = sorted(glob.glob(os.path.join(glob.escape(input_path), "Data_Entry_2017*.csv")))
    if not entries:
        raise ValueError(f"NIH input: no Data_Entry_2017*.csv in {input_path}")
    files = _index_images(input_path)
    quarantine: list[dict] = []

    selected: dict[str, tuple[str, int]] = {}  # image index -> (source_ref, record position)
    listed: set[str] = set()                   # every Image Index of Data_Entry
    records: list[SourceRecord] = []
    for path in entries:
        name = os.path.basename(path)
        for line, r in read_csv(path, ["Image Index", "Finding Labels"]):
            idx = r["Image Index"]
            ref = f"{name}:line {line}"
            labels = {s.strip().lower() for s in r["Finding Labels"].split("|") if s.strip()}
            if not idx or "/" in idx or "\\" in idx or idx in (".", ".."):
                quarantine.append(quarantine_row(ref, "empty or unsafe Image Index"))
                continue
            listed.add(idx)
            if not labels:
                quarantine.append(quarantine_row(ref, "empty Finding Labels"))
                continue
            if labels & want:
                label = 1
            elif labels == {"no finding"} or negatives == "all":
                label = 0
            else:
                continue  # not selected
            rel = files.get(idx, f"images/{idx}")
            src = ref if (pseudonymise_key or idx in selected) else rel  # a duplicate: its line
            image_id = pseudonymise_id(idx, pseudonymise_key) if pseudonymise_key else idx
            if idx not in selected:
                selected[idx] = (src, len(records))
            records.append(SourceRecord(source_ref=src, image_id=image_id, label=label,
                                        path=rel, boxes=[], finding=finding.strip()))

    bbox_path = os.path.join(input_path, BBOX_CSV)
    if os.path.isfile(bbox_path):
        bad: dict[int, str] = {}
        for line, r in read_csv(bbox_path, ["Image Index", "Finding Label", *_BOX_COLS]):
            if r["Finding Label"].strip().lower() not in want:
                continue
            idx = r["Image Index"]
            if idx in listed and idx not in selected:
                continue  # the image was not selected (neither positive nor negative)
            if idx not in selected:
                quarantine.append(quarantine_row(f"{BBOX_CSV}:line {line}",
                                                 "box for an image not in Data_Entry"
                                                 if idx else "box without Image Index"))
                continue
            pos = selected[idx][1]
            try:
                x, y, w, h = (parse_float(r[c], c) for c in _BOX_COLS)
            except BadRecord as exc:
                bad.setdefault(pos, f"{BBOX_CSV} line {line}: {exc}")
                continue
            records[pos].boxes.append(RawBox(x, y, x + w, y + h, r["Finding Label"].strip()))
        for pos, reason in bad.items():
            quarantine.append(quarantine_row(records[pos].source_ref, reason))
        records = [r for i, r in enumerate(records) if i not in bad]
    records, dup = dedupe(records)
    return records, quarantine + dup


def _index_images(root: str) -> dict[str, str]:
    """``file name -> path relative to root`` for ``images/*`` and ``images_*/images/*``."""
    out: dict[str, str] = {}
    nested = glob.glob(os.path.join(glob.escape(root), "images_*", "images"))
    for sub in ["images", *sorted(os.path.relpath(p, root) for p in nested)]:
        folder = os.path.join(root, sub)
        if not os.path.isdir(folder):
            continue
        with os.scandir(folder) as it:
            for e in it:
                if e.is_file():
                    out.setdefault(e.name, f"{sub}/{e.name}".replace(os.sep, "/"))
    return out
