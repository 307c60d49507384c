"""Shared fixtures: a real rclone S3 server, a Prefect test harness, store URLs.

PREFECT_HOME points at a temporary folder before Prefect is imported anywhere, so tests never
touch a user's Prefect database.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="medxgan-prefect-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "240")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)
# Tiny models on 2 shared cores: one intra-op thread everywhere (this process, Dask workers
# and subprocesses inherit it) avoids oversubscription (the models tests went from 112 s to
# 21 s) and keeps results bit-identical between a killed subprocess and its rerun.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _load_infra(name: str):
    spec = importlib.util.spec_from_file_location(f"infra_{name}", ROOT / "infra" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


s3server = _load_infra("s3server")


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A live ``rclone serve s3`` on 127.0.0.1 with bucket ``medxgan`` (whole session)."""
    srv = s3server.start(tmp_path_factory.mktemp("s3") / "data", buckets=("medxgan",))
    yield srv
    srv.stop()


@pytest.fixture
def s3_store_url(s3_server, monkeypatch):
    """A fresh ``s3://medxgan/<unique>`` URL; MEDXGAN_S3_* point at the live server."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return f"s3://medxgan/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["local", "s3"])
def any_store_url(request, tmp_path):
    """The same test on a local folder and on the rclone S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_store_url")


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's real engine on a temporary ephemeral server (SQLite), once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield
