"""Training flows: the baseline classifier and the medXGAN generator tied to a classifier."""

from __future__ import annotations

from typing import Any

from prefect import flow

from medxgan.config import GanConfig, field_default
from tasks.train import train_classifier_task, train_gan_task


@flow(name="train-classifier")
def train_classifier_flow(cohort: str, out: str, config: dict[str, Any] | None = None) -> dict:
    """Train a baseline classifier on the cohort's train split into ``out`` (reused if done)."""
    return train_classifier_task(cohort, out, config or {})


@flow(name="train-gan")
def train_gan_flow(cohort: str, classifier: str, out: str, model: dict[str, Any] | None = None,
                   train: dict[str, Any] | None = None) -> dict:
    """Train (or resume) medXGAN for the classifier spec ``classifier`` into ``out``."""
    from medxgan.cohort.reader import Cohort

    size = (Cohort(cohort).image_size or (field_default(GanConfig, "image_size"),))[0]
    return train_gan_task(cohort, classifier, out, {"image_size": size, **(model or {})},
                          train or {})
