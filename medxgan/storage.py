"""Object storage over fsspec: one API for a local folder and an S3-compatible server.

A :class:`Store` is rooted at a URL (``/abs/path``, ``./rel``, ``file:///abs`` or
``s3://bucket/prefix``) and takes keys relative to that root (``images/part-00000.parquet``).

Writes follow *data first, manifest last*: each object is written whole (local files go to a
temporary name and are renamed; an S3 PUT is atomic), and a dataset is complete only once its
manifest exists (:meth:`Store.write_manifest` / :meth:`Store.require_manifest`). Transient
errors (connection refused, timeouts, 5xx) are retried with exponential backoff; errors that
retrying cannot fix (missing key, access denied) are raised at once as :class:`StorageError`
with a one-line message that names the URL and never the credentials. S3 credentials come
from the environment, a named Prefect block or the AWS default chain (:func:`s3_credentials`).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from medxgan.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

MANIFEST = "manifest.json"


class StorageError(RuntimeError):
    """A storage operation failed for good (after retries where retrying made sense)."""


def _is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may help (network trouble, throttling, server errors)."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    text = str(exc)
    if name in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError", "ClientConnectorError", "ServerDisconnectedError",
                "ClientOSError", "ClientPayloadError"}:
        return True
    if any(code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                     "NoSuchBucket", "403", "Forbidden")):
        return False
    if any(code in text for code in ("500", "502", "503", "504", "SlowDown", "InternalError",
                                     "Connection refused", "Could not connect", "timed out")):
        return True
    return isinstance(exc, OSError) and exc.errno is None and "connect" in text.lower()


def split_url(url: str) -> tuple[str, str]:
    """``(protocol, path)`` of a store URL; local paths are made absolute."""
    if url.startswith("s3://"):
        return "s3", url[len("s3://"):].rstrip("/")
    if url.startswith("file://"):
        url = url[len("file://"):]
    return "file", os.path.abspath(os.path.expanduser(url))


def make_fs(protocol: str, settings: Settings | None = None) -> fsspec.AbstractFileSystem:
    """A filesystem for ``protocol`` configured from ``settings`` (environment by default)."""
    if protocol == "file":
        return fsspec.filesystem("file", auto_mkdir=True)
    if protocol != "s3":
        raise StorageError(f"unsupported store protocol {protocol!r} (use a path or s3://)")
    s = settings or get_settings()
    cred = s3_credentials(s)
    client_kwargs: dict[str, Any] = {"region_name": cred.pop("region")}
    endpoint = cred.pop("endpoint")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    return fsspec.filesystem(
        "s3",
        **cred,
        client_kwargs=client_kwargs,
        # Non-AWS servers reject the newer default checksum behaviour of botocore.
        config_kwargs={
            "response_checksum_validation": "when_required",
            "request_checksum_calculation": "when_required",
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 60,
        },
        use_listings_cache=False,
        skip_instance_cache=True,
    )


def s3_credentials(s: Settings) -> dict[str, Any]:
    """How s3fs authenticates, first match wins (``docs/deployment.md``, "Credentials"):

    1. ``MEDXGAN_S3_KEY`` / ``MEDXGAN_S3_SECRET``;
    2. the Prefect block named by ``MEDXGAN_S3_BLOCK`` (:func:`block_credentials`);
    3. the AWS default chain: ``MEDXGAN_S3_PROFILE`` or ``AWS_PROFILE``, ``AWS_*`` variables,
       the shared credentials file, the container / instance role (s3fs with no key).

    Returns s3fs keyword arguments (``key``, ``secret``, ``token``, ``profile``) plus
    ``endpoint`` and ``region`` (the environment's, else the block's). Never logged.
    """
    block: dict[str, Any] = {}
    if not (s.s3_key or s.s3_secret) and s.s3_block:
        block = block_credentials(s.s3_block)
    region = s.s3_region if "s3_region" in s.model_fields_set or not block.get("region") \
        else block["region"]
    secret = s.s3_secret.get_secret_value() if s.s3_secret else block.get("secret")
    return {"key": s.s3_key or block.get("key"), "secret": secret,
            "token": block.get("token"), "profile": s.s3_profile or block.get("profile"),
            "endpoint": s.s3_endpoint or block.get("endpoint"), "region": region}


#: field names accepted in a block, by what s3fs takes (AwsCredentials' names first)
_BLOCK_FIELDS = {
    "key": ("aws_access_key_id", "key", "access_key_id"),
    "secret": ("aws_secret_access_key", "secret", "secret_access_key"),
    "token": ("aws_session_token", "token", "session_token"),
    "profile": ("profile_name", "profile"),
    "region": ("region_name", "region"),
    "endpoint": ("endpoint_url", "endpoint"),
}


@functools.lru_cache(maxsize=8)
def block_credentials(ref: str) -> dict[str, Any]:
    """The S3 credentials in the Prefect block ``ref`` (``aws-credentials/<name>``, the
    prefect-aws ``AwsCredentials`` block, read without needing prefect-aws installed; or
    ``secret/<name>``, a core ``Secret`` whose value is a JSON mapping with the same field
    names: ``aws_access_key_id``, ``aws_secret_access_key``, optional ``aws_session_token``,
    ``region_name``, ``endpoint_url``). Read once per process from the Prefect API of the
    current profile (``PREFECT_API_URL``); Prefect is imported only here, only when a block is
    named. A missing or malformed block is one line without any value in it."""
    slug, _, name = ref.partition("/")
    if not name or slug not in ("aws-credentials", "secret"):
        raise StorageError(f"MEDXGAN_S3_BLOCK={ref!r}: expected aws-credentials/<name> or "
                           "secret/<name>")
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            doc = client.read_block_document_by_name(name=name, block_type_slug=slug,
                                                     include_secrets=True)
    except Exception as exc:  # noqa: BLE001 - ObjectNotFound, no API, ...; no values in it
        raise StorageError(f"MEDXGAN_S3_BLOCK={ref!r}: the Prefect block could not be read "
                           f"({type(exc).__name__})") from None
    data = dict(doc.data or {})
    if slug == "secret":
        value = data.get("value")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, dict):
            raise StorageError(f"MEDXGAN_S3_BLOCK={ref!r}: the secret must hold a JSON mapping "
                               "with aws_access_key_id and aws_secret_access_key")
        data = value
    data = {**data, **(data.get("aws_client_parameters") or {})}
    out = {k: next((str(data[n]) for n in names if data.get(n)), None)
           for k, names in _BLOCK_FIELDS.items()}
    if bool(out["key"]) != bool(out["secret"]):
        raise StorageError(f"MEDXGAN_S3_BLOCK={ref!r}: holds only one of the access key id and "
                           "the secret access key")
    return out


class Store:
    """Keys under one root URL, on a local folder or an S3-compatible server.

    Args:
        url: root URL of this store (a path, ``file://`` or ``s3://bucket/prefix``).
        settings: S3 endpoint/credentials and retry policy; read from the environment if None.
    """

    def __init__(self, url: str, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.protocol, self.root = split_url(url)
        self.fs = make_fs(self.protocol, self.settings)

    # ------------------------------------------------------------------ naming
    @property
    def url(self) -> str:
        """The root as a URL that :class:`Store` accepts again."""
        return f"s3://{self.root}" if self.protocol == "s3" else self.root

    def child(self, key: str) -> "Store":
        """A store rooted at ``key`` below this one, sharing settings."""
        return Store(self.url_of(key), self.settings)

    def url_of(self, key: str) -> str:
        """The URL of ``key`` under this root."""
        key = key.strip("/")
        return f"{self.url}/{key}" if key else self.url

    def _path(self, key: str) -> str:
        key = key.strip("/")
        if ".." in key.split("/"):
            raise StorageError(f"key {key!r} escapes the store root")
        return f"{self.root}/{key}" if key else self.root

    # ------------------------------------------------------------------ retries
    def _retry(self, what: str, key: str, fn: Callable[[], T]) -> T:
        attempts = max(1, self.settings.io_retries)
        delay = self.settings.io_backoff_s
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except FileNotFoundError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _is_transient(exc) or attempt == attempts:
                    raise StorageError(
                        f"{what} {self.url_of(key)} failed: {type(exc).__name__}: "
                        f"{one_line(exc)}") from exc
                log.warning("%s %s failed (%s), retry %d/%d in %.1f s", what, self.url_of(key),
                            type(exc).__name__, attempt, attempts - 1, delay)
                if self.protocol == "s3":
                    self.fs.invalidate_cache()
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ bytes
    def read_bytes(self, key: str) -> bytes:
        """The whole object at ``key``; ``FileNotFoundError`` if it does not exist."""
        return self._retry("read", key, lambda: self.fs.cat_file(self._path(key)))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (readers see the old object or the new one)."""
        path = self._path(key)

        def _write() -> None:
            if self.protocol == "file":
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)

        self._retry("write", key, _write)

    def exists(self, key: str) -> bool:
        """Whether an object (or a non-empty prefix) exists at ``key``."""
        if self.protocol == "s3":
            self.fs.invalidate_cache()
        return self._retry("stat", key, lambda: self.fs.exists(self._path(key)))

    def list(self, prefix: str = "", suffix: str = "") -> list[str]:
        """Keys (relative to the root) of all objects below ``prefix`` ending in ``suffix``, sorted."""
        base = self._path(prefix)
        if self.protocol == "s3":
            self.fs.invalidate_cache()

        def _find() -> list[str]:
            try:
                return self.fs.find(base)
            except FileNotFoundError:
                return []

        found = self._retry("list", prefix, _find)
        root = self.root.rstrip("/") + "/"
        keys = [p[len(root):] if p.startswith(root) else p for p in found]
        return sorted(k for k in keys if k.endswith(suffix) and ".tmp-" not in k)

    def remove_temporaries(self, prefix: str = "") -> int:
        """Delete ``*.tmp-*`` files below ``prefix`` that killed writers left behind (local
        stores only; an S3 PUT leaves none). Call only while no writer works there.

        Returns: how many were removed.
        """
        if self.protocol != "file":
            return 0
        base = self._path(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return 0
        stale = [p for p in found if ".tmp-" in p.rsplit("/", 1)[-1]]
        for p in stale:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
        return len(stale)

    def delete(self, key: str) -> None:
        """Remove ``key`` and everything below it; a missing key is not an error."""
        path = self._path(key)
        if not self.exists(key):
            return
        self._retry("delete", key, lambda: self.fs.rm(path, recursive=True))

    # ------------------------------------------------------------------ formats
    def write_parquet(self, key: str, table: pa.Table) -> None:
        """Write an Arrow table as one Parquet object (zstd)."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(key, buf.getvalue())

    def read_parquet(self, key: str, columns: list[str] | None = None) -> pa.Table:
        """Read one Parquet object."""
        return pq.read_table(io.BytesIO(self.read_bytes(key)), columns=columns)

    def iter_parquet_batches(self, key: str, batch_size: int = 256,
                             columns: list[str] | None = None) -> Iterable[pa.RecordBatch]:
        """Record batches of one Parquet object, read row group by row group."""
        def _open():
            return self.fs.open(self._path(key), "rb")

        fh = self._retry("open", key, _open)
        with fh:
            pf = pq.ParquetFile(fh)
            yield from pf.iter_batches(batch_size=batch_size, columns=columns)

    def write_json(self, key: str, obj: Any) -> None:
        """Write ``obj`` as indented UTF-8 JSON."""
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str) -> Any:
        """Read a JSON object."""
        return json.loads(self.read_bytes(key).decode())

    # ------------------------------------------------------------------ manifests
    def write_manifest(self, obj: dict[str, Any], prefix: str = "") -> None:
        """Write the manifest of the dataset at ``prefix``: call only after all its data."""
        self.write_json(f"{prefix.strip('/')}/{MANIFEST}".lstrip("/"), obj)

    def read_manifest(self, prefix: str = "") -> dict[str, Any] | None:
        """The manifest at ``prefix``, or None while the dataset is incomplete."""
        try:
            return self.read_json(f"{prefix.strip('/')}/{MANIFEST}".lstrip("/"))
        except FileNotFoundError:
            return None

    def require_manifest(self, prefix: str = "") -> dict[str, Any]:
        """The manifest at ``prefix``; a one-line error if the dataset is missing or incomplete."""
        m = self.read_manifest(prefix)
        if m is None:
            raise StorageError(f"{self.url_of(prefix)} has no manifest.json: "
                               "missing or incompletely written dataset")
        return m

    def __repr__(self) -> str:
        return f"Store({self.url!r})"


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (at most 300 characters), for one-line errors."""
    return " ".join(str(exc).split())[:300]
