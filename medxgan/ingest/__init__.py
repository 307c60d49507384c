"""Ingestion of external datasets into the cohort format.

Adapters (:mod:`~medxgan.ingest.rsna`, :mod:`~medxgan.ingest.nih`, :mod:`~medxgan.ingest.folder`)
turn a source layout into :class:`~medxgan.ingest.records.SourceRecord` s plus table-level
quarantine rows; :func:`~medxgan.ingest.process.process_records` loads, validates, resizes
and quantises them into :class:`~medxgan.cohort.writer.CohortImage` s (bad records become
quarantine rows, never exceptions).
"""

from medxgan.ingest.records import BadRecord, RawBox, SourceRecord, pseudonymise_id
from medxgan.ingest import folder, nih, rsna  # noqa: E402  (adapters import records first)

#: ``--source`` name -> adapter module (each has ``list_records`` and ``input_root``).
ADAPTERS = {"rsna": rsna, "nih": nih, "folder": folder}

__all__ = ["ADAPTERS", "BadRecord", "RawBox", "SourceRecord", "pseudonymise_id"]
