"""Helpers shared by tasks: loading models inside a worker (never passed between tasks)."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=4)
def classifier(spec_path: str):
    """The audited classifier of a spec YAML path/URL, loaded once per worker process."""
    from medxgan.classifiers import load_classifier

    return load_classifier(spec_path)


@functools.lru_cache(maxsize=4)
def classifier_hash(spec_path: str) -> str:
    """The identity of the classifier of a spec (what stage keys, run ids and provenance
    use): a content hash of its weights (name, dtype, shape, bytes) and of the spec without
    its ``path``, so the same classifier stored at two places has one hash. A TorchScript
    file's code is part of the model, so its file sha256 stands for the weights there: the
    same file gives the same hash anywhere, but a re-export does not (``torch.jit.save``
    writes the absolute paths of the Python sources into its ``.debug_pkl`` records).
    ``classifier(spec).sha256`` stays the sha256 of the file's bytes (integrity)."""
    from medxgan.checkpoints import content_hash, state_dict_hash

    f = classifier(spec_path)
    weights = f.sha256 if f.spec.kind == "torchscript" else state_dict_hash(f.model.state_dict())
    return content_hash(kind=f.spec.kind, weights=weights,
                        spec=f.spec.model_dump(mode="json", exclude={"path"}))


@functools.lru_cache(maxsize=4)
def generator(gan_url: str):
    """(G, meta) of a trained medXGAN run, loaded once per worker process."""
    from medxgan.generators import load_generator

    return load_generator(gan_url)


def generator_family(gan_url: str):
    """The :class:`~medxgan.generators.base.GeneratorFamily` of the run at ``gan_url``."""
    from medxgan.generators import family_of

    return family_of(generator(gan_url)[0])


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
