"""Storage: the same cases on a local folder and on a live rclone S3 server."""

from __future__ import annotations

import pyarrow as pa
import pytest

from medxgan.settings import Settings
from medxgan.storage import Store, StorageError, split_url


def test_bytes_roundtrip_list_exists_delete(any_store_url):
    s = Store(any_store_url)
    assert s.list() == []
    s.write_bytes("a/b.bin", b"\x00\x01payload")
    s.write_bytes("a/c.txt", b"text")
    s.write_bytes("z.txt", b"z")
    assert s.read_bytes("a/b.bin") == b"\x00\x01payload"
    assert s.list() == ["a/b.bin", "a/c.txt", "z.txt"]
    assert s.list("a/", suffix=".txt") == ["a/c.txt"]
    assert s.exists("a/b.bin") and not s.exists("a/missing")
    s.write_bytes("a/b.bin", b"new")  # overwrite is whole
    assert s.read_bytes("a/b.bin") == b"new"
    s.delete("a")
    assert s.list() == ["z.txt"]
    s.delete("never-there")  # not an error
    with pytest.raises(FileNotFoundError):
        s.read_bytes("a/b.bin")


def test_parquet_json_and_batches(any_store_url):
    s = Store(any_store_url)
    t = pa.table({"x": list(range(1000)), "y": [str(i) for i in range(1000)]})
    s.write_parquet("t.parquet", t)
    assert s.read_parquet("t.parquet").equals(t)
    assert s.read_parquet("t.parquet", columns=["y"]).column_names == ["y"]
    got = pa.Table.from_batches(list(s.iter_parquet_batches("t.parquet", batch_size=128)))
    assert got.equals(t)
    s.write_json("meta.json", {"a": [1, 2], "b": "c"})
    assert s.read_json("meta.json") == {"a": [1, 2], "b": "c"}


def test_manifest_last(any_store_url):
    s = Store(any_store_url)
    s.write_bytes("ds/data.bin", b"1")
    assert s.read_manifest("ds") is None
    with pytest.raises(StorageError, match="no manifest.json"):
        s.require_manifest("ds")
    s.write_manifest({"n": 1}, "ds")
    assert s.require_manifest("ds") == {"n": 1}
    assert s.child("ds").require_manifest() == {"n": 1}


def test_key_cannot_escape_root(tmp_path):
    s = Store(str(tmp_path / "root"))
    with pytest.raises(StorageError, match="escapes"):
        s.write_bytes("../outside.txt", b"x")
    assert not (tmp_path / "outside.txt").exists()


def test_local_write_leaves_no_temporary_files(tmp_path):
    s = Store(f"file://{tmp_path}/st")
    s.write_bytes("k/v.bin", b"abc")
    assert sorted(p.name for p in (tmp_path / "st" / "k").iterdir()) == ["v.bin"]


def test_split_url():
    assert split_url("s3://b/p/") == ("s3", "b/p")
    assert split_url("file:///x/y") == ("file", "/x/y")
    assert split_url("rel")[1].endswith("/rel")


def test_wrong_credentials_fail_fast_without_leaking_secret(s3_server, monkeypatch):
    secret = "definitely-wrong-secret-value"
    st = Settings(s3_endpoint=s3_server.endpoint, s3_key=s3_server.key, s3_secret=secret,
                  io_retries=3, io_backoff_s=0.01)
    s = Store("s3://medxgan/creds", st)
    with pytest.raises(StorageError) as ei:
        s.write_bytes("x.bin", b"1")
    assert secret not in str(ei.value)
    assert "s3://medxgan/creds/x.bin" in str(ei.value)


def test_unreachable_store_is_a_clear_error():
    st = Settings(s3_endpoint="http://127.0.0.1:9", s3_key="k", s3_secret="s",
                  io_retries=2, io_backoff_s=0.01)
    with pytest.raises(StorageError, match="s3://medxgan/x/y.bin"):
        Store("s3://medxgan/x", st).write_bytes("y.bin", b"1")


def test_remove_temporaries_clears_what_a_killed_writer_left(tmp_path):
    s = Store(str(tmp_path / "st"))
    s.write_bytes("a/b.bin", b"1")
    (tmp_path / "st" / "a" / "b.bin.tmp-deadbeef").write_bytes(b"half")
    (tmp_path / "st" / "c.parquet.tmp-0123").write_bytes(b"half")
    assert s.list() == ["a/b.bin"]  # readers never see them
    assert s.remove_temporaries() == 2
    assert sorted(p.name for p in (tmp_path / "st").rglob("*") if p.is_file()) == ["b.bin"]
    assert s.read_bytes("a/b.bin") == b"1"
