"""The table of generator families (docs/generator-families.md): mean and spread over seeds of
``bench.generators`` results (issue #14).

    .venv/bin/python -m bench.generators_table bench/results/generators_*_s?.json

Groups the JSON files by (dataset, family) and prints one markdown table per dataset: each
number is ``mean ± sd`` over the seeds (sample standard deviation; the seed count is in the
first column), with Grad-CAM's and IG's numbers on the same images as rows of their own.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

COLUMNS = [("change similarity", "change_similarity"), ("universal flip", "universal_flip"),
           ("oracle flip", "oracle_flip"), ("NCC own", "counterfactual_ncc"),
           ("NCC shuffled", "counterfactual_ncc_shuffled"), ("mass own", "mass_own"),
           ("mass shuffled", "mass_shuffled"), ("pointing own", "pointing_own"),
           ("pointing shuffled", "pointing_shuffled"), ("s / image", "explain_s_per_image")]


def _ms(values: list[float], digits: int = 2) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "—"
    m = sum(v) / len(v)
    if len(v) == 1:
        return f"{m:.{digits}f}"
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def table(results: list[dict]) -> str:
    """Markdown tables (one per dataset) of ``bench.generators`` result dicts."""
    by: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by[r["dataset"]][r["family"]].append(r)
    out = []
    for ds in sorted(by):
        head = ["family (seeds, steps)"] + [c for c, _ in COLUMNS]
        out += [f"**{ds}**", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        base: dict[str, list[dict]] = defaultdict(list)
        for fam in sorted(by[ds], key=lambda f: (f != "inpaint", f)):
            rs = by[ds][fam]
            steps = _ms([float(r["train"]["steps"]) for r in rs], 0)
            cells = [f"{fam} ({len(rs)}, {steps})"]
            cells += [_ms([r["result"][k] for r in rs]) for _, k in COLUMNS]
            out.append("| " + " | ".join(cells) + " |")
            for r in rs:
                base[r["seed"]].append(r)
        seeds = {s: rs[0] for s, rs in base.items()}  # baselines: one row per seed's images
        for name, mk, pk in (("Grad-CAM, same images", "gradcam_mass", "gradcam_pointing"),
                             ("IG, same images", "ig_mass", "ig_pointing")):
            rs = [r["result"] for r in seeds.values()]
            cells = [f"{name} ({len(rs)})"] + ["—"] * 5 + [_ms([r[mk] for r in rs]), "—",
                                                          _ms([r[pk] for r in rs]), "—", "—"]
            out.append("| " + " | ".join(cells) + " |")
        twins = [r["test_health"].get("oracle_flip_true_twins") for rs in by[ds].values()
                 for r in rs]
        skipped = [r.get("n_called_negative_skipped") for rs in by[ds].values() for r in rs]
        out += ["", f"Oracle flip on the true twins (its ceiling): {_ms(twins)}; test "
                f"positives f called negative, skipped before the 100: {_ms(skipped, 0)}.", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="bench.generators JSON results")
    args = ap.parse_args()
    print(table([json.loads(p.read_text()) for p in args.files]))


if __name__ == "__main__":
    main()
