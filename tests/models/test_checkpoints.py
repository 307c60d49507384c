"""The checkpoint store (medxgan.checkpoints): blobs with sha256, pointers, the resume
scan's fallbacks, RNG state round trips, content hashes and seeding."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medxgan.checkpoints import (content_hash, key_step, load_blob, pointer, read_json, resume_scan,
                                 rng_state, seed_all, set_rng_state, state_dict_hash, step_key,
                                 to_bytes, verified_bytes, write_blob)
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
    a = (torch.rand(3), np.random.rand())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert "python" not in state        # other threads draw from it (rng_state's docstring)


def test_set_rng_state_restores_an_older_checkpoint_s_python_state():
    random.seed(7)
    old = {**rng_state(), "python": [*random.getstate()[:1], list(random.getstate()[1]),
                                      random.getstate()[2]]}
    a = random.random()
    set_rng_state(old)
    assert random.random() == a


def test_state_dict_hash_is_of_content_not_of_order_or_file(tmp_path):
    torch.manual_seed(0)
    sd = {"b": torch.randn(3, 2), "a": torch.arange(4), "n": torch.tensor(5)}
    h = state_dict_hash(sd)
    assert len(h) == 64
    assert state_dict_hash(dict(reversed(list(sd.items())))) == h      # names in sorted order
    assert state_dict_hash({k: v.clone() for k, v in sd.items()}) == h
    assert state_dict_hash({**sd, "b": sd["b"].t().contiguous().t()}) == h  # layout ignored
    assert state_dict_hash({**sd, "b": sd["b"].reshape(2, 3)}) != h     # shape counts
    assert state_dict_hash({**sd, "a": sd["a"].int()}) != h             # dtype counts
    b2 = sd["b"].clone()
    b2[0, 0] = torch.nextafter(b2[0, 0], torch.tensor(10.0))
    assert state_dict_hash({**sd, "b": b2}) != h                        # one ulp counts
    assert state_dict_hash({**sd, "c": torch.zeros(0)}) != h
    assert state_dict_hash({"x": torch.zeros(2, dtype=torch.bfloat16)}) != \
        state_dict_hash({"x": torch.zeros(2, dtype=torch.float16)})
    # two files with different bytes (another URL inside), one content hash
    a, b = Store(str(tmp_path / "a")), Store(str(tmp_path / "elsewhere"))
    _, da = write_blob(a, "m.pt", {"w": sd, "url": a.url})
    _, db = write_blob(b, "m.pt", {"w": sd, "url": b.url})
    assert da != db
    wa, _ = load_blob(a, "m.pt", da)
    wb, _ = load_blob(b, "m.pt", db)
    assert state_dict_hash(wa["w"]) == state_dict_hash(wb["w"]) == h


def test_content_hash_of_weights_and_configs():
    w = {"k": torch.ones(2)}
    h = content_hash(weights=w, config={"a": 1, "b": [1, 2]}, cohort="c0")
    assert h == content_hash(cohort="c0", config={"b": [1, 2], "a": 1}, weights=w)
    assert h != content_hash(weights=w, config={"a": 2, "b": [1, 2]}, cohort="c0")
    assert h != content_hash(weights=w, config={"a": 1, "b": [1, 2]}, cohort="c1")
    assert h != content_hash(weights={"k": torch.ones(2) * 2}, config={"a": 1, "b": [1, 2]},
                             cohort="c0")


def test_seed_all_makes_the_stored_rng_state_reproducible():
    def fresh(noise: int) -> bytes:
        random.seed(noise)
        np.random.seed(noise)
        torch.manual_seed(noise)
        random.random(), np.random.rand(), torch.rand(1)
        seed_all(7)
        return to_bytes(rng_state())

    assert fresh(1) == fresh(2)
