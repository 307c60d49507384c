"""Fixtures for the models tests: a tiny synthetic cohort whose positives carry a bright blob
inside their box, and a tiny frozen classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxgan.cohort.writer import Box, CohortImage, CohortWriter
from medxgan.classifiers import AuditedClassifier
from medxgan.config.classifier import ClassifierSpec
from medxgan.classifiers.small_cnn import SmallCNN
from medxgan.storage import Store

SIZE = 32


def blob_image(rng: np.random.Generator, positive: bool, size: int = SIZE
               ) -> tuple[np.ndarray, list[Box]]:
    """(size, size) uint8: smooth background + noise; positives add a bright 6x6 square."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    bg = 0.3 + 0.1 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 1.5) + rng.uniform()))
    img = bg + 0.03 * rng.standard_normal((size, size))
    boxes = []
    if positive:
        x0, y0 = (int(v) for v in rng.integers(2, size - 8, 2))
        img[y0:y0 + 6, x0:x0 + 6] += 0.5
        boxes.append(Box(x0, y0, x0 + 6, y0 + 6, "blob"))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), boxes


def write_blob_cohort(url: str, n: int = 160, seed: int = 0, size: int = SIZE) -> str:
    rng = np.random.default_rng(seed)
    w = CohortWriter(Store(url), source="synthetic-blobs")
    for i in range(n):
        pos = i % 2 == 1
        px, boxes = blob_image(rng, pos, size)
        w.add(CohortImage(f"img{i:04d}", int(pos), px, f"synthetic:{i}", boxes))
    w.close()
    return url


@pytest.fixture(scope="session")
def blob_cohort(tmp_path_factory) -> str:
    """URL of a 160-image 32 px cohort (half positive, one box each), ~70/10/20 split."""
    return write_blob_cohort(str(tmp_path_factory.mktemp("cohort") / "blobs"))


@pytest.fixture
def tiny_classifier() -> AuditedClassifier:
    """A seeded, untrained tiny CNN as an audited classifier at 32 px."""
    torch.manual_seed(0)
    net = SmallCNN(1, 1, widths=(4, 8, 8))
    spec = ClassifierSpec(kind="small_cnn", path="memory://tiny", input_size=SIZE)
    return AuditedClassifier(net.eval(), spec, sha256="0" * 64)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
