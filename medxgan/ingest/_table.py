"""CSV reading shared by the adapters: header check, rows with their line numbers."""

from __future__ import annotations

import csv
import os


def read_csv(path: str, required: list[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV as ``(line number, {column: stripped cell})``; blank lines skipped.

    Short rows get "" for their missing cells; cells past the header are ignored.

    Raises:
        ValueError: unreadable file or a required column missing (one line, names the file).
    """
    name = os.path.basename(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise ValueError(f"{name}: missing column(s) {', '.join(map(repr, missing))}"
                                 f" (has {', '.join(map(repr, header[:12]))})")
            idx = {}
            for i, h in enumerate(header):
                idx.setdefault(h, i)
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                rows.append((reader.line_num, {h: (cells[i].strip() if i < len(cells) else "")
                                               for h, i in idx.items()}))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{name}: cannot read CSV ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:120]})") from None
    return rows
