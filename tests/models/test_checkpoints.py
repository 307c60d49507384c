"""The checkpoint store (medxgan.models.checkpoints): blobs with sha256, pointers, the resume
scan's fallbacks and RNG state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medxgan.models.checkpoints import (key_step, load_blob, pointer, read_json, resume_scan,
                                        rng_state, set_rng_state, step_key, verified_bytes,
                                        write_blob)
from medxgan.storage import Store


def _write(store: Store, step: int, latest: bool = True) -> str:
    key = step_key(step)
    _, digest = write_blob(store, key, {"step": step, "w": torch.full((2,), float(step))})
    if latest:
        store.write_json("checkpoints/latest.json", pointer(step, key, digest, {}))
    return digest


def test_blob_round_trip_and_sha256_check(tmp_path):
    store = Store(str(tmp_path))
    digest = _write(store, 3)
    obj, got = load_blob(store, step_key(3), digest, required=("step",))
    assert got == digest and obj["step"] == 3 and key_step(step_key(3)) == 3
    assert read_json(store, "checkpoints/latest.json")["sha256"] == digest
    assert verified_bytes(store, step_key(3), digest) is not None
    assert verified_bytes(store, step_key(3), "0" * 64) is None
    assert verified_bytes(store, "missing.pt", digest) is None
    with pytest.raises(ValueError, match="pointer's"):
        load_blob(store, step_key(3), "0" * 64)
    with pytest.raises(ValueError, match="not a generator checkpoint"):
        load_blob(store, step_key(3), required=("generator",), what="generator")


def test_resume_scan_falls_back_to_older_readable_checkpoints(tmp_path):
    store = Store(str(tmp_path))
    assert resume_scan(store) is None                       # nothing: no warning, None
    _write(store, 2)
    _write(store, 4)
    assert resume_scan(store)["step"] == 4
    store.write_bytes(step_key(4), b"torn")                 # pointer's file corrupt
    with pytest.warns(UserWarning, match="unreadable"):
        assert resume_scan(store)["step"] == 2
    store.write_bytes("checkpoints/latest.json", b"{")      # torn pointer: scan the files
    with pytest.warns(UserWarning) as caught:
        assert resume_scan(store)["step"] == 2
    assert [("scanning" in str(w.message), "falling back" in str(w.message)) for w in caught] \
        == [(True, False), (False, True)]
    store.write_bytes(step_key(2), b"torn")
    with pytest.warns(UserWarning) as caught:
        assert resume_scan(store) is None
    assert "starting from scratch" in str(caught[-1].message)


def test_rng_state_round_trip():
    state = rng_state()
    a = (torch.rand(3), np.random.rand(), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
