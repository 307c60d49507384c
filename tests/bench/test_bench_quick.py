"""Every benchmark runs in --quick mode: the last line has the right keys with finite numbers
and the JSON lands at --out. Numbers are not asserted (STYLE.md: tests never assert on time).

bench/explain_speed.py is left out: its --quick mode takes over 60 s on 2 CPU cores, too slow
for the suite (run it by hand).
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


def _run(script: str, out: Path, *extra: str, timeout: int = 240) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--out",
                        str(out), *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.exists(), f"{script} wrote no JSON at --out"
    json.loads(out.read_text())
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    return lines[-1]


def _keys(line: str) -> dict[str, float]:
    pairs = dict(kv.split("=", 1) for kv in line.split())
    return {k: float(v) for k, v in pairs.items()}


@pytest.mark.parametrize("script, keys, extra", [
    ("scale.py", ["time_ratio_16k_1k", "rss_ratio_16k_1k"], ()),
    ("dask_scale.py", ["dask_speedup_2w"], ("--n", "16", "--shard-size", "8")),
    ("quality.py", ["medxgan_pointing", "gradcam_pointing", "ig_pointing", "random_pointing",
                    "medxgan_mass", "gradcam_mass", "ig_mass"], ("--variants", "clean")),
    ("metrics_speed.py", ["speedup", "max_abs_diff"], ()),
    ("gan_step.py", ["gan_step_speedup"], ()),
    ("encoder.py", ["encoder_mse_ratio"], ()),
])
def test_quick_last_line(tmp_path: Path, script: str, keys: list[str], extra: tuple) -> None:
    got = _keys(_run(script, tmp_path / "out.json", *extra))
    assert list(got) == keys
    assert all(math.isfinite(v) for v in got.values()), got


def test_ingest_speed_quick(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    last = json.loads(_run("ingest_speed.py", out))  # its last line is the JSON record
    assert last["bench"] == "ingest_speed"
    assert math.isfinite(last["process_images_per_s"]) and last["process_images_per_s"] > 0
