"""The checkpoint store of training runs: blobs with sha256, pointers, RNG state, resume scan.

A checkpoint is one ``torch.save`` blob (tensors, dicts, lists and numbers only, so that it
loads with ``weights_only=True``) written under a step key (``checkpoints/step-XXXXXXX.pt``);
a JSON *pointer* (``checkpoints/latest.json``, ``best.json``) names a checkpoint's key, step
and the sha256 of its bytes, and is written only after the blob, so a pointer never names a
half-written file. Resume (:func:`resume_scan`) takes the pointer's checkpoint when its bytes
match, else falls back to older step files, newest first, skipping unreadable ones.

Used by the generator runs (:mod:`medxgan.generators.run` and the families under
:mod:`medxgan.generators`), the inversion encoder (:mod:`medxgan.generators.published.encoder`,
``encoder.pt``) and the baseline classifier (:mod:`medxgan.classifiers.train`,
``classifier.pt``).

Two kinds of hash (docs/design.md, "Reproducibility"):

- :func:`sha256` of a blob's *bytes* is an integrity check (pointers, ``encoder.json``): it
  tells a torn or swapped file from the one written, in the same store;
- :func:`state_dict_hash` / :func:`content_hash` are *identities* (generator and encoder
  hashes, stage keys, run ids): they hash tensors (name, dtype, shape, raw bytes, in sorted
  name order) and JSON values, never pickle/zip bytes, which change with the torch version
  and carry whatever else a blob holds (RNG states, URLs).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from medxgan.storage import Store

CKPT_FORMAT = 1


def to_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` into bytes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def sha256(blob: bytes) -> str:
    """Hex SHA-256 of ``blob``."""
    return hashlib.sha256(blob).hexdigest()


def state_dict_hash(sd: Mapping[str, Any]) -> str:
    """Content hash (hex SHA-256) of a state_dict: for every entry in sorted name order, its
    name, dtype, shape and raw little-endian bytes (on CPU, made contiguous). Nested mappings
    (optimizer states) are walked with dotted names; other values enter as their JSON. The
    same weights give the same hash on any machine, device and torch version."""
    h = hashlib.sha256()
    _update(h, "", sd)
    return h.hexdigest()


def _update(h: Any, name: str, v: Any) -> None:
    if isinstance(v, torch.Tensor):
        t = v.detach().to("cpu").contiguous()
        h.update(f"T\t{name}\t{str(t.dtype).removeprefix('torch.')}\t{list(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(v, Mapping):
        h.update(f"D\t{name}\t{len(v)}\n".encode())
        for k in sorted(v, key=str):
            _update(h, f"{name}.{k}" if name else str(k), v[k])
    elif isinstance(v, (list, tuple)) and any(isinstance(x, (torch.Tensor, Mapping)) for x in v):
        h.update(f"L\t{name}\t{len(v)}\n".encode())
        for i, x in enumerate(v):
            _update(h, f"{name}[{i}]", x)
    else:
        h.update(f"V\t{name}\t{json.dumps(v, sort_keys=True, default=str)}\n".encode())


def content_hash(**parts: Any) -> str:
    """Identity hash (hex SHA-256) of named parts: tensors and state_dicts by their content
    (:func:`state_dict_hash` rules), everything else (configs, input hashes) as sorted JSON."""
    return state_dict_hash(parts)


def seed_all(seed: int) -> None:
    """Seed torch's, numpy's and Python's global RNGs, so that two fresh runs with the same
    seed store the same RNG states (:func:`rng_state`: torch's and numpy's)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def write_blob(store: Store, key: str, obj: Any) -> tuple[bytes, str]:
    """Serialise ``obj`` and write it at ``key``; returns (its bytes, their sha256)."""
    blob = to_bytes(obj)
    store.write_bytes(key, blob)
    return blob, sha256(blob)


def pointer(step: int, key: str, digest: str, health: dict) -> dict[str, Any]:
    """The JSON record that names a checkpoint (``latest.json``, ``best.json``)."""
    return {"step": step, "key": key, "sha256": digest, "health": health}


def step_key(step: int, prefix: str = "checkpoints/") -> str:
    """``checkpoints/step-XXXXXXX.pt``."""
    return f"{prefix}step-{step:07d}.pt"


def key_step(key: str) -> int:
    """The step of a step key; -1 for any other name."""
    try:
        return int(key.rsplit("step-", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return -1


def read_json(store: Store, key: str) -> dict | None:
    """The JSON at ``key``; None when missing or unreadable (a torn pointer counts as none)."""
    try:
        return store.read_json(key)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def verified_bytes(store: Store, key: str, digest: str | None) -> bytes | None:
    """The bytes at ``key`` when the file exists and matches ``digest``, else None."""
    try:
        blob = store.read_bytes(key)
    except FileNotFoundError:
        return None
    return blob if sha256(blob) == digest else None


def load_blob(store: Store, key: str, digest: str | None = None,
              required: Iterable[str] = (), what: str = "checkpoint") -> tuple[dict, str]:
    """(checkpoint dict, sha256 of its bytes); raises on a corrupt file, one whose bytes do not
    match ``digest``, or one that lacks a ``required`` key (``not a <what> checkpoint``)."""
    blob = store.read_bytes(key)
    got = sha256(blob)
    if digest is not None and got != digest:
        raise ValueError(f"sha256 {got[:12]} != pointer's {digest[:12]}")
    obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    missing = set(required) - set(obj)
    if missing:
        raise ValueError(f"not a {what} checkpoint (missing {sorted(missing)})")
    return obj, got


def resume_scan(store: Store, required: Iterable[str] = (), what: str = "checkpoint",
                latest: str = "checkpoints/latest.json", prefix: str = "checkpoints/",
                stacklevel: int = 2) -> dict | None:
    """The newest readable checkpoint of a run, or None when there is none.

    Candidates: the checkpoint named by the ``latest`` pointer (checked against its sha256),
    then the step files under ``prefix`` older than it (all of them, newest first, when the
    pointer is missing or unreadable). An unreadable candidate is skipped with a warning;
    ``stacklevel`` counts from the function that calls this one, as if it warned itself.
    """
    level = stacklevel + 1
    ptr = read_json(store, latest)
    keys = sorted(store.list(prefix, suffix=".pt"), reverse=True)
    if ptr is None and keys:
        warnings.warn(f"{store.url}: {latest} missing or unreadable; "
                      "scanning checkpoint files", stacklevel=level)
    cands: list[tuple[str, str | None]] = []
    if ptr is not None:
        cands.append((ptr["key"], ptr.get("sha256")))
        keys = [k for k in keys if k != ptr["key"] and key_step(k) < ptr["step"]]
    cands += [(k, None) for k in keys]
    for key, digest in cands:
        try:
            obj, _ = load_blob(store, key, digest, required, what)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is skipped
            warnings.warn(f"checkpoint {store.url_of(key)} is unreadable "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
                          "falling back to the previous one", stacklevel=level)
            continue
        return obj
    if cands:
        warnings.warn(f"{store.url}: no readable checkpoint; starting from scratch",
                      stacklevel=level)
    return None


def rng_state() -> dict:
    """torch / numpy RNG states as tensors and lists (loadable with weights_only).

    Python's global ``random`` state is not stored: no training code draws from it, and other
    threads of the same process do, at moments no run controls (Prefect's service loops draw
    their poisson-jittered intervals from it, ``prefect.utilities.math``), so a stored copy
    made two fresh runs' checkpoints differ byte for byte. :func:`seed_all` still seeds it."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available():
        out["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(rng: dict) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only on as many devices)."""
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    if "python" in rng:  # checkpoints written before session 16 stored it
        v, internal, gauss_next = rng["python"]
        random.setstate((v, tuple(internal), gauss_next))
    if "cuda" in rng and torch.cuda.is_available() and \
            len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
