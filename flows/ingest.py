"""The ingest flow: any supported source -> one normalised cohort in object storage.

Chunks of records are processed in parallel (bounded by ``workers``) and each writes its own
image part; the finaliser writes boxes, quarantine and, last, the manifest. Every input record
ends in the cohort or in quarantine.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import TASK_KNOB, limits, named_timeouts, on_run_start
from medxgan.catalogue import PHANTOM_SOURCES, SOURCES
from medxgan.config import INGEST_CHUNK_SIZE, CohortSection, field_default
from medxgan.storage import Store
from tasks.ingest import finalize, ingest_chunk, list_source_records, source_input_root
from tasks.progress import Progress


def _d(name: str):
    """The audit config's default of ``cohort.<name>`` (each default is written once)."""
    return field_default(CohortSection, name)


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False,
      on_running=[on_run_start])
def ingest_flow(source: str, out: str, input: str | None = None,
                size: int = _d("size"), n: int = _d("n"),
                seed: int = _d("seed"), prevalence: float = _d("prevalence"),
                shortcut_rate: float = _d("shortcut_rate"), shortcut: str = _d("shortcut"),
                shortcut_negative_rate: float | None = _d("shortcut_negative_rate"),
                lesion_scale: float = _d("lesion_scale"),
                finding: str | None = _d("finding"),
                chunk_size: int = INGEST_CHUNK_SIZE, pseudonymise: bool | None = None,
                max_pixels: int = _d("max_pixels"), task_timeout_s: float | None = None) -> dict:
    """Ingest ``source`` into the cohort at ``out``; returns the manifest.

    Args:
        source: one of ``medxgan.catalogue.SOURCES`` (``phantom-cxr``, ``phantom-brain``,
            ``rsna``, ``nih``, ``folder``).
        out: cohort URL (local path or ``s3://``).
        input: input root (rsna, nih) or CSV / COCO JSON file (folder).
        size: square side of stored images in pixels.
        n, seed, prevalence, shortcut_rate, shortcut, shortcut_negative_rate, lesion_scale:
            phantom options (``medxgan.phantoms.phantom_image``).
        finding: the positive finding for ``nih`` (e.g. ``Pneumonia``) or ``folder`` COCO input.
        chunk_size: images per part / task.
        pseudonymise: file sources: True makes image ids keyed hashes (key from env
            ``MEDXGAN_PSEUDONYMISE_KEY``, never a parameter, so it is never logged or stored);
            False never; None only when that variable is set.
        max_pixels: file sources: records with larger images are quarantined.
        task_timeout_s: the limit (s) of each chunk's task (None: ``MEDXGAN_TASK_TIMEOUT_S``);
            a chunk past it (a stuck store) fails the flow with one line.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    Store(out).remove_temporaries()  # half-written objects of a killed earlier attempt
    seconds = task_timeout_s or limits().task_timeout_s
    chunk = ingest_chunk.with_options(timeout_seconds=seconds)
    futures, quarantine, extra = [], [], {"size": size}
    if source in PHANTOM_SOURCES:
        phantom = {"seed": seed, "prevalence": prevalence, "shortcut_rate": shortcut_rate,
                   "shortcut": shortcut, "shortcut_negative_rate": shortcut_negative_rate,
                   "lesion_scale": lesion_scale}
        extra["phantom"] = {"n": n, **phantom}
        for k, start in enumerate(range(0, n, chunk_size)):
            futures.append(chunk.submit(out, k, source, indices=(start, min(n, start + chunk_size)),
                                               size=size, phantom=phantom))
    else:
        if not input:
            raise ValueError(f"--input is required for source {source!r}")
        opts: dict = {}
        if finding and source == "nih":
            opts["finding"] = finding
        elif finding and source == "folder":
            opts["category" if input.lower().endswith(".json") else "finding"] = finding
        records, quarantine = list_source_records(source, input, pseudonymise, **opts)
        root = source_input_root(source, input)
        extra["input_records"] = len(records) + len(quarantine)
        for k, start in enumerate(range(0, len(records), chunk_size)):
            futures.append(chunk.submit(out, k, source, records=records[start:start + chunk_size],
                                               input_root=root, size=size,
                                               max_pixels=max_pixels))
    bar = Progress(len(futures), f"ingest {source}")
    parts = []
    for k, fut in enumerate(futures):
        with named_timeouts(f"ingest chunk {k} into {out}", seconds, TASK_KNOB):
            parts.append(fut.result())  # raises if a chunk failed: the flow fails, no manifest
        bar.update()
    bar.close()
    return finalize(out, parts, source, quarantine, extra)
