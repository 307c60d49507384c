"""``medxgan`` command line: each subcommand runs the matching Prefect flow.

Errors print one line (``medxgan: error: ...``) and exit non-zero; ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
_HANDLERS: dict[str, Handler] = {}


def _cmd_ingest(a: argparse.Namespace) -> int:
    from flows.ingest import ingest_flow

    m = ingest_flow(source=a.source, out=a.out, input=a.input, size=a.size, n=a.n, seed=a.seed,
                    prevalence=a.prevalence, shortcut_rate=a.shortcut_rate, finding=a.finding,
                    chunk_size=a.chunk_size)
    c = m["counts"]
    print(f"cohort {a.out}: {c['images']} images ({c['positives']} positive, {c['negatives']} "
          f"negative), {c['boxes']} boxes, {c['quarantined']} quarantined")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medxgan", description="Audit binary medical image classifiers "
                                 "with medXGAN and baseline explanations.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest a cohort (phantom, RSNA, NIH or folder) into the store")
    p.add_argument("--source", required=True,
                   choices=["phantom-cxr", "phantom-brain", "rsna", "nih", "folder"])
    p.add_argument("--input", help="input root (rsna, nih) or CSV / COCO JSON file (folder)")
    p.add_argument("--out", required=True, help="cohort URL: a path or s3://bucket/prefix")
    p.add_argument("--size", type=int, default=64, help="square side of stored images (px)")
    p.add_argument("--n", type=int, default=1000, help="phantom: number of images")
    p.add_argument("--seed", type=int, default=0, help="phantom: seed")
    p.add_argument("--prevalence", type=float, default=0.5, help="phantom: share of positives")
    p.add_argument("--shortcut-rate", type=float, default=0.0,
                   help="phantom: share of positives carrying the shortcut tag")
    p.add_argument("--finding", help="nih/folder: the finding that makes an image positive")
    p.add_argument("--chunk-size", type=int, default=256, help="images per part / task")
    p.set_defaults(handler=_cmd_ingest)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("medxgan: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        if args.debug:
            traceback.print_exc()
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"medxgan: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
