"""Source records: one input image with all its boxes, before pixels are read.

Coordinates of a :class:`RawBox` are in the ORIGINAL image's pixel-edge coordinates
(pixel column ``c`` covers ``[c, c + 1)``; x1/y1 exclusive), floats that may still be NaN or
invalid: :mod:`medxgan.ingest.geometry` validates them once the image size is known.

``SourceRecord.path`` is relative to the input root (POSIX separators);
``source_ref`` names the record in quarantine rows and in the cohort and never holds
DICOM header values (patient identifiers).
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from dataclasses import dataclass, field

PSEUDONYM_HEX = 24  # hex characters kept from the HMAC-SHA256 digest (96 bits)


class BadRecord(ValueError):
    """A record that cannot be ingested; the message is the one-line quarantine reason."""


@dataclass
class RawBox:
    """A finding's box in original-image pixel-edge coordinates (may be invalid)."""

    x0: float
    y0: float
    x1: float
    y1: float
    finding: str = ""


@dataclass
class SourceRecord:
    """One input image with all its boxes.

    Attributes:
        source_ref: where it came from (path relative to the input root, or ``file:line N``).
        image_id: id in the cohort (possibly pseudonymised).
        label: 1 positive, 0 negative, -1 unknown (anything else is quarantined later).
        path: image file relative to the input root (None: no file known).
        boxes: the image's boxes, original pixel coordinates.
        finding: the finding that defines the positive class ("" if not known).
    """

    source_ref: str
    image_id: str
    label: int
    path: str | None
    boxes: list[RawBox] = field(default_factory=list)
    finding: str = ""


def pseudonymise_id(raw_id: str, key: bytes) -> str:
    """Keyed pseudonym of ``raw_id``: the first 24 hex digits of HMAC-SHA256(key, raw_id).

    Deterministic for one key (reruns give the same ids), not invertible without the key.
    """
    if isinstance(key, str):
        key = key.encode()
    if not key:
        raise ValueError("pseudonymise key must not be empty")
    return hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def safe_relpath(path: str) -> str:
    """``path`` normalised to a POSIX path inside the input root.

    Raises:
        BadRecord: empty, absolute (``/x``, ``C:\\x``, ``\\\\host``) or escaping with ``..``.
    """
    p = str(path).strip().replace("\\", "/")
    if not p:
        raise BadRecord("empty path")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":") or "\x00" in p:
        raise BadRecord("path escapes the input root (absolute path)")
    n = posixpath.normpath(p)
    if n == ".." or n.startswith("../") or n == ".":
        raise BadRecord("path escapes the input root ('..')")
    return n


def group_rows(keys: list[str]) -> dict[str, list[int]]:
    """Row indices per key, keys in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def parse_float(value: str, column: str) -> float:
    """A CSV cell as float (``nan`` allowed: validated later).

    Raises:
        BadRecord: not a number (the reason shows at most 20 characters of the cell).
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadRecord(f"bad number {str(value)[:20]!r} in column {column!r}") from None


def parse_label(value: str, column: str = "label") -> int:
    """A label cell (``1``, ``0``, ``-1``, also ``1.0``) as int.

    Raises:
        BadRecord: not an integer or not in {-1, 0, 1}.
    """
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise BadRecord(f"bad label value {str(value)[:20]!r} in column {column!r}") from None
    if f not in (-1.0, 0.0, 1.0):
        raise BadRecord(f"label {str(value)[:20]!r} not in {{0, 1, -1}}")
    return int(f)


def dedupe(records: list[SourceRecord]) -> tuple[list[SourceRecord], list[dict]]:
    """Drop records whose ``image_id`` was seen before (the first occurrence wins).

    Returns:
        (unique records in input order, one quarantine row per dropped record).
    """
    from medxgan.cohort.writer import quarantine_row

    seen: dict[str, str] = {}
    out, rows = [], []
    for r in records:
        if r.image_id in seen:
            rows.append(quarantine_row(
                r.source_ref, f"duplicate image_id (first used by {seen[r.image_id]})"))
        else:
            seen[r.image_id] = r.source_ref
            out.append(r)
    return out, rows
