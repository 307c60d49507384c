"""Helpers shared by tasks: loading models inside a worker (never passed between tasks)."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=4)
def classifier(spec_path: str):
    """The audited classifier of a spec YAML path/URL, loaded once per worker process."""
    from medxgan.models.classifier import load_classifier

    return load_classifier(spec_path)


@functools.lru_cache(maxsize=4)
def generator(gan_url: str):
    """(G, meta) of a trained medXGAN run, loaded once per worker process."""
    from medxgan.models.train_gan import load_generator

    return load_generator(gan_url)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
