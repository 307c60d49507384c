"""Prefect tasks of the training stages. Outputs are content-addressed folders in the store:
a folder whose ``manifest.json`` exists is complete and is reused as it is.

Each task's default time limit is ``MEDXGAN_TRAIN_TIMEOUT_S`` (read when the module is
imported); the flows call them through ``flows.runtime.locked_stage``, which also applies an
audit's ``runtime.train_timeout_s`` and the stage folder's lease."""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.settings import get_settings
from medxgan.storage import Store
from tasks.progress import Progress

log = logging.getLogger("medxgan.train")


@task(name="train-classifier", cache_policy=NO_CACHE, tags=["GPU"],
      timeout_seconds=get_settings().train_timeout_s)
def train_classifier_task(cohort_url: str, out_url: str, config: dict[str, Any]) -> dict:
    """Train the baseline classifier into ``out_url`` (reused when already complete).

    Returns: ``{"url", "spec", "metrics", "reused"}``; ``spec`` is the spec YAML URL.
    """
    from medxgan.classifiers.train import train_classifier
    from medxgan.config.models import ClassifierTrainConfig

    store = Store(out_url)
    done = store.read_manifest()
    if done is not None:
        return {**done, "reused": True}
    cfg = ClassifierTrainConfig.model_validate(config)
    bar = Progress(cfg.epochs, "train classifier (epochs)")
    metrics = train_classifier(cohort_url, store, cfg, progress=lambda e, m: bar.update())
    bar.close()
    record = {"url": store.url, "spec": store.url_of("spec.yaml"), "metrics": metrics,
              "sha256": metrics.get("sha256")}
    store.write_manifest(record)
    return {**record, "reused": False}


@task(name="train-gan", cache_policy=NO_CACHE, tags=["GPU"],
      timeout_seconds=get_settings().train_timeout_s)
def train_gan_task(cohort_url: str, spec: str, out_url: str, gan_config: dict[str, Any],
                   train_config: dict[str, Any]) -> dict:
    """Train (or resume) the medXGAN generator for the classifier of ``spec`` (the family of
    ``gan_config``: ``published`` GAN, ``inpaint`` in-filler or ``residual`` map generator,
    same run folder contract).

    A finished run (its manifest exists) is reused; an interrupted one resumes from its
    latest complete checkpoint. Returns the run summary plus ``url`` and ``reused``.
    """
    from medxgan.config.models import GanConfig, GanTrainConfig
    from medxgan.generators import family, train_gan
    from tasks.common import classifier

    store = Store(out_url)
    done = store.read_manifest()
    if done is not None:
        return {**done, "url": store.url, "reused": True}
    gc = GanConfig.model_validate(gan_config)
    tc = GanTrainConfig.model_validate(train_config)
    fam = family(gc.family)
    total = fam.planned_steps(tc)  # a seconds-only budget: unknown (1)
    bar = Progress(total, fam.progress)
    last = {"step": 0}

    def _progress(step: int, losses: dict) -> None:
        if step > last["step"] and step <= total:
            bar.update(step - last["step"])
            last["step"] = step

    summary = train_gan(cohort_url, classifier(spec), store, gc, tc, progress=_progress)
    bar.close()
    return {**summary, "url": store.url, "reused": False}
