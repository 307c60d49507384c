"""The cohort format: PNG-in-Parquet images, boxes, quarantine, manifest (docs/design.md)."""

from medxgan.cohort.reader import Cohort, CohortBatch
from medxgan.cohort.writer import Box, CohortImage, CohortWriter

__all__ = ["Box", "Cohort", "CohortBatch", "CohortImage", "CohortWriter"]
