"""A scheduled audit on the local stack (``infra/stack.sh up``: rclone S3, a standing Prefect
server, a process work pool and worker, ``prefect.yaml`` deployed) with a failing acceptance
criterion: the deployment's run on the worker emits ``medxgan.audit.criteria-failed`` and
creates the two artifacts; ``medxgan audit`` against the same server exits 3.

Opt-in (``MEDXGAN_STACK_TEST=1``): it starts real servers and two audit processes, a few
minutes on 2 shared cores, over the 120 s budget of a flow test. ``tests/flows/test_alerts.py``
checks the same events, artifacts and exit codes under Prefect's test harness.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from flows.audit import CRITERIA_FAILED_EVENT, artifact_key
from flows.cli import EXIT_CRITERIA_FAILED
from tests.flows._configs import tiny

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("MEDXGAN_STACK_TEST") != "1",
                       reason="starts infra/stack.sh (S3, Prefect server, worker): "
                              "set MEDXGAN_STACK_TEST=1"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(api: str, path: str, body: dict) -> list:
    import httpx

    r = httpx.post(f"{api}{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _wait(pred, timeout: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_scheduled_run_with_a_failing_criterion(tmp_path):
    import httpx

    s3_port, api_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(S3_PORT=str(s3_port), PREFECT_PORT=str(api_port),
               PREFECT_HOME=str(tmp_path / "prefect"), OMP_NUM_THREADS="1")
    api = f"http://127.0.0.1:{api_port}/api"
    t0 = time.monotonic()
    up = subprocess.run([str(ROOT / "infra" / "stack.sh"), "up"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        print(f"stack up in {time.monotonic() - t0:.0f} s")
        s3env = dict(re.findall(r"(MEDXGAN_S3_\w+)=(\S+)", up.stdout))
        name = f"stack-{uuid.uuid4().hex[:6]}"
        cfg = tiny(f"s3://medxgan/{name}", name=name,
                   explain={"methods": ["gradcam", "random", "box_prior"], "max_images": 8,
                            "shard_size": 4},
                   score={"n_boot": 50, "shortcut_images": 24})
        cfg["criteria"] = [{"name": "impossible drop", "evidence": "intervention",
                            "metric": "ablation_drop", "comparison": ">=", "threshold": 2.0}]
        path = tmp_path / "audit.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run_env = {**env, **s3env, "PREFECT_API_URL": api}

        # 1) the deployment the schedule runs, on the worker
        out = subprocess.run([str(BIN / "prefect"), "deployment", "run", "audit/audit-nightly",
                              "--param", f"config={path}"], cwd=ROOT, env=run_env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        flow_run = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)

        def state():
            r = httpx.get(f"{api}/flow_runs/{flow_run}", timeout=30).json()
            t = r["state"]["type"]
            assert t not in ("FAILED", "CRASHED", "CANCELLED"), r["state"]
            return t == "COMPLETED"
        _wait(state, 600, "the deployment's flow run")

        # 2) the command line against the same server: exit code 3
        cli = subprocess.run([str(BIN / "medxgan"), "audit", "--config", str(path)], cwd=ROOT,
                             env=run_env, capture_output=True, text=True, timeout=600)
        assert cli.returncode == EXIT_CRITERIA_FAILED, cli.stdout + cli.stderr

        flt = {"filter": {"event": {"name": [CRITERIA_FAILED_EVENT]},
                          "resource": {"id": [f"medxgan.audit.{name}"]}}, "limit": 50}
        events = _wait(lambda: (lambda e: e if len(e) >= 2 else None)(
            _post(api, "/events/filter", flt)["events"]), 60, "two criteria-failed events")
        related = {r["prefect.resource.id"] for e in events for r in e["related"]}
        assert f"prefect.flow-run.{flow_run}" in related  # one came from the worker's run
        assert events[0]["payload"]["failing"][0]["name"] == "impossible drop"
        keys = [artifact_key(name, "verdict"), artifact_key(name, "metrics")]
        arts = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": keys}}})
        assert {a["type"] for a in arts} >= {"markdown", "table"}
        print(f"stack test done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        state = ROOT / ".local-stack"
        pids = [int(p.read_text()) for p in (state / "worker.pid", state / "server.pid")
                if p.exists()]
        subprocess.run([str(ROOT / "infra" / "stack.sh"), "down"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
        _reap(pids)


def _reap(pids: list[int], grace: float = 10.0) -> None:
    """SIGKILL what ``stack.sh down`` started and its SIGTERM left alive (a Prefect worker
    answers the first SIGTERM with a graceful shutdown that can hang)."""
    t0 = time.monotonic()
    alive = list(pids)
    while alive and time.monotonic() - t0 < grace:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.5)
    for p in alive:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
