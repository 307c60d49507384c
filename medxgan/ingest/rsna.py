"""RSNA Pneumonia Detection (Kaggle) layout.

``ROOT/stage_2_train_labels.csv`` with ``patientId,x,y,width,height,Target`` (one row per box,
several rows per patient, empty box cells when Target is 0) and
``ROOT/stage_2_train_images/<patientId>.dcm`` (1024 x 1024 MONOCHROME2 8-bit in the release).
Boxes are ``(x, y, x + width, y + height)`` in original pixel-edge coordinates, finding
"Lung Opacity". One :class:`SourceRecord` per patient.
"""

from __future__ import annotations

import os

from medxgan.cohort.writer import quarantine_row
from medxgan.ingest._table import read_csv
from medxgan.ingest.records import (BadRecord, RawBox, SourceRecord, dedupe, group_rows,
                                    parse_float, parse_label, pseudonymise_id)

LABELS_CSV = "stage_2_train_labels.csv"
IMAGES_DIR = "stage_2_train_images"
FINDING = "Lung Opacity"
_BOX = ("x", "y", "width", "height")


def input_root(input_path: str) -> str:
    """The folder record paths are relative to (``ROOT`` itself)."""
    return input_path


def list_records(input_path: str, *, labels_csv: str = LABELS_CSV, images_dir: str = IMAGES_DIR,
                 pseudonymise_key: bytes | str | None = None,
                 ) -> tuple[list[SourceRecord], list[dict]]:
    """Records (one per patient) and table-level quarantine rows of an RSNA ``ROOT``.

    A patient with any bad row (bad number, bad Target, conflicting Targets, partial box) is
    quarantined as a whole with the first problem as reason. With ``pseudonymise_key`` the
    image id is :func:`pseudonymise_id` of the patientId and ``source_ref`` is the CSV line.

    Raises:
        ValueError: the labels CSV is missing or lacks a column.
    """
    csv_path = os.path.join(input_path, labels_csv)
    if not os.path.isfile(csv_path):
        raise ValueError(f"RSNA input: {labels_csv} not found in {input_path}")
    rows = read_csv(csv_path, ["patientId", *_BOX, "Target"])
    records, quarantine = [], []
    groups = group_rows([r["patientId"] for _, r in rows])
    for pid, idx in groups.items():
        first_line = rows[idx[0]][0]
        line_ref = f"{labels_csv}:line {first_line}"
        if not pid:
            quarantine += [quarantine_row(f"{labels_csv}:line {rows[i][0]}", "empty patientId")
                           for i in idx]
            continue
        safe = "/" not in pid and "\\" not in pid and pid not in (".", "..")
        ref = line_ref if (pseudonymise_key or not safe) else f"{images_dir}/{pid}.dcm"
        try:
            if not safe:
                raise BadRecord("patientId is not a plain file name")
            label, boxes = _parse_patient([rows[i] for i in idx])
        except BadRecord as exc:
            quarantine.append(quarantine_row(ref, str(exc)))
            continue
        image_id = pseudonymise_id(pid, pseudonymise_key) if pseudonymise_key else pid
        records.append(SourceRecord(source_ref=ref, image_id=image_id, label=label,
                                    path=f"{images_dir}/{pid}.dcm", boxes=boxes,
                                    finding=FINDING))
    records, dup = dedupe(records)
    return records, quarantine + dup


def _parse_patient(rows: list[tuple[int, dict[str, str]]]) -> tuple[int, list[RawBox]]:
    """(label, boxes) of one patient's rows. Raises BadRecord naming the line."""
    labels, boxes = set(), []
    for line, r in rows:
        try:
            labels.add(parse_label(r["Target"], "Target"))
            cells = [r[c] for c in _BOX]
            if all(c == "" for c in cells):
                continue
            if any(c == "" for c in cells):
                raise BadRecord("partly empty box (x, y, width, height)")
            x, y, w, h = (parse_float(r[c], c) for c in _BOX)
            boxes.append(RawBox(x, y, x + w, y + h, FINDING))
        except BadRecord as exc:
            raise BadRecord(f"line {line}: {exc}") from None
    if len(labels) > 1:
        raise BadRecord("conflicting Target values for one patient")
    return labels.pop(), boxes
