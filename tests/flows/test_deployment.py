"""The production deployment (issue #23) under Prefect's real engine (the session's test
harness, a temporary server): ``prefect deploy --all`` from ``prefect.yaml`` records a pull
step without any path of this machine, the job variables, a concurrency limit and an
``AuditConfig`` form; a ``python -m medxgan audit`` against the server keeps its terminal quiet
while the run is named after the audit and its date, has the library's and the progress lines in
its logs and a link artifact to the report; an ``AuditConfig`` object is a valid ``config``.
``tests/flows/test_stack_alerts.py`` runs the deployment on a worker (opt-in)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.audit import artifact_key
from medxgan.config import AuditConfig

ROOT = Path(__file__).resolve().parents[2]
NAME = "deploy-tiny"


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PREFECT_API_URL": _api(), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            **extra}


def test_prefect_yaml_has_the_production_keys():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (step,) = doc["pull"]
    assert step == {"prefect.deployments.steps.set_working_directory":
                    {"directory": "{{ $MEDXGAN_CODE_DIR }}"}}
    from prefect.flows import load_flow_from_entrypoint

    for d in doc["deployments"]:
        assert d["concurrency_limit"]["limit"] >= 1, d["name"]
        env = d["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "medxgan"
        assert env["MEDXGAN_STORE"] == "{{ $MEDXGAN_STORE }}"
        assert not any("S3_KEY" in k or "SECRET" in k for k in env)  # never credentials
        load_flow_from_entrypoint(str(ROOT / d["entrypoint"]))
    nightly, explain = doc["deployments"]
    AuditConfig.from_yaml(str(ROOT / nightly["parameters"]["config"]))  # the default exists
    # explain-cohort is a template: what has no working default is not given one
    assert "Template" in explain["description"]
    assert not {"cohort", "classifier", "run"} & set(explain["parameters"])


@pytest.fixture(scope="module")
def deployed(prefect_harness, tmp_path_factory) -> dict:
    """``prefect deploy --all`` from the repository root against the harness's server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="medxgan-process", type="process"))
        except Exception:  # noqa: BLE001 - created by an earlier test of the session
            pass
    out = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                         cwd=ROOT, env=_env(MEDXGAN_STORE="s3://medxgan/deployed"),
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with get_client(sync_client=True) as client:
        return {n: client.read_deployment_by_name(f"{f}/{n}")
                for f, n in (("audit", "audit-nightly"), ("explain", "explain-cohort"))}


def test_deploy_records_the_pull_step_not_this_machine(deployed):
    d = deployed["audit-nightly"]
    assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                             {"directory": "{{ $MEDXGAN_CODE_DIR }}"}}]
    assert str(ROOT) not in str(d.pull_steps)
    env = d.job_variables["env"]
    assert env["MEDXGAN_STORE"] == "s3://medxgan/deployed"  # resolved when deploying
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "medxgan"
    assert d.global_concurrency_limit is not None and d.global_concurrency_limit.limit == 1
    assert [s.schedule.cron for s in d.schedules] == ["0 2 * * *"]
    # a custom run from the UI is a form: the config parameter offers the AuditConfig model
    schema = d.parameter_openapi_schema
    assert "AuditConfig" in schema.get("definitions", {})
    assert "cohort" in schema["definitions"]["AuditConfig"]["properties"]
    e = deployed["explain-cohort"]
    assert {"cohort", "classifier", "run"} <= set(e.parameter_openapi_schema["required"])
    assert e.global_concurrency_limit.limit == 2


def _config(store: str, cohort: str) -> dict:
    return {"name": NAME, "store": store, "seed": 0,
            "cohort": {"source": "existing", "url": cohort},
            "classifier": {"train": {"epochs": 1, "batch": 32}},
            "explain": {"methods": ["random", "box_prior"], "max_images": 4, "shard_size": 4},
            "score": {"n_boot": 20, "faithfulness": False, "intervention": False,
                      "shortcut": False}}


@pytest.fixture(scope="module")
def cli_run(prefect_harness, tmp_path_factory) -> dict:
    """``python -m medxgan audit`` in a fresh process against the harness's server."""
    from flows.ingest import ingest_flow

    root = tmp_path_factory.mktemp("deploy")
    cohort = str(root / "cohort")
    ingest_flow(source="phantom-cxr", out=cohort, n=48, size=32, seed=4)
    cfg = _config(str(root / "store"), cohort)
    (root / "audit.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "medxgan", "audit", "--config",
                          str(root / "audit.yaml")], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"out": out, "cfg": cfg, "root": root}


def _flow_runs(name_like: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(like_=name_like)))


def _logs_of(run_id) -> list:
    """The logs of a flow run and of its subflows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId,
                                                LogFilter, LogFilterFlowRunId)

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        ids = [run_id, *[c.id for c in children]]
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)),
                                limit=200)


def test_the_terminal_stays_quiet(cli_run):
    err = cli_run["out"].stderr
    assert not re.search(r"\| (INFO|WARNING|ERROR) ", err), err[-2000:]
    assert "Finished in state" not in err and "Beginning flow run" not in err
    assert "[explain (shards)] done" in err  # our progress lines stay (stderr is not a tty)


def test_the_run_is_named_and_has_library_logs_and_the_report_link(cli_run):
    (run,) = _flow_runs(f"{NAME}-%")
    assert re.fullmatch(rf"{NAME}-\d{{4}}-\d\d-\d\d-\d{{4}}Z", run.name), run.name
    logs = _logs_of(run.id)
    by_name = {}
    for rec in logs:
        by_name.setdefault(rec.name, []).append(rec.message)
    stage = [m for m in by_name.get("medxgan.flows", []) if "classifiers/" in m]
    assert stage and "under its lease" in stage[0], by_name.keys()
    assert any("[explain (shards)] start" in m for m in by_name.get("medxgan.progress", []))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = artifact_key(NAME, "report")
    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))
    runs = list((cli_run["root"] / "store" / "runs").iterdir())
    report = runs[0] / "report" / "index.html"
    # Prefect 3 stores a link artifact as the markdown link itself
    assert art.data == f"[evidence report of run {runs[0].name}]({report.resolve().as_uri()})"


def test_an_audit_config_object_is_a_valid_config(cli_run):
    """What a run from the UI's form passes: the model, not YAML text (the run is reused)."""
    from flows.audit import audit_flow

    m = audit_flow(AuditConfig.model_validate(cli_run["cfg"]))
    assert m["audit"] == NAME and all(s["reused"] for s in m["stages"].values())
