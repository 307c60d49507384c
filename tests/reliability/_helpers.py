"""Helpers of the reliability tests: audit subprocesses, polling, reading scores, scanning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from medxgan.storage import Store

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

_SCRIPT = """
import json, sys
from flows.audit import audit_flow
cfg = json.load(open(sys.argv[1]))
m = audit_flow(cfg)
print("AUDIT-DONE", m["run_id"])
"""


def start_audit(cfg: dict, tmp: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``audit_flow(cfg)`` in a fresh Python process that talks to the API of the
    running Prefect test harness (so it starts no server of its own)."""
    from prefect.settings import PREFECT_API_URL

    (tmp / "cfg.json").write_text(json.dumps(cfg))
    (tmp / "run_audit.py").write_text(_SCRIPT)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": str(REPO),
           # the same intra-op thread count as the test process (tests/conftest.py), so the
           # killed run and the in-process rerun compute bit-for-bit the same
           "OMP_NUM_THREADS": "1", **(extra_env or {})}
    log = open(tmp / "audit.log", "wb")
    return subprocess.Popen([PYTHON, str(tmp / "run_audit.py"), str(tmp / "cfg.json")],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(pred: Callable[[], bool], proc: subprocess.Popen, timeout: float = 240,
             every: float = 0.02) -> None:
    """Poll ``pred`` until true; fail if the process exits first or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"audit process exited (rc {proc.returncode}) before the "
                                 "awaited state was reached")
        time.sleep(every)
    raise AssertionError("timed out waiting for the audit process")


def sigkill(proc: subprocess.Popen) -> None:
    """SIGKILL the process (and its process group: it was started in its own session)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def scores(run_url: str) -> pd.DataFrame:
    """``scores.parquet`` of a run, sorted by (image_id, method, metric), fresh index."""
    df = Store(run_url).read_parquet("scores.parquet").to_pandas()
    return df.sort_values(["image_id", "method", "metric"]).reset_index(drop=True)


def store_text(store: Store) -> dict[str, str]:
    """Every object of ``store`` as text: Parquet tables decoded to their rows (values of every
    column, binary columns as latin-1), JSON/HTML/YAML/CSV/logs as UTF-8, other bytes latin-1
    (PNG pixels, torch files). Keyed by object key."""
    import io

    import pyarrow.parquet as pq

    out = {}
    for key in store.list(""):
        blob = store.read_bytes(key)
        parts = [key]
        if key.endswith(".parquet"):
            t = pq.read_table(io.BytesIO(blob))
            for row in t.to_pylist():
                parts.append(" ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                                      for v in row.values()))
        parts.append(blob.decode("latin-1"))
        out[key] = "\n".join(parts)
    return out
