"""Every benchmark runs in --quick mode as ``python -m bench.<name>`` from the repository
root: the last line has the right keys with finite numbers and the JSON lands at --out.
Numbers are not asserted (STYLE.md: tests never assert on time).

bench.explain_speed and bench.train_gan are left out: their --quick modes take over 60 s on
2 CPU cores, too slow for the suite (``make bench-quick`` runs them).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(bench: str, out: Path, *extra: str, timeout: int = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the package from cwd
    env["OMP_NUM_THREADS"] = "1"
    p = subprocess.run([sys.executable, "-m", f"bench.{bench}", "--quick", "--out", str(out),
                        *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.exists(), f"bench.{bench} wrote no JSON at --out"
    json.loads(out.read_text())
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    return lines[-1]


def _keys(line: str) -> dict[str, float]:
    pairs = dict(kv.split("=", 1) for kv in line.split())
    return {k: float(v) for k, v in pairs.items()}


@pytest.mark.parametrize("bench, keys, extra", [
    ("scale", ["time_ratio_16k_1k", "rss_ratio_16k_1k"], ()),
    ("dask_scale", ["dask_speedup_2w"], ("--n", "16", "--shard-size", "8")),
    ("quality", ["medxgan_pointing", "gradcam_pointing", "ig_pointing", "random_pointing",
                 "medxgan_mass", "gradcam_mass", "ig_mass"], ("--variants", "clean")),
    ("metrics_speed", ["speedup", "max_abs_diff"], ()),
    ("gan_step", ["gan_step_speedup"], ()),
    ("encoder", ["encoder_mse_ratio"], ()),
    ("deployed_speed", ["check_images_per_s", "gradcam_images_per_s", "ig_images_per_s"],
     ("--work", "/tmp/medxgan-test-deployed")),
    ("cpu_speed", ["explain_speedup", "train_speedup", "classify_speedup", "masks_equal",
                   "baselines_speedup", "score_speedup", "maps_max_rel_diff",
                   "classifier_train_speedup"],
     ("--reps", "1")),
])
def test_quick_last_line(tmp_path: Path, bench: str, keys: list[str], extra: tuple) -> None:
    got = _keys(_run(bench, tmp_path / "out.json", *extra))
    assert list(got) == keys
    assert all(math.isfinite(v) for v in got.values()), got


@pytest.mark.parametrize("family", ["inpaint", "residual"])
def test_generators_quick(tmp_path: Path, family: str) -> None:
    """bench.generators --quick (an image-conditioned family, 32 px): the family's name first,
    then every number key; the health numbers a weak quick classifier can leave undefined (it
    calls every test positive negative: no change; no negative; no oracle positive) may be
    NaN, the scores may not."""
    line = _run("generators", tmp_path / "out.json", "--family", family)
    pairs = dict(kv.split("=", 1) for kv in line.split())
    assert pairs.pop("family") == family
    got = {k: float(v) for k, v in pairs.items()}
    assert list(got) == ["change_similarity", "universal_flip", "oracle_flip",
                         "counterfactual_ncc", "counterfactual_ncc_shuffled", "mass_own",
                         "mass_shuffled", "pointing_own", "pointing_shuffled", "gradcam_mass",
                         "ig_mass", "gradcam_pointing", "ig_pointing", "recon_mse",
                         "explain_s_per_image", "size", "mask_dice", "healthy_control",
                         "speedup_vs_published", "flip_rate", "area"]
    maybe_nan = {"change_similarity", "universal_flip", "oracle_flip", "counterfactual_ncc",
                 "counterfactual_ncc_shuffled", "mask_dice", "healthy_control", "flip_rate"}
    assert all(math.isfinite(v) for k, v in got.items() if k not in maybe_nan), got
    assert got["recon_mse"] == 0.0  # both families keep x: x_pos = x
    assert got["size"] == 32 and got["speedup_vs_published"] > 0 and 0 <= got["area"] <= 1
    # the inpaint family has a healthy in-filler to control, the residual family none
    assert math.isnan(got["healthy_control"]) == (family == "residual")
    # where Dice is lost: its halves and the recall on the visible lesion, shares in [0, 1]
    health = json.loads((tmp_path / "out.json").read_text())["test_health"]
    for k in ("mask_precision", "mask_recall", "mask_recall_visible", "support_faint_share"):
        assert math.isnan(health[k]) or 0 <= health[k] <= 1, (k, health[k])
    assert 0 <= health["support_faint_share"] < 1  # a phantom's lesions have visible pixels


def test_generators_quick_amortised(tmp_path: Path) -> None:
    """bench.generators --amortise: a mask net distilled onto the in-filler (its stats in the
    JSON's train section, kept in the run's folder), the share of test images it flipped in
    the health, the same last-line keys."""
    work = tmp_path / "work"
    line = _run("generators", tmp_path / "out.json", "--work", str(work), "--amortise",
                "{images: 40, steps: 3, seconds: null, base: 4, depth: 2}")
    assert line.split()[0] == "family=inpaint"
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["train"]["amortise"]["steps"] == 3 and out["amortise"]["images"] == 40
    assert 0 <= out["test_health"]["amortised_share"] <= 1
    assert len(list(work.rglob("mask-net-*.pt"))) == 1


def test_generators_quick_gradcam_start(tmp_path: Path) -> None:
    """bench.generators --search '{start: gradcam}': the run's search config names the start,
    the health the share of test images a Grad-CAM cut started, the same last-line keys."""
    line = _run("generators", tmp_path / "out.json", "--search", "{start: gradcam}")
    assert line.split()[0] == "family=inpaint"
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["search"]["start"] == "gradcam"
    assert 0 <= out["test_health"]["started_share"] <= 1


def test_generators_reuses_an_infiller_trained_under_other_search_defaults(tmp_path: Path) -> None:
    """The search does not change what the in-filler learns: a cached in-filler whose stored
    search config differs from today's defaults (an older release; here its ``trim`` field
    removed from the manifest) is reused, with and without ``--search``, not deleted and
    retrained (session 15: ``--search '{}'`` did)."""
    work = tmp_path / "work"
    _run("generators", tmp_path / "a.json", "--work", str(work))
    manifest = next(work.rglob("gen-inpaint-*/manifest.json"))
    kept = json.loads(manifest.read_text())
    del kept["train_config"]["inpaint"]["search"]["trim"]              # an older release's
    manifest.write_text(json.dumps(kept))
    for extra in ((), ("--search", "{}")):
        _run("generators", tmp_path / "b.json", "--work", str(work), *extra)
        out = json.loads((tmp_path / "b.json").read_text())
        assert out["reused_generator"] is True, extra
        assert out["search"]["trim"] == "auto"                        # today's defaults
    assert json.loads(manifest.read_text()) == kept                    # untouched


def test_ingest_speed_quick(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    last = json.loads(_run("ingest_speed", out))  # its last line is the JSON record
    assert last["bench"] == "ingest_speed"
    assert math.isfinite(last["process_images_per_s"]) and last["process_images_per_s"] > 0


def test_bench_is_a_package_without_path_edits() -> None:
    """bench/ runs as ``python -m bench.<name>``: no module edits ``sys.path``."""
    for f in sorted((ROOT / "bench").glob("*.py")):
        text = f.read_text()
        assert "sys.path" not in text, f.name
        assert "from _common" not in text and "import _common" not in text, f.name
    assert (ROOT / "bench" / "__init__.py").exists()


def test_shortcuts_quick(tmp_path: Path) -> None:
    """bench.shortcuts --quick: a tag classifier (32 px) and a clean one through the product's
    training, search and rule; the tag classifier relies on its tag and is flagged."""
    line = _run("shortcuts", tmp_path / "out.json", "--cache", str(tmp_path / "cache"), timeout=400)
    pairs = dict(kv.split("=", 1) for kv in line.split())
    assert list(pairs)[:3] == ["n_shortcut", "n_not_relying", "sensitivity"]
    assert "false_alarm" in pairs and "located_iou_ok" in pairs
    assert int(pairs["n_shortcut"]) == 1 and float(pairs["sensitivity"]) == 1.0
    cases = json.loads((tmp_path / "out.json").read_text())["cases"]
    assert [c["name"] for c in cases] == ["cxr-tag-r0.9-l0.5-s0", "cxr-none-r0-l1-s0"]
    assert set(cases[0]["infill"]) == {"blur", "noisy_linear", "inpaint"}



def test_generators_classifier_floor(tmp_path: Path) -> None:
    """bench.generators' f and oracle: trained again with 2x, then 4x the epochs while the
    validation AUROC is below the floor (an unreachable floor: all three tries, the last kept),
    each try kept in its own folder and reused by a later call; no floor: the first try."""
    import torch

    from bench._common import phantom_cohort
    from bench.generators import _classifier
    from medxgan.storage import Store

    torch.set_num_threads(1)
    cohort = str(tmp_path / "cohort")
    phantom_cohort(cohort, "phantom-cxr", 96, size=32, seed=0)
    url = str(tmp_path / "clf")
    _, m = _classifier(cohort, url, "small_cnn", 1, 0, "cpu", floor=1.01)
    assert m["epochs"] == 4
    assert [Store(u).read_json("metrics.json")["config"]["epochs"]
            for u in (url, f"{url}-e2", f"{url}-e4")] == [1, 2, 4]
    spec = Path(f"{url}-e4/spec.yaml")
    before = spec.stat().st_mtime_ns
    f, again = _classifier(cohort, url, "small_cnn", 1, 0, "cpu", floor=1.01)
    assert spec.stat().st_mtime_ns == before and again["test"] == m["test"]  # reused
    assert f(torch.zeros(2, 1, 32, 32)).shape == (2,)  # one logit per image
    assert _classifier(cohort, url, "small_cnn", 1, 0, "cpu", floor=0.0)[1]["epochs"] == 1
