"""The table of generator families (docs/generator-families.md): mean and spread over seeds of
``bench.generators`` results (issue #14).

    .venv/bin/python -m bench.generators_table bench/results/generators_*_s?.json

Groups the JSON files by (dataset, variant) and prints one markdown table per dataset: each
number is ``mean ± sd`` over the seeds (sample standard deviation; the seed count is in the
first column), with Grad-CAM's and IG's numbers on the same images as rows of their own. A
variant is the family, with the image side where it is not 64 px, the search's opt-in steps
(``+ complete``, ``(both signs)``, ``+ support``, ``+ restore``), the in-filler's windows
(``windows``), its step budget (``4000 steps``) and the amortised mask net that starts the
search (``amortised 300 steps (prune, trim)``, ``bench.generators --amortise``) where the run used
them. The last column is the speed-up over the published per-image inversion timed in the
same run.

    .venv/bin/python -m bench.generators_table bench/results/*_s?_128px_window_whole*.json
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
           ("pointing shuffled", "pointing_shuffled"), ("s / image", "explain_s_per_image"),
           ("mask Dice", "mask_dice"), ("flip rate", "flip_rate"), ("area", "area"),
           ("healthy control", "healthy_control"), ("x published", "speedup_vs_published")]
FINE = {"area", "healthy_control"}  # shares of pixels / images under a few %: three digits


def _ms(values: list[float], digits: int = 2) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "—"
    m = sum(v) / len(v)
    if len(v) == 1:
        return f"{m:.{digits}f}"
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _default_steps() -> int | None:
    from medxgan.config.inpaint import InpaintConfig

    return InpaintConfig.model_fields["steps"].default


DEFAULT_STEPS = _default_steps()

_SEARCH_KNOBS = ("patch_sizes", "stride", "crop", "max_patches", "start_areas")


def _search_defaults() -> dict:
    from medxgan.config.inpaint import SearchConfig

    return SearchConfig().model_dump(mode="json", include=set(_SEARCH_KNOBS))


_SEARCH_DEFAULTS = _search_defaults()


def _knob(v):
    """A knob's value as a row name shows it: sequences as ``a/b/c``."""
    return "/".join(f"{e:g}" for e in v) if isinstance(v, (list, tuple)) else v


def variant(r: dict) -> str:
    """The row name of a ``bench.generators`` result: its family, its side where not 64 px,
    the search's opt-in steps, its cost knobs (patch sides, stride, crop, patches tried) and
    its start where not the defaults, its trim where not ``exact`` (every result before
    session 15 trimmed so), the in-filler's training windows and its step budget
    where it is not the default (``InpaintConfig.steps``), the amortised mask net and what
    trims its mask."""
    name = [r["family"]]
    if r.get("size", 64) != 64:
        name.append(f"{r['size']} px")
    own = ((r.get("train") or {}).get("train_config") or {}).get("inpaint") or {}
    if own.get("train_crop", 1.0) < 1:
        name.append("windows")
    if own.get("steps") not in (None, DEFAULT_STEPS):  # an in-filler of another step budget
        name.append(f"{own['steps']} steps")
    am = r.get("amortise") or {}
    if am:  # bench.generators --amortise: the mask net starts the search
        steps = [k for k in ("prune", "trim") if am.get(k)]
        budget = f" {am['steps']} steps" if am.get("steps") else ""  # the net's training
        name.append("amortised" + budget + (f" ({', '.join(steps)})" if steps else ""))
    from medxgan.config.inpaint import SearchConfig

    search = r.get("search") or {}
    side = int(r.get("size", 64))
    if search.get("complete") == "auto":        # since session 16: on at 128 px and above
        search = {**search, "complete": SearchConfig().complete_at(side)}
    name += [f"+ {k}" for k in ("complete", "support", "restore") if search.get(k)]
    name += [f"{k} {_knob(search[k])}" for k in _SEARCH_KNOBS  # the search's cost knobs,
             if k in search and _knob(search[k]) != _knob(_SEARCH_DEFAULTS[k])]  # where moved
    if search.get("complete_both_signs"):
        name.append("(both signs)")
    trim = search.get("trim", "exact")        # how it trims (results before session 15: no
    if trim == "auto":                         # key, each removal in-filled alone)
        trim = SearchConfig(trim="auto").trim_at(side)
    if trim != "exact":
        name.append(f"{trim} trim")
    if search.get("start", "coarse") != "coarse":  # where the search starts (Grad-CAM)
        name.append(f"{search['start']} start")
        if search.get("start_prune"):
            name.append("(pruned)")
        if not search.get("start_trim", True):
            name.append("(untrimmed)")
        elif search.get("start_trim_above"):
            name.append(f"(trimmed above {search['start_trim_above']:g})")
    return " ".join(name)


def table(results: list[dict]) -> str:
    """Markdown tables (one per dataset) of ``bench.generators`` result dicts."""
    by: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by[r["dataset"]][variant(r)].append(r)
    out = []
    for ds in sorted(by):
        head = ["family (seeds, steps)"] + [c for c, _ in COLUMNS]
        out += [f"**{ds}**", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        base: dict[tuple, list[dict]] = defaultdict(list)
        for fam in sorted(by[ds], key=lambda f: (not f.startswith("inpaint"), f)):
            rs = by[ds][fam]
            steps = _ms([float(r["train"]["steps"]) for r in rs], 0)
            cells = [f"{fam} ({len(rs)}, {steps})"]
            cells += [_ms([r["result"].get(k) for r in rs], 3 if k in FINE else 2)
                      for _, k in COLUMNS]
            out.append("| " + " | ".join(cells) + " |")
            for r in rs:
                base[(r["seed"], r.get("size", 64))].append(r)
        seeds = {s: rs[0] for s, rs in base.items()}  # baselines: one per seed's (size's) images
        for name, mk, pk in (("Grad-CAM, same images", "gradcam_mass", "gradcam_pointing"),
                             ("IG, same images", "ig_mass", "ig_pointing")):
            rs = [r["result"] for r in seeds.values()]
            cells = [f"{name} ({len(rs)})"] + ["—"] * 5 + [_ms([r[mk] for r in rs]), "—",
                                                          _ms([r[pk] for r in rs])]
            cells += ["—"] * (len(head) - len(cells))
            out.append("| " + " | ".join(cells) + " |")
        def health(key: str) -> str:  # a property of the seed's images, f and in-filler:
            return _ms([next((r["test_health"][key] for r in rs  # any run that measured it
                              if r["test_health"].get(key) is not None), None)
                        for rs in base.values()])

        skipped = [r.get("n_called_negative_skipped") for rs in by[ds].values() for r in rs]
        n_test = "/".join(sorted({str(r.get("n_test", 100)) for r in seeds.values()}))
        out += ["", f"Oracle flip on the true twins (its ceiling): "
                f"{health('oracle_flip_true_twins')}; test positives f called negative, "
                f"skipped before the {n_test}: {_ms(skipped, 0)}."]
        if any("oracle_flip_true_support" in r["test_health"] for rs in base.values()
               for r in rs):
            out += [f"f's flip rate on the true twins: {health('flip_rate_true_twins')}. "
                    f"In-filling the true lesion support (a perfect mask): f's flip rate "
                    f"{health('flip_rate_true_support')}, oracle flip "
                    f"{health('oracle_flip_true_support')}; mask Dice of that support grown "
                    f"by one pixel {health('mask_dice_support_1px')}."]
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="bench.generators JSON results")
    args = ap.parse_args()
    print(table([json.loads(p.read_text()) for p in args.files]))


if __name__ == "__main__":
    main()
