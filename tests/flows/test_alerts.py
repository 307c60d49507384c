"""Issue #15 wired into the audit, under Prefect's real engine (the session's test harness):
intervention rows, shortcut.json, criteria, report.pdf, the alert events (read back from the
harness's server), the artifacts, the CLI's exit codes and an idempotent rerun."""

from __future__ import annotations

import time

import pytest
import yaml

from flows.audit import (CRITERIA_FAILED_EVENT, REGRESSION_EVENT, artifact_key, publish,
                         run_key)
from flows.cli import EXIT_CRITERIA_FAILED, EXIT_REGRESSION, audit_exit_code, main
from medxgan.catalogue import INTERVENTION
from medxgan.config import AuditConfig
from medxgan.storage import Store
from tests.flows._configs import tiny

NAME = "Alerts_Tiny"  # upper case and '_' in the name: artifact keys are slugged
CRITERIA = [
    # fails on any run: a drop of p is at most 1
    {"name": "impossible drop", "evidence": "intervention", "metric": "ablation_drop",
     "comparison": ">=", "threshold": 2.0},
    # passes on any run: a difference of two shares is at most 1
    {"evidence": "shortcut", "metric": "effect", "comparison": "<=", "threshold": 1.0},
]


def _config(store: str) -> dict:
    cfg = tiny(store, name=NAME,
               explain={"methods": ["gradcam", "random", "box_prior"], "max_images": 8,
                        "shard_size": 4},
               score={"n_boot": 50, "shortcut_images": 24})
    cfg["criteria"] = CRITERIA
    return cfg


def _events(name: str, resource_id: str, n: int = 1, timeout: float = 30.0) -> list:
    """Events ``name`` of ``resource_id`` stored by the harness's server (it persists them in
    batches: poll)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    flt = EventFilter(event=EventNameFilter(name=[name]),
                      resource=EventResourceFilter(id=[resource_id]))
    t0 = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            got = client.read_events(flt, limit=50).events
            if len(got) >= n or time.monotonic() - t0 > timeout:
                return got
            time.sleep(0.5)


def _artifacts(keys: list[str]) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))


@pytest.fixture(scope="module")
def cli_audit(prefect_harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("alerts")
    cfg_path = root / "audit.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(str(root / "store"))))
    rc1 = main(["audit", "--config", str(cfg_path)])
    runs = [k for k in Store(str(root / "store")).list("runs/", suffix="manifest.json")
            if k.count("/") == 2]
    assert len(runs) == 1, runs
    run_url = Store(str(root / "store")).url_of(runs[0].rsplit("/", 1)[0])
    run = Store(run_url)
    before = {k: run.read_bytes(k) for k in ("shortcut.json", "manifest.json",
                                              f"scores/method={INTERVENTION}/part-00000.parquet")}
    rc2 = main(["audit", "--config", str(cfg_path)])
    return {"root": root, "rc": (rc1, rc2), "run": run, "before": before}


def test_failing_criterion_exit_code_and_outputs(cli_audit):
    assert cli_audit["rc"] == (EXIT_CRITERIA_FAILED, EXIT_CRITERIA_FAILED)
    run = cli_audit["run"]
    scores = run.read_parquet("scores.parquet").to_pandas()
    inter = scores[scores["method"] == INTERVENTION]
    assert set(inter["metric"]) == {"ablation_drop", "ablation_drop_shuffled", "ablation_flip",
                                    "retention"}
    assert inter["value"].notna().any()
    assert len(run.list(f"scores/method={INTERVENTION}/", suffix=".parquet")) == 2  # 8 images / 4
    comparisons = run.read_parquet("comparisons.parquet").to_pandas()
    assert ((comparisons["method_a"] == INTERVENTION)
            & (comparisons["metric"] == "ablation_drop-shuffled_gap")).any()
    sc = run.read_json("shortcut.json")
    for k in ("residual", "located", "image_wide", "strongest", "effect", "effect_ci_high", "box",
              "drop", "drop_ci_low", "transplant_rate", "control_rate", "top_image_ids", "maps",
              "n_images", "n_positives", "n_negatives"):
        assert k in sc, k
    assert sc["n_images"] <= 24 and sc["n_positives"] > 0 and sc["n_negatives"] > 0
    assert run.read_bytes("report/report.pdf").startswith(b"%PDF")
    page = run.read_bytes("report/index.html").decode()
    assert "impossible drop" in page  # the criteria table
    m = run.read_manifest()
    assert [c["name"] for c in m["criteria_failed"]] == ["impossible drop"]
    assert [c["outcome"] for c in m["criteria"]] == ["FAIL", "PASS"]
    assert set(m["answers"]["answers"]) == {"relies_on_findings", "shortcut_suspected",
                                            "trustworthy_explanations"}
    assert m["verdict"] == m["answers"]["headline"]
    prov = run.read_json("provenance.json")
    assert prov["config"]["criteria"][0]["name"] == "impossible drop"


def test_rerun_is_idempotent(cli_audit):
    run = cli_audit["run"]
    for k, b in cli_audit["before"].items():
        assert run.read_bytes(k) == b, k  # nothing rewritten: every stage reused


def test_criteria_failed_event_read_back(cli_audit):
    got = _events(CRITERIA_FAILED_EVENT, f"medxgan.audit.{NAME}", n=2)
    assert len(got) == 2  # one per audit (the rerun re-alerts: the criterion still fails)
    p = got[0].payload
    assert p["audit"] == NAME and p["run_id"] == cli_audit["run"].read_manifest()["run_id"]
    (f,) = p["failing"]
    assert f["name"] == "impossible drop" and f["threshold"] == 2.0
    assert isinstance(f["value"], float) and f["value"] < 2.0
    assert got[0].resource.get("medxgan.run-id") == p["run_id"]


def test_artifacts_created(cli_audit):
    keys = [artifact_key(NAME, "verdict"), artifact_key(NAME, "metrics")]
    assert keys == ["medxgan-alerts-tiny-verdict", "medxgan-alerts-tiny-metrics"]
    arts = _artifacts(keys)
    by_type = {a.type: a for a in arts}
    assert {"markdown", "table"} <= set(by_type)
    md = by_type["markdown"].data
    m = cli_audit["run"].read_manifest()
    assert m["verdict"] in md and m["report"] in md and "impossible drop" in md
    assert "ablation_drop" in str(by_type["table"].data)


def test_regression_event_and_exit_code(prefect_harness, monkeypatch):
    from prefect import flow

    manifest = {"audit": "reg-check", "run_id": "reg-check-abc", "report": "/x/report/index.html",
                "verdict": "v", "criteria_failed": [], "regressions": 1,
                "previous_run_id": "reg-check-old",
                "regressed": [{"method": INTERVENTION, "metric": "ablation_drop", "prev_mean": 0.4,
                               "cur_mean": 0.1, "diff": -0.3, "ci_low": -0.4, "ci_high": -0.2,
                               "n": 8}]}

    @flow(name="publish-check")
    def pub() -> dict:
        return publish(manifest)

    assert pub()["events"] == [REGRESSION_EVENT]
    (ev,) = _events(REGRESSION_EVENT, "medxgan.audit.reg-check")
    assert ev.payload["failing"][0]["cur_mean"] == 0.1
    assert audit_exit_code(manifest) == EXIT_REGRESSION
    assert audit_exit_code({**manifest, "criteria_failed": [{"name": "x"}]}) == EXIT_CRITERIA_FAILED
    assert audit_exit_code({**manifest, "regressions": 0}) == 0

    import flows.audit

    monkeypatch.setattr(flows.audit, "audit_flow", lambda **kw: {**manifest, "stages": {}})
    monkeypatch.setattr(AuditConfig, "from_yaml", classmethod(lambda cls, p: None))
    assert main(["audit", "--config", "any.yaml"]) == EXIT_REGRESSION


def test_criteria_are_part_of_the_run_key(tmp_path):
    a = AuditConfig.model_validate(_config(str(tmp_path)))
    b = AuditConfig.model_validate({**_config(str(tmp_path)), "criteria": CRITERIA[:1]})
    c = AuditConfig.model_validate({**_config(str(tmp_path)),
                                    "criteria": [{**CRITERIA[0], "on": "ci_low"}, CRITERIA[1]]})
    assert run_key(a, "c", "f", None) != run_key(b, "c", "f", None)
    assert run_key(a, "c", "f", None) == run_key(c, "c", "f", None)  # resolved: same `on`


def test_automation_example_validates():
    from pathlib import Path

    from prefect.events.schemas.automations import AutomationCore

    root = Path(__file__).resolve().parents[2]
    for p in sorted((root / "infra").glob("automation-*.yaml")):
        a = AutomationCore.model_validate(yaml.safe_load(p.read_text()))
        assert CRITERIA_FAILED_EVENT in a.trigger.expect or REGRESSION_EVENT in a.trigger.expect
