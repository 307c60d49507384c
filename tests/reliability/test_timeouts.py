"""Time limits of unattended runs (issue #23): a stuck call fails the run with one clear line
instead of hanging the nightly audit forever.

The stuck call is real: an "S3 server" that accepts TCP connections and never answers (a
listening socket nobody accepts from, so botocore waits for its 60 s read timeout, twice),
as a hung load balancer or a half-dead storage node does. The limits come from the
environment (``MEDXGAN_TASK_TIMEOUT_S``, ``MEDXGAN_FLOW_TIMEOUT_S``), read when the run starts.
"""

from __future__ import annotations

import socket

import pytest
import yaml

from flows.cli import main as cli_main


@pytest.fixture
def blackhole(monkeypatch):
    """MEDXGAN_S3_* pointing at a server that never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    monkeypatch.setenv("MEDXGAN_S3_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
    monkeypatch.setenv("MEDXGAN_S3_KEY", "stuck-key")
    monkeypatch.setenv("MEDXGAN_S3_SECRET", "stuck-secret")
    yield
    srv.close()


def test_every_long_task_and_the_audit_flow_have_a_limit():
    from flows.audit import audit_flow
    from medxgan.settings import Settings
    from tasks.check import check_classifier_task
    from tasks.explain import explain_shard, tune_method
    from tasks.ingest import finalize, ingest_chunk
    from tasks.train import train_classifier_task, train_gan_task

    s = Settings()
    assert audit_flow.timeout_seconds == s.flow_timeout_s == 24 * 3600
    for t in (train_classifier_task, train_gan_task):
        assert t.timeout_seconds == s.train_timeout_s
    for t in (explain_shard, tune_method, ingest_chunk, finalize, check_classifier_task):
        assert t.timeout_seconds == s.task_timeout_s


def test_a_stuck_task_fails_the_run_with_one_line(prefect_harness, blackhole, tmp_path,
                                                   monkeypatch, capsys):
    """An explanation shard whose classifier lives on the stuck store."""
    from flows.ingest import ingest_flow

    cohort = str(tmp_path / "cohort")
    ingest_flow(source="phantom-cxr", out=cohort, n=12, size=32, seed=1)
    monkeypatch.setenv("MEDXGAN_TASK_TIMEOUT_S", "1.5")
    rc = cli_main(["explain", "--cohort", cohort, "--classifier", "s3://medxgan/clf/spec.yaml",
                   "--methods", "random", "--out", str(tmp_path / "run"), "--split", "",
                   "--max-images", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("medxgan: error: explanation shard 0 of ")
    assert "timed out after 1.5 s" in err[-1] and "MEDXGAN_TASK_TIMEOUT_S" in err[-1]
    assert "Traceback" not in "\n".join(err) and "stuck-secret" not in "\n".join(err)
    assert not (tmp_path / "run" / "explanations" / "manifest.json").exists()


def test_a_stuck_audit_flow_fails_with_one_line(prefect_harness, blackhole, tmp_path,
                                                monkeypatch, capsys):
    """The audit's own first store call (the cohort stage's manifest) hangs."""
    cfg = {"name": "stuck", "store": "s3://medxgan/stuck",
           "cohort": {"source": "phantom-cxr", "n": 8, "size": 32},
           "classifier": {"train": {"epochs": 1}}}
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MEDXGAN_FLOW_TIMEOUT_S", "2")
    rc = cli_main(["audit", "--config", str(tmp_path / "audit.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1] == ("medxgan: error: audit stuck timed out after 2 s (is a store, Dask or "
                       "training call stuck? the limit is runtime.flow_timeout_s in the audit "
                       "YAML or MEDXGAN_FLOW_TIMEOUT_S)")
