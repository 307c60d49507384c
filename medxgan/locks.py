"""A lease on one stage folder of a store, so that two runs never train into it at once.

Two audits whose stages share a key (the same cohort and training config, say a nightly run
and a run started by hand) would both see no manifest and both train into one folder. The
:class:`StageLock` of the folder lets one of them train; the other waits and then finds the
manifest and reuses the stage (the training tasks reuse a folder whose manifest exists).

The lease is an object of the store itself, ``locks/<stage key, '/' -> '.'>.json`` under the
store root, so it holds between processes, machines, Prefect servers and runners that share the
store, with no service of its own:

- **taking it**: an exclusive create (``O_CREAT | O_EXCL`` on a local folder; a conditional
  PUT, ``If-None-Match: *``, on S3 servers that honour it, AWS S3 and recent MinIO, probed once
  per bucket). A server that ignores the condition (rclone, older MinIO) lets two writers race:
  there each writes only where no record is, waits ``settle_s`` (or twice its own
  look-and-write time, if longer) and reads back; only the one whose record is there holds it.
  That is exact as long as a contender's look-and-write takes less than that wait;
- **holding it**: a heartbeat thread rewrites the record (``beat`` + 1) every ``ttl_s / 4``;
- **stale leases**: a holder on this host whose process is gone (SIGKILL, OOM) is taken over at
  once; any other holder whose record did not change for ``ttl_s`` seconds of the *waiter's*
  clock (no clock comparison between machines) is taken over after that;
- **waiting**: polls every ``poll_s``; after ``wait_s`` one line (:class:`StageLockTimeout`)
  naming the stage, the holder and the lease object an operator may delete.

Plain Python and the store API: no Prefect (``flows/runtime.py`` puts it around the stages).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from medxgan.storage import Store, StorageError

log = logging.getLogger(__name__)

TTL_S = 120.0
"""A lease whose record did not change for this long (s) is stale (4 missed heartbeats)."""


class StageLockTimeout(TimeoutError):
    """Another run held the stage for longer than the wait allowed."""


def lock_key(stage_key: str) -> str:
    """The lease object of the stage folder ``stage_key``
    (``gans/ab12`` -> ``locks/gans.ab12.json``)."""
    return f"locks/{stage_key.strip('/').replace('/', '.')}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _put_if_absent(store: Store, key: str, data: bytes) -> bool:
    """A conditional PUT (``If-None-Match: *``); False when the server refused it because the
    object exists. A server that ignores the condition overwrites (see :func:`_exclusive_puts`)."""
    path = store._path(key)
    try:
        store._retry("lock", key, lambda: store.fs.pipe_file(path, data, mode="create"))
    except StorageError as exc:
        if isinstance(exc.__cause__, FileExistsError) or "PreconditionFailed" in str(exc):
            return False
        raise
    return True


_EXCLUSIVE: dict[tuple[str | None, str], bool] = {}


def _exclusive_puts(store: Store) -> bool:
    """Whether this S3 server refuses a conditional PUT onto an existing object (AWS S3,
    recent MinIO: the lease is then exact), probed once per endpoint and bucket with a
    throw-away object under ``locks/``."""
    where = (store.settings.s3_endpoint, store.root.split("/", 1)[0])
    if where not in _EXCLUSIVE:
        probe = f"locks/.probe-{uuid.uuid4().hex}"
        _put_if_absent(store, probe, b"1")
        try:
            _EXCLUSIVE[where] = not _put_if_absent(store, probe, b"2")
        finally:
            store.delete(probe)
    return _EXCLUSIVE[where]


def describe(record: dict[str, Any] | None) -> str:
    """A holder in words: ``run <label> (host h, pid p, since t)``."""
    if not record:
        return "an unknown holder"
    who = f"run {record['label']} " if record.get("label") else ""
    return (f"{who}(host {record.get('host')}, pid {record.get('pid')}, since "
            f"{record.get('since')})")


class StageLock:
    """The lease on one stage folder (module doc); a context manager.

    Args:
        store: the store root holding the stage.
        stage_key: the stage folder under the root (``classifiers/<key>``).
        wait_s: how long to wait for another holder (s) before :class:`StageLockTimeout`.
        label: who holds it, for the record and messages (a Prefect flow run name).
        ttl_s: a record unchanged this long (s) is stale; heartbeats every ``ttl_s / 4``.
        poll_s: seconds between looks while waiting.
        settle_s: S3 only: seconds between writing the record and reading it back (default
            1 s; a local folder's exclusive create needs none).
        on_wait: called once with the holder's record when this lock has to wait.
    """

    def __init__(self, store: Store, stage_key: str, *, wait_s: float, label: str | None = None,
                 ttl_s: float = TTL_S, poll_s: float = 2.0, settle_s: float | None = None,
                 on_wait: Callable[[dict[str, Any] | None], None] | None = None):
        self.store, self.stage_key, self.key = store, stage_key, lock_key(stage_key)
        self.wait_s, self.ttl_s, self.poll_s = float(wait_s), float(ttl_s), float(poll_s)
        self.settle_s = (0.0 if store.protocol == "file" else 1.0) if settle_s is None else settle_s
        self.on_wait = on_wait
        self.record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(),
                       "pid": os.getpid(), "label": label, "beat": 0,
                       "stage": store.url_of(stage_key), "since": None}
        self.waited_s = 0.0  # how long acquire() waited
        self.lost = False  # the heartbeat found another holder's record (a stale takeover)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ------------------------------------------------------------------ record I/O
    def _read(self) -> dict[str, Any] | None | str:
        """The lease record, None when there is none, ``"partial"`` while it is being written."""
        try:
            return json.loads(self.store.read_bytes(self.key).decode())
        except FileNotFoundError:
            return None
        except ValueError:
            return "partial"

    def _create(self) -> bool:
        """Write our record if there is none; whether we hold the lease."""
        self.record["since"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        data = json.dumps(self.record, sort_keys=True).encode()
        path = self.store._path(self.key)
        if self.store.protocol == "file":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
        t0 = time.monotonic()
        if self._read() is not None:  # a server may ignore If-None-Match: look first
            return False
        if not _put_if_absent(self.store, self.key, data):
            return False  # a server that honours If-None-Match: someone holds it
        if _exclusive_puts(self.store):
            return True
        # last writer wins: wait until a contender that looked when we did has written too
        # (at least settle_s, or twice what our own look-and-write took under this load)
        time.sleep(max(self.settle_s, 2 * (time.monotonic() - t0)))
        got = self._read()
        return isinstance(got, dict) and got.get("owner") == self.record["owner"]

    def _stale(self, got: dict[str, Any] | None | str, seen: dict[str, Any]) -> bool:
        """Whether the holder's record is stale (module doc); ``seen`` keeps what this waiter
        saw and since when (its own monotonic clock)."""
        if isinstance(got, dict) and got.get("host") == self.record["host"] \
                and isinstance(got.get("pid"), int) and not _pid_alive(got["pid"]):
            return True
        mark = (got.get("owner"), got.get("beat")) if isinstance(got, dict) else got
        now = time.monotonic()
        if seen.get("mark") != mark:
            seen.update(mark=mark, since=now)
            return False
        return now - seen["since"] > self.ttl_s

    # ------------------------------------------------------------------ public
    def acquire(self) -> "StageLock":
        """Take the lease, waiting for another holder up to ``wait_s``."""
        t0 = time.monotonic()
        seen: dict[str, Any] = {}
        told = False
        while True:
            if self._create():
                break
            got = self._read()
            if got is None:
                continue  # released meanwhile: try again at once
            if self._stale(got, seen):
                log.warning("stage %s: taking over the stale lease of %s",
                            self.record["stage"], describe(got if isinstance(got, dict) else None))
                again = self._read()
                if again == got:  # still the stale record (not a fresh holder's)
                    self.store.delete(self.key)
                seen.clear()
                continue
            if not told:
                told = True
                if self.on_wait is not None:
                    self.on_wait(got if isinstance(got, dict) else None)
            waited = time.monotonic() - t0
            if waited > self.wait_s:
                raise StageLockTimeout(
                    f"stage {self.record['stage']}: waited {waited:.0f} s for "
                    f"{describe(got if isinstance(got, dict) else None)} training it "
                    f"(limit {self.wait_s:g} s); if that run is gone, delete "
                    f"{self.store.url_of(self.key)}")
            time.sleep(self.poll_s)
        self.waited_s = time.monotonic() - t0
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name=f"lease {self.stage_key}")
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                got = self._read()
                if not (isinstance(got, dict) and got.get("owner") == self.record["owner"]):
                    self.lost = True
                    log.warning("stage %s: the lease was taken over by %s while this run "
                                "held it", self.record["stage"],
                                describe(got if isinstance(got, dict) else None))
                    return
                self.record["beat"] += 1
                self.store.write_bytes(self.key, json.dumps(self.record, sort_keys=True).encode())
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("stage %s: lease heartbeat failed (%s)", self.record["stage"],
                            type(exc).__name__)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        got = self._read()
        if isinstance(got, dict) and got.get("owner") == self.record["owner"]:
            self.store.delete(self.key)
        if self.store.protocol == "file":  # leave no empty locks/ folder behind
            try:
                os.rmdir(os.path.dirname(self.store._path(self.key)))
            except OSError:
                pass

    def __enter__(self) -> "StageLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
