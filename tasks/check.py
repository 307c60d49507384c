"""Prefect task of the classifier check (``medxgan check-classifier``), run first by the audit
flow: a classifier that cannot be audited on the cohort (a finding not among its outputs, a
constant chosen output, a failed ONNX check) fails the audit with one line before any
training or explanation. Limited to ``MEDXGAN_TASK_TIMEOUT_S`` (a stuck read of the weights)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.settings import get_settings

#: images the audit's check runs (the ``check-classifier`` command runs the whole split)
AUDIT_CHECK_IMAGES = 256


@task(name="check-classifier", cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
def check_classifier_task(cohort_url: str, spec: str, split: str | None = "test",
                          max_images: int | None = AUDIT_CHECK_IMAGES) -> dict:
    """:func:`medxgan.classifiers.check.check_classifier` of a spec on a cohort split (the
    classifier loaded once per worker, :func:`tasks.common.classifier`)."""
    from medxgan.classifiers.check import check_classifier
    from tasks.common import classifier

    return check_classifier(classifier(spec), cohort_url, split, max_images=max_images)
