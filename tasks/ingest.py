"""Prefect tasks of the ingest stage: thin wrappers around ``medxgan.ingest`` and ``medxgan.cohort``.

Tasks exchange URLs, small records and summaries, never pixels or modules. Each is limited to
``MEDXGAN_TASK_TIMEOUT_S`` (the ingest flow passes its own limit to the chunks).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.catalogue import FILE_SOURCES, PHANTOM_SOURCES, SOURCES  # noqa: F401  (re-exported)
from medxgan.cohort.writer import PartSummary, finalize_cohort, quarantine_row, write_part
from medxgan.config import CohortSection, field_default
from medxgan.settings import get_settings
from medxgan.storage import Store

PSEUDONYMISE_ENV = "MEDXGAN_PSEUDONYMISE_KEY"


def list_source_records(source: str, input_path: str, pseudonymise: bool | None = None,
                        **opts: Any) -> tuple[list, list[dict]]:
    """Records and table-level quarantine rows of a file source, duplicates removed.

    Args:
        pseudonymise: True: image ids become keyed hashes with the key of env
            ``MEDXGAN_PSEUDONYMISE_KEY`` (a clear error if unset); False: never; None: only
            when that variable is set. The key is read here and never logged or returned.
    """
    import os

    from medxgan.ingest import ADAPTERS, process

    adapter = ADAPTERS[source]
    key = os.environ.get(PSEUDONYMISE_ENV) if pseudonymise is not False else None
    if pseudonymise and not key:
        raise ValueError(f"pseudonymise is true but {PSEUDONYMISE_ENV} is not set (or empty)")
    if key:
        opts["pseudonymise_key"] = key
    records, quarantine = adapter.list_records(input_path, **opts)
    unique, dup_rows = process.dedupe(records)
    return unique, quarantine + dup_rows


def source_input_root(source: str, input_path: str) -> str:
    """The folder that a file source's relative paths start from."""
    from medxgan.ingest import ADAPTERS

    return ADAPTERS[source].input_root(input_path)


@task(name="ingest-chunk", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
def ingest_chunk(out_url: str, part_index: int, source: str, *, records: list | None = None,
                 indices: tuple[int, int] | None = None, input_root: str | None = None,
                 size: int = field_default(CohortSection, "size"), bits: int | None = None,
                 phantom: dict | None = None,
                 max_pixels: int = field_default(CohortSection, "max_pixels")) -> dict:
    """Load, validate and write one chunk as ``images/part-<part_index>.parquet``.

    Phantom sources generate ``indices = (start, stop)``; file sources load ``records``.
    Returns the part's summary as a dict (ids, labels, splits, digests, boxes, quarantine).
    """
    store = Store(out_url)
    if source in PHANTOM_SOURCES:
        from medxgan.phantoms import phantom_image

        start, stop = indices
        images = [phantom_image(source, i, size=size, **(phantom or {})) for i in range(start, stop)]
        quarantine: list[dict] = []
    else:
        from medxgan.ingest.process import process_records

        images, quarantine = process_records(records or [], input_root=input_root, size=size,
                                             bits=bits, max_pixels=max_pixels)
    return dataclasses.asdict(write_part(store, part_index, images, source, quarantine))


@task(name="finalize-cohort", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
def finalize(out_url: str, parts: list[dict], source: str, quarantine: list[dict],
             extra: dict) -> dict:
    """Write boxes, quarantine and the manifest (last); returns the manifest."""
    summaries = [PartSummary(**{**p, "shape": tuple(p["shape"]) if p["shape"] else None})
                 for p in parts]
    return finalize_cohort(Store(out_url), summaries, source, quarantine, extra)


__all__ = ["ingest_chunk", "finalize", "list_source_records", "quarantine_row", "SOURCES"]
