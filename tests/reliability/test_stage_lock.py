"""The stage lease (``medxgan/locks.py``, issue #23): two runs with one stage key never train
into one folder at once; the second waits, then reuses the finished stage.

On a local folder and on the rclone S3 server (which ignores ``If-None-Match``, so the
write-then-read-back path is the one exercised there): mutual exclusion between threads, a
dead holder on this host taken over at once, a silent holder elsewhere after ``ttl_s``, a
bounded wait that fails with one line naming the holder; and two concurrent audits sharing a
classifier stage under Prefect's engine: exactly one trains it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from medxgan.locks import StageLock, StageLockTimeout, lock_key
from medxgan.storage import Store


def _lock(store: Store, **kw) -> StageLock:
    kw.setdefault("wait_s", 120)
    kw.setdefault("poll_s", 0.02)  # S3: the default settling time (rclone ignores If-None-Match)
    return StageLock(store, "classifiers/k1", **kw)


def test_one_holder_at_a_time(any_store_url):
    from medxgan.locks import _exclusive_puts

    store = Store(any_store_url)
    if store.protocol == "s3":
        assert not _exclusive_puts(store)  # rclone: the write-then-read-back path is tested
    active, most, order = [0], [0], []
    guard = threading.Lock()

    def worker(i: int) -> None:
        with _lock(store, label=f"w{i}"):
            with guard:
                active[0] += 1
                most[0] = max(most[0], active[0])
            order.append(i)
            time.sleep(0.3)  # long enough for the others to look and wait
            with guard:
                active[0] -= 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert sorted(order) == [0, 1, 2]  # everyone got it, in turn
    assert most[0] == 1
    assert not store.exists(lock_key("classifiers/k1"))  # released


def _write_record(store: Store, **record) -> None:
    store.write_bytes(lock_key("classifiers/k1"), json.dumps(
        {"owner": "other", "beat": 0, "since": "then", "label": "old-run", **record}).encode())


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    import socket

    store = Store(str(tmp_path / "store"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs (a SIGKILLed run)
    _write_record(store, host=socket.gethostname(), pid=gone.pid)
    with _lock(store, ttl_s=3600, wait_s=60) as lease:  # no waiting for the ttl
        rec = json.loads(store.read_bytes(lock_key("classifiers/k1")))
        assert rec["owner"] == lease.record["owner"] and rec["pid"] != gone.pid


def test_a_silent_holder_elsewhere_is_taken_over_after_the_ttl(any_store_url):
    store = Store(any_store_url)
    _write_record(store, host="another-machine", pid=1)
    waited = []
    with _lock(store, ttl_s=0.5, on_wait=waited.append) as lease:
        assert lease.record["owner"] != "other"
    assert waited and waited[0]["label"] == "old-run"  # it waited for that run first


def test_a_live_holder_makes_the_wait_fail_with_one_line(any_store_url):
    store = Store(any_store_url)
    with _lock(store, label="nightly-run", ttl_s=0.4):
        time.sleep(0.5)  # at least one heartbeat: a live holder is never stale
        with pytest.raises(StageLockTimeout) as info:
            _lock(store, wait_s=1.5, ttl_s=0.4).acquire()
    msg = str(info.value)
    assert "\n" not in msg and "run nightly-run" in msg and "classifiers/k1" in msg
    assert "limit 1.5 s" in msg and lock_key("classifiers/k1") in msg


def _audit_cfg(store: str, cohort: str, name: str) -> dict:
    return {"name": name, "store": store, "seed": 0,
            "cohort": {"source": "existing", "url": cohort},
            "classifier": {"train": {"epochs": 2, "batch": 32}},
            "explain": {"methods": ["random", "box_prior"], "max_images": 4, "shard_size": 4},
            "score": {"n_boot": 20, "faithfulness": False, "intervention": False,
                      "shortcut": False}}


def test_two_concurrent_audits_with_one_classifier_key_train_it_once(prefect_harness, tmp_path):
    """Two audits (other names, so other runs) sharing the classifier stage, started at
    once: without the lease both would see no manifest and both train into one folder."""
    from flows.audit import audit_flow
    from flows.ingest import ingest_flow

    store = str(tmp_path / "store")
    cohort = str(tmp_path / "cohort")
    ingest_flow(source="phantom-cxr", out=cohort, n=64, size=32, seed=3)
    results: dict[str, dict] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(name: str) -> None:
        try:
            start.wait()
            results[name] = audit_flow(_audit_cfg(store, cohort, name))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("lock-a", "lock-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=500)
    assert not errors, errors
    clf = [results[n]["stages"]["classifier"] for n in ("lock-a", "lock-b")]
    assert clf[0]["url"] == clf[1]["url"]  # one stage key
    assert sorted(c["reused"] for c in clf) == [False, True]  # one trained, one reused
    assert len(Store(store).list("classifiers/", suffix="manifest.json")) == 1
    assert not Store(store).exists("locks")
