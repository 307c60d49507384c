"""bench.generators_table: mean ± sample sd over seeds, one table per dataset."""

from __future__ import annotations

from bench.generators import KEYS
from bench.generators_table import table


def _result(family: str, seed: int, v: float) -> dict:
    return {"family": family, "dataset": "phantom-cxr", "seed": seed,
            "train": {"steps": 100 * (seed + 1)}, "n_called_negative_skipped": seed,
            "test_health": {"oracle_flip_true_twins": 0.5},
            "result": {k: v for k in KEYS}}


def test_mean_and_sample_sd_per_family():
    md = table([_result("inpaint", 0, 0.2), _result("inpaint", 1, 0.4),
                _result("published", 0, 0.9)])
    lines = md.splitlines()
    inp = next(ln for ln in lines if ln.startswith("| inpaint"))
    assert inp.startswith("| inpaint (2, 150 ± 71) | 0.30 ± 0.14 |")
    pub = next(ln for ln in lines if ln.startswith("| published"))
    assert pub.startswith("| published (1, 100) | 0.90 |")
    ig = next(ln for ln in lines if ln.startswith("| IG, same images"))
    assert ig.split(" | ")[6] == "0.30 ± 0.14"        # mass column: seeds 0 and 1
    assert "**phantom-cxr**" in md and "skipped before the 100: 0 ± 1" in md


def test_variants_are_rows_of_their_own():
    """Runs of one family that differ in size, the search's opt-in steps or the in-filler's
    windows are separate rows, not averaged together; a run that has the in-filler's ceilings
    prints them."""
    plain = _result("inpaint", 0, 0.2)
    done = {**_result("inpaint", 0, 0.6), "size": 128, "search": {"complete": True},
            "train": {"steps": 100, "train_config": {"inpaint": {"train_crop": 0.5}}}}
    done["test_health"] = {"oracle_flip_true_twins": 0.5, "flip_rate_true_support": 0.9,
                           "oracle_flip_true_support": 0.7, "mask_dice_support_1px": 0.8}
    lines = table([plain, done]).splitlines()
    assert next(ln for ln in lines if ln.startswith("| inpaint (")).startswith(
        "| inpaint (1, 100) | 0.20 |")
    assert next(ln for ln in lines if ln.startswith("| inpaint 128")).startswith(
        "| inpaint 128 px windows + complete (1, 100) | 0.60 |")
    assert any("oracle flip 0.70" in ln and "one pixel 0.80" in ln for ln in lines)


def test_an_infiller_of_another_step_budget_is_a_row_of_its_own():
    """Two in-fillers that differ only in their configured step budget are two rows; the
    default budget adds nothing to the name."""
    def run(steps: int, v: float) -> dict:
        return {**_result("inpaint", 0, v), "size": 128,
                "train": {"steps": steps, "train_config": {"inpaint": {"steps": steps}}}}

    lines = table([run(2000, 0.2), run(4000, 0.6)]).splitlines()
    assert next(ln for ln in lines if ln.startswith("| inpaint 128 px (")).startswith(
        "| inpaint 128 px (1, 2000) | 0.20 |")
    assert next(ln for ln in lines if ln.startswith("| inpaint 128 px 4000")).startswith(
        "| inpaint 128 px 4000 steps (1, 4000) | 0.60 |")


def test_the_restore_step_names_its_row():
    """A run with the search's step 7 (``restore``) or with completion on both signs is a row of
    its own, named after it."""
    lines = table([_result("inpaint", 0, 0.2),
                   {**_result("inpaint", 0, 0.6), "search": {"complete": True, "restore": True}}]
                  ).splitlines()
    assert next(ln for ln in lines if ln.startswith("| inpaint + complete + restore")).startswith(
        "| inpaint + complete + restore (1, 100) | 0.60 |")
    both = table([{**_result("inpaint", 0, 0.4),
                   "search": {"complete": True, "complete_both_signs": True}}]).splitlines()
    assert any(ln.startswith("| inpaint + complete (both signs) (1, 100) | 0.40 |") for ln in both)


def test_an_amortised_start_names_its_row():
    """A run whose search starts from the amortised mask net (bench.generators --amortise) is a
    row of its own, named with what trims the net's mask; the last column is the speed-up
    over the published inversion."""
    run = {**_result("inpaint", 0, 0.6), "search": {"complete": True},
           "amortise": {"images": 160, "prune": False, "trim": True}}
    lines = table([_result("inpaint", 0, 0.2), run]).splitlines()
    row = next(ln for ln in lines if ln.startswith("| inpaint amortised"))
    assert row.startswith("| inpaint amortised (trim) + complete (1, 100) | 0.60 |")
    assert row.endswith("| 0.60 |") and lines[2].endswith("| x published |")
    bare = table([{**run, "amortise": {"images": 160}}]).splitlines()
    assert any(ln.startswith("| inpaint amortised + complete (1, 100)") for ln in bare)
    nets = table([{**run, "amortise": {"steps": 300, "trim": True}},
                  {**run, "amortise": {"steps": 900, "trim": True}}]).splitlines()
    assert any(ln.startswith("| inpaint amortised 300 steps (trim) + complete (1, 100)")
               for ln in nets)
    assert any(ln.startswith("| inpaint amortised 900 steps (trim) + complete (1, 100)")
               for ln in nets)


def test_the_search_s_start_and_cost_knobs_name_their_rows():
    """A Grad-CAM start (trimmed or not) and a moved cost knob (crop, stride) are rows of their
    own; a knob left at its default names nothing."""
    base = _result("inpaint", 0, 0.6)
    runs = [{**base, "search": {"complete": True, "start": "gradcam", "start_trim": True}},
            {**base, "search": {"complete": True, "start": "gradcam", "start_trim": False}},
            {**base, "search": {"complete": True, "start": "coarse", "crop": 32, "stride": None}},
            {**base, "search": {"complete": True, "crop": 48}},
            {**base, "search": {"complete": True, "start": "gradcam", "start_trim_above": 0.03}}]
    lines = table(runs).splitlines()
    for name in ("inpaint + complete gradcam start (1, 100)",
                 "inpaint + complete gradcam start (untrimmed) (1, 100)",
                 "inpaint + complete crop 32 (1, 100)", "inpaint + complete (1, 100)",
                 "inpaint + complete gradcam start (trimmed above 0.03) (1, 100)"):
        assert any(ln.startswith(f"| {name} |") for ln in lines), (name, lines)


def test_the_trim_names_its_row():
    """A run trimmed with a ranking (``trim: bisect`` or ``ranked``) is a row of its own; a
    result with no ``trim`` key (before session 15), ``trim: exact`` or ``trim: auto`` at 64 px
    (exact there) is not renamed; ``auto`` at 128 px is named ``ranked``."""
    rows = [_result("inpaint", 0, 0.2),
            {**_result("inpaint", 0, 0.3), "search": {"trim": "exact"}},
            {**_result("inpaint", 0, 0.6), "search": {"trim": "bisect", "start": "gradcam"}},
            {**_result("inpaint", 0, 0.4), "search": {"trim": "auto"}},       # exact at 64 px
            {**_result("inpaint", 0, 0.8), "size": 128, "search": {"trim": "auto"}}]
    lines = table(rows).splitlines()
    assert next(ln for ln in lines if ln.startswith("| inpaint 128 px")).startswith(
        "| inpaint 128 px ranked trim (1, 100) | 0.80 |")
    assert next(ln for ln in lines if ln.startswith("| inpaint (")).startswith(
        "| inpaint (3, 100 ± 0) | 0.30 ± 0.10 |")
    assert next(ln for ln in lines if ln.startswith("| inpaint bisect")).startswith(
        "| inpaint bisect trim gradcam start (1, 100) | 0.60 |")


def test_complete_auto_names_its_row_by_size():
    """``complete: auto`` (the default since session 16) is on at 128 px and above: a 128 px
    default run is named ``+ complete``, a 64 px one is not, and a result with ``complete:
    false`` at 128 px (an explicit setting, or a run before session 16) is not either."""
    rows = [{**_result("inpaint", 0, 0.4), "search": {"complete": "auto"}},
            {**_result("inpaint", 0, 0.8), "size": 128,
             "search": {"complete": "auto", "trim": "auto"}},
            {**_result("inpaint", 0, 0.7), "size": 128,
             "search": {"complete": False, "trim": "auto"}}]
    lines = [ln for ln in table(rows).splitlines() if ln.startswith("| inpaint")]
    assert any(ln.startswith("| inpaint 128 px + complete ranked trim (1, 100) | 0.80 |")
               for ln in lines), lines
    assert any(ln.startswith("| inpaint 128 px ranked trim (1, 100) | 0.70 |") for ln in lines)
    assert any(ln.startswith("| inpaint (1, 100) | 0.40 |") for ln in lines), lines
