"""Storage outages on the live rclone S3 server (the session ``s3_server`` fixture).

- The server is stopped while an ingest flow writes many small parts and started again once
  ``Store._retry`` has logged a retry (at least 2.5 s later; s3fs and botocore retry
  connection errors themselves first, so a fixed short outage can pass unseen): the writes retry
  with backoff, the run completes, nothing is lost.
- A server that stays down fails the run with one clear line and leaves no manifest (here at
  the audit's first storage call; ``tests/test_storage.py::test_unreachable_store_is_a_clear_error``
  covers the Store itself).

Every test restarts the server in a ``finally`` block so later tests still have it.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from flows.cli import main as cli_main
from flows.ingest import ingest_flow
from medxgan.cohort.reader import Cohort
from medxgan.storage import Store

N, CHUNK = 360, 3  # 120 parts: the ingest outlasts the moment the outage starts


def _bucket_dir(s3_server, url: str):
    return s3_server.data_dir / url[len("s3://"):]


def test_outage_mid_ingest_retries_and_loses_nothing(prefect_harness, s3_server, s3_store_url,
                                                      caplog):
    caplog.set_level(logging.WARNING, logger="medxgan.storage")
    parts_dir = _bucket_dir(s3_server, s3_store_url) / "images"
    events: dict[str, float] = {}
    retried = threading.Event()

    class _SeesRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retry" in record.getMessage():
                retried.set()

    seer = _SeesRetry(level=logging.WARNING)
    logging.getLogger("medxgan.storage").addHandler(seer)

    def outage() -> None:
        end = time.monotonic() + 240
        while not list(parts_dir.glob("part-*.parquet")) and time.monotonic() < end:
            time.sleep(0.01)
        s3_server.stop()
        events["down"] = time.monotonic()
        time.sleep(2.5)
        # stay down until our own retry layer has met the outage (bounded)
        retried.wait(timeout=90)
        s3_server.restart()
        events["up"] = time.monotonic()

    t = threading.Thread(target=outage, daemon=True)
    t.start()
    try:
        m = ingest_flow(source="phantom-cxr", out=s3_store_url, n=N, size=32, seed=1,
                        chunk_size=CHUNK)
    finally:
        t.join(timeout=300)
        logging.getLogger("medxgan.storage").removeHandler(seer)
        if s3_server.process is None or s3_server.process.poll() is not None:
            s3_server.restart()
    assert "up" in events
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries, "no storage call met the outage (nothing was retried)"
    assert all("failed" in r and s3_store_url in r for r in retries)
    # nothing lost: manifest counts == inputs, every part readable, every image present
    assert m["counts"]["images"] == N and m["counts"]["quarantined"] == 0
    store = Store(s3_store_url)
    parts = store.list("images/", suffix=".parquet")
    assert len(parts) == N // CHUNK
    ids = []
    for key in parts:
        ids += store.read_parquet(key, columns=["image_id"])["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) == N
    c = Cohort(s3_store_url)
    assert c.load(ids[:3]).images.shape[0] == 3
    assert store.read_manifest() is not None


def test_store_that_stays_down_fails_with_one_line_and_no_manifest(prefect_harness, s3_server,
                                                                   s3_store_url, monkeypatch,
                                                                   tmp_path, capsys):
    """The audit's first storage call meets a server that stays down: after its retries the
    run fails with one line naming the store URL (never the secret) and writes nothing."""
    monkeypatch.setenv("MEDXGAN_IO_RETRIES", "3")
    monkeypatch.setenv("MEDXGAN_IO_BACKOFF_S", "0.1")
    cfg = tmp_path / "audit.yaml"
    cfg.write_text(f"name: down\nstore: {s3_store_url}\n"
                   "cohort: {source: phantom-cxr, n: 8, size: 32}\n"
                   "classifier: {train: {epochs: 1}}\n")
    s3_server.stop()
    try:
        rc = cli_main(["audit", "--config", str(cfg)])
        err = capsys.readouterr().err.strip()
    finally:
        s3_server.restart()
    assert rc == 1
    assert err.startswith("medxgan: error:") and "\n" not in err, err
    assert s3_store_url in err and ("connect" in err.lower() or "refused" in err.lower()), err
    assert s3_server.secret not in err
    assert Store(s3_store_url).list("") == []  # no manifest, no partial data
