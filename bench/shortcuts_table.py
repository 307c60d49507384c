"""The shortcut panel's table for docs/benchmarks.md, from one or more result files of
``python -m bench.shortcuts`` (cases judged again by today's rule, ``bench.shortcuts.rejudge``;
the evidence is not recomputed).

    .venv/bin/python -m bench.shortcuts_table bench/results/shortcuts_panel_*.json

Prints a markdown table (one row per case) and the summary line of ``bench.shortcuts``
(sensitivity over the shortcut classifiers that rely on their shortcut, false alarms over the
clean controls, with Wilson 95 % intervals; local shortcuts located with IoU >= 0.3; moving
markers whose top images' regions lie on the marker >= 70 %).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.shortcuts import rejudge, summarise


def _n(v, d: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else f"{v:.{d}f}"


def rows_of(paths: list[Path]) -> list[dict]:
    """Every case of the files (a case in several files: the last one), judged again."""
    by = {}
    for p in paths:
        for r in json.loads(Path(p).read_text())["cases"]:
            by[r["name"]] = r
    return [rejudge(r) for r in by.values()]


def table(rows: list[dict]) -> str:
    head = ("| case | test AUROC | reliance (points) | answer | strongest evidence [95 % CI] | "
            "IoU heatmap px / box / per image | regions on the shortcut |")
    out = [head, "|" + "---|" * 7]
    for r in rows:
        e = r["evidence"]
        loc = r.get("located") or {}
        ans = "yes, " + (r.get("grade") or "") if r["flagged"] else r["outcome"]
        rel = r["reliance"]["delta"]
        out.append(f"| {r['name']} | {_n(r['test_auroc'])} | {'—' if rel != rel else f'{100 * rel:+.0f}'} | "
                   f"{ans} | {e['kind']}:{e['name']} {_n(e['effect'])} [{_n(e['ci_low'])}, {_n(e['ci_high'])}] | "
                   f"{_n(loc.get('iou'))} / {_n(loc.get('iou_box'))} / {_n(loc.get('iou_image'))} | "
                   f"{_n(loc.get('on_shortcut'))} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    a = ap.parse_args(argv)
    rows = rows_of(a.files)
    print(table(rows))
    s = summarise(rows)
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
