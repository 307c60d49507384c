"""The run folder contract every generator family writes (docs/design.md, "The medXGAN method").

A run folder holds ``checkpoints/step-XXXXXXX.pt`` (one ``torch.save`` of tensors, dicts and
numbers: loads with ``weights_only=True``; no URL, no module path), ``best.pt`` + ``best.json``
and ``checkpoints/latest.json`` (pointers: key, step, the blob's sha256, health and the
generator's ``content_hash``), ``config.json`` and ``manifest.json`` last. Every checkpoint
holds at least :data:`REQUIRED`; an image-conditioned family's also holds ``family``
(checkpoints without one are the ``published`` family's, which predate the key).

- :func:`generator_content_hash`: the identity of a generator checkpoint (run ids, stage keys);
- :func:`load_checkpoint`: the checkpoint a run's pointers name (``best`` or ``latest``);
- :func:`device`: the device ``GanTrainConfig.device`` resolves to.
"""

from __future__ import annotations

from typing import Literal

import torch

from medxgan.checkpoints import content_hash, load_blob, read_json
from medxgan.storage import Store

REQUIRED = ("step", "generator", "gan_config")  # what makes a blob a generator checkpoint


def generator_content_hash(obj: dict) -> str:
    """The identity of a generator checkpoint (a loaded checkpoint dict): content hash of
    G's state_dict, ``gan_config``, ``train_config``, step and ``cohort_hash`` (and of the
    inpaint family's amortised mask net where it has one: it decides x_neg too). Not of the
    file's bytes, nor of D, optimiser or RNG states."""
    extra = {"mask_net": obj["mask_net"]["state_dict"]} if obj.get("mask_net") else {}
    return content_hash(generator=obj["generator"], gan_config=obj["gan_config"],
                        train_config=obj.get("train_config"), step=int(obj["step"]),
                        cohort_hash=obj.get("cohort_hash"), **extra)


def load_ckpt(store: Store, key: str, sha256: str | None = None) -> tuple[dict, str]:
    """(checkpoint dict, sha256 of its bytes); raises on a corrupt or mismatching file, or
    one that is not a generator checkpoint."""
    return load_blob(store, key, sha256, REQUIRED, "generator")


def load_checkpoint(store: Store, which: Literal["best", "latest"] = "best"
                    ) -> tuple[dict, str, str, str]:
    """The checkpoint of a run: ``best.pt`` when ``which`` is ``best`` and ``best.json``
    exists, else the one ``checkpoints/latest.json`` names.

    Returns: (checkpoint dict, sha256 of its file, its key, ``best`` or ``latest``).

    Raises:
        FileNotFoundError: no checkpoint in the store.
    """
    key, source = None, which
    if which == "best" and read_json(store, "best.json") is not None:
        key = "best.pt"
    else:
        latest = read_json(store, "checkpoints/latest.json")
        if latest is not None:
            key, source = latest["key"], "latest"
    if key is None:
        raise FileNotFoundError(f"{store.url}: no generator checkpoint (best.json / "
                                "checkpoints/latest.json)")
    obj, digest = load_ckpt(store, key)
    return obj, digest, key, source


def device(name: str) -> torch.device:
    """``GanTrainConfig.device`` (``auto``, ``cpu``, ``cuda``) as a device: ``auto`` is CUDA
    when available."""
    return torch.device("cuda" if name == "cuda" or
                        (name == "auto" and torch.cuda.is_available()) else "cpu")
