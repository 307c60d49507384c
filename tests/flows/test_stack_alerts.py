"""A scheduled audit on the local stack (``infra/stack.sh up``: rclone S3, a standing Prefect
server, a process work pool and a worker started in *another* working directory,
``prefect.yaml`` deployed with its pull step) with a failing acceptance criterion: the
deployment's run on the worker finds the code through the pull step, is named after the audit
and its date, has the library's and the progress lines in its logs, emits
``medxgan.audit.criteria-failed`` and creates the verdict, metrics and report-link artifacts;
``medxgan audit`` against the same server exits 3 with a quiet terminal and its run's logs on
the server; a run of ``explain-cohort`` whose classifier sits on a store that never answers
fails on the worker with the one-line timeout message.

Opt-in (``MEDXGAN_STACK_TEST=1``): it starts real servers and several flow-run processes, a
few minutes on 2 shared cores, over the 120 s budget of a flow test.
``tests/flows/test_alerts.py`` and ``tests/flows/test_deployment.py`` check the same under
Prefect's test harness.
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


def _logs(api: str, run_id: str) -> dict[str, list[str]]:
    """{logger name: messages} of a flow run and its subflows."""
    children = _post(api, "/flow_runs/filter",
                     {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}})
    ids = [run_id, *[c["id"] for c in children]]
    out: dict[str, list[str]] = {}
    for rec in _post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": ids}},
                                           "limit": 200}):
        out.setdefault(rec["name"], []).append(rec["message"])
    return out


def _library_lines(logs: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    stage = [m for m in logs.get("medxgan.flows", []) if "under its lease" in m]
    progress = [m for m in logs.get("medxgan.progress", []) if m.startswith("[explain")]
    return stage, progress


def _final_state(api: str, flow_run: str, timeout: float) -> dict:
    import httpx

    def done():
        st = httpx.get(f"{api}/flow_runs/{flow_run}", timeout=30).json()["state"]
        return st if st["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None
    return _wait(done, timeout, f"flow run {flow_run}")


def test_scheduled_run_with_a_failing_criterion(tmp_path):
    import httpx

    s3_port, api_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(S3_PORT=str(s3_port), PREFECT_PORT=str(api_port),
               PREFECT_HOME=str(tmp_path / "prefect"), OMP_NUM_THREADS="1",
               WORKER_DIR=str(tmp_path / "worker"))  # not the checkout: the pull step finds it
    api = f"http://127.0.0.1:{api_port}/api"
    t0 = time.monotonic()
    blackhole = socket.socket()  # an S3 endpoint that accepts and never answers
    try:
        up = subprocess.run([str(ROOT / "infra" / "stack.sh"), "up"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=400)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        print(f"stack up in {time.monotonic() - t0:.0f} s")
        s3env = dict(re.findall(r"(MEDXGAN_S3_\w+)=(\S+)", up.stdout))
        run_env = {**env, **s3env, "PREFECT_API_URL": api}

        # 0) the deployment as recorded: the pull step's placeholder, no path of this machine
        dep = httpx.get(f"{api}/deployments/name/audit/audit-nightly", timeout=30).json()
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                      {"directory": "{{ $MEDXGAN_CODE_DIR }}"}}]
        assert str(ROOT) not in str(dep["pull_steps"]) and str(ROOT) not in str(dep["path"])
        assert dep["job_variables"]["env"]["MEDXGAN_STORE"] == "s3://medxgan/store"

        name = f"stack-{uuid.uuid4().hex[:6]}"
        cfg = tiny(f"s3://medxgan/{name}", name=name,
                   explain={"methods": ["gradcam", "random", "box_prior"], "max_images": 8,
                            "shard_size": 4},
                   score={"n_boot": 50, "shortcut_images": 24})
        cfg["criteria"] = [{"name": "impossible drop", "evidence": "intervention",
                            "metric": "ablation_drop", "comparison": ">=", "threshold": 2.0}]
        path = tmp_path / "audit.yaml"
        path.write_text(yaml.safe_dump(cfg))

        # 1) the deployment the schedule runs, on the worker
        out = subprocess.run([str(BIN / "prefect"), "deployment", "run", "audit/audit-nightly",
                              "--param", f"config={path}"], cwd=tmp_path, env=run_env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        flow_run = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
        st = _final_state(api, flow_run, 600)
        assert st["type"] == "COMPLETED", st
        run = httpx.get(f"{api}/flow_runs/{flow_run}", timeout=30).json()
        assert re.fullmatch(rf"{name}-\d{{4}}-\d\d-\d\d-\d{{4}}Z", run["name"]), run["name"]
        stage, progress = _wait(lambda: (lambda lines: lines if all(lines) else None)(
            _library_lines(_logs(api, flow_run))), 60, "the library's lines in the run's logs")
        assert "s3://medxgan/" in stage[0] and "[explain (shards)] start" in progress[0]

        # 2) the command line against the same server: exit code 3, a quiet terminal, its
        #    run's logs on the server
        cli = subprocess.run([str(BIN / "python"), "-m", "medxgan", "audit", "--config",
                              str(path)], cwd=tmp_path, env=run_env, capture_output=True,
                             text=True, timeout=600)
        assert cli.returncode == EXIT_CRITERIA_FAILED, cli.stdout + cli.stderr
        assert not re.search(r"\| (INFO|WARNING|ERROR) ", cli.stderr), cli.stderr[-2000:]

        flt = {"filter": {"event": {"name": [CRITERIA_FAILED_EVENT]},
                          "resource": {"id": [f"medxgan.audit.{name}"]}}, "limit": 50}
        events = _wait(lambda: (lambda e: e if len(e) >= 2 else None)(
            _post(api, "/events/filter", flt)["events"]), 60, "two criteria-failed events")
        related = {r["prefect.resource.id"] for e in events for r in e["related"]}
        assert f"prefect.flow-run.{flow_run}" in related  # one came from the worker's run
        assert events[0]["payload"]["failing"][0]["name"] == "impossible drop"
        cli_run = next(r.split(".")[-1] for r in related if r.startswith("prefect.flow-run.")
                       and not r.endswith(flow_run))
        reused = _wait(lambda: [m for m in _logs(api, cli_run).get("medxgan.flows", [])
                                if "finished earlier, reused" in m], 60, "the CLI run's logs")
        assert "s3://medxgan/" in reused[0]  # the rerun reuses the worker's stages
        keys = [artifact_key(name, k) for k in ("verdict", "metrics", "report")]
        arts = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": keys}}})
        assert {a["key"] for a in arts} == set(keys)
        link = next(a for a in arts if a["key"] == keys[2])["data"]
        assert f"](s3://medxgan/{name}/runs/{name}-" in link and "/report/index.html)" in link

        # 3) a stuck task on the worker: explain-cohort with the classifier on a store that
        #    never answers fails the run with the one-line timeout, not a hang
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        cohort = tmp_path / "cohort"
        ing = subprocess.run([str(BIN / "python"), "-m", "medxgan", "ingest", "--source",
                              "phantom-cxr", "--n", "8", "--size", "32", "--out", str(cohort)],
                             cwd=tmp_path, env=run_env, capture_output=True, text=True,
                             timeout=300)
        assert ing.returncode == 0, ing.stderr[-2000:]
        stuck = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        out = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "explain/explain-cohort",
             "--param", f"cohort={cohort}", "--param", "classifier=s3://medxgan/stuck/spec.yaml",
             "--param", f"run={tmp_path / 'stuck-run'}", "--param", 'methods=["random"]',
             "--param", "split=", "--param", "max_images=2", "--param", "task_timeout_s=2",
             "--job-variable", f'env={{"MEDXGAN_S3_ENDPOINT": "{stuck}"}}'],
            cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        stuck_run = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
        st = _final_state(api, stuck_run, 400)
        assert st["type"] == "FAILED", st
        assert "explanation shard 0 of " in st["message"], st["message"]
        assert "timed out after 2 s" in st["message"], st["message"]
        print(f"stack test done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        blackhole.close()
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
