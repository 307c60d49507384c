"""Training flows: the baseline classifier and the medXGAN generator tied to a classifier.

Each trains into its ``out`` folder under the folder's lease (``flows.runtime.locked_stage``:
a second run training into the same folder waits, then reuses it) and within
``MEDXGAN_TRAIN_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runtime import locked_stage, on_run_start
from medxgan.config import GanConfig, field_default
from medxgan.storage import Store
from tasks.train import train_classifier_task, train_gan_task


def _locked(task: Any, out: str):
    """``task`` under the lease of the folder ``out`` (its parent as the store root)."""
    url = Store(out).url
    parent, _, name = url.rstrip("/").rpartition("/")
    return locked_stage(task, Store(parent or "/"), name)


@flow(name="train-classifier", on_running=[on_run_start])
def train_classifier_flow(cohort: str, out: str, config: dict[str, Any] | None = None) -> dict:
    """Train a baseline classifier on the cohort's train split into ``out`` (reused if done)."""
    return _locked(train_classifier_task, out)(cohort, out, config or {})


@flow(name="train-gan", on_running=[on_run_start])
def train_gan_flow(cohort: str, classifier: str, out: str, model: dict[str, Any] | None = None,
                   train: dict[str, Any] | None = None) -> dict:
    """Train (or resume) medXGAN for the classifier spec ``classifier`` into ``out``."""
    from medxgan.cohort.reader import Cohort

    size = (Cohort(cohort).image_size or (field_default(GanConfig, "image_size"),))[0]
    return _locked(train_gan_task, out)(cohort, classifier, out,
                                        {"image_size": size, **(model or {})}, train or {})
