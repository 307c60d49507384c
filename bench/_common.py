"""Helpers shared by the bench/ modules: the product's classifier wrapper around a SmallCNN,
phantom cohorts written to a store, peak RSS, and results JSON with the environment it was
measured in."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from medxgan.classifiers import AuditedClassifier

RESULTS = Path(__file__).parent / "results"


def as_classifier(net: nn.Module, size: int) -> AuditedClassifier:
    """A one-logit SmallCNN as the audited classifier, exactly as ``load_classifier`` wraps a
    ``small_cnn`` spec (unit normalisation, input ``size`` px, threshold 0.5; Grad-CAM at
    ``default_target_layer``). The wrapper freezes the network and keeps it in eval mode."""
    from medxgan.config.classifier import ClassifierSpec

    spec = ClassifierSpec(kind="small_cnn", path="<in memory>", input_size=size)
    return AuditedClassifier(net.eval(), spec)


def random_classifier(seed: int = 0, size: int = 64) -> AuditedClassifier:
    """A seeded random-init SmallCNN (speed benchmarks only: its maps mean nothing)."""
    from medxgan.classifiers.small_cnn import SmallCNN
    torch.manual_seed(seed)
    return as_classifier(SmallCNN(), size)


def write_phantom_cohort(url: str, kind: str, n: int, *, size: int, seed: int = 0,
                         shortcut_rate: float = 0.0, part_size: int = 512, **options) -> dict:
    """Render ``n`` phantoms and write them as a cohort at ``url``; returns the manifest
    (``options``: ``phantom_image``'s ``shortcut``, ``shortcut_negative_rate``,
    ``lesion_scale``, recorded in the manifest's ``phantom`` record like the ingest flow's)."""
    from medxgan import phantoms
    from medxgan.cohort import CohortWriter
    from medxgan.storage import Store
    w = CohortWriter(Store(url), source=f"{kind}-phantom", part_size=part_size)
    for img in phantoms.generate(kind, n, size=size, seed=seed, shortcut_rate=shortcut_rate,
                                 **options):
        w.add(img)
    extra = {"phantom": {"n": n, "seed": seed, "prevalence": 0.5,
                         "shortcut_rate": shortcut_rate, **options}} if options else None
    return w.close(extra)


def phantom_cohort(url: str, kind: str, n: int, *, size: int, seed: int = 0) -> dict:
    """The phantom cohort at ``url`` (written by :func:`write_phantom_cohort` unless a finished
    one is already there, so a rerun of a bench reuses it); returns its manifest."""
    from medxgan.storage import Store

    return Store(url).read_manifest() or write_phantom_cohort(url, kind, n, size=size, seed=seed)


def gan_variant(generator: str = "published", discriminator: str = "unconditional", *,
                size: int = 64, g_width: float = 0.25, d_width: float = 0.5,
                local_frame: int | None = None):
    """The benches' GanConfig of a published-family generator variant: d_a 100, d_p 10 (the prototype's), and for
    the ``local`` generator resize-conv upsampling and a residual-free border of
    ``local_frame`` px (default 6 at 64 px and above, 0 below); the published generator keeps
    its transposed convolutions and no frame."""
    from medxgan.config.models import GanConfig
    local = generator == "local"
    if local_frame is None:
        local_frame = 6 if size >= 64 else 0
    return GanConfig(family="published", image_size=size, d_a=100, d_p=10, g_width=g_width,
                     d_width=d_width,
                     generator=generator, discriminator=discriminator,
                     upsample="resize_conv" if local else "convtranspose",
                     local_frame=local_frame if local else 0)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def env() -> dict:
    """Where the figures were measured."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg_at_end": load,
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_results(path: Path, obj: dict) -> None:
    """Write ``obj`` (+ ``env``) as indented JSON at ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**obj, "env": env()}, indent=1, default=str) + "\n")


def phantom_tensors(kind: str, n: int, *, size: int, seed: int = 0, shortcut_rate: float = 0.0,
                    **options) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` phantoms in memory: images (n, 1, S, S) float32 in [0, 1], labels (n,) int64
    (``options``: ``phantom_image``'s other keyword arguments)."""
    import numpy as np

    from medxgan import phantoms
    imgs = list(phantoms.generate(kind, n, size=size, seed=seed, shortcut_rate=shortcut_rate,
                                  **options))
    x = torch.from_numpy(np.stack([i.pixels for i in imgs]).astype(np.float32) / 255.0)[:, None]
    return x, torch.tensor([i.label for i in imgs], dtype=torch.int64)


def quick_classifier(x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3,
                     seed: int = 0) -> AuditedClassifier:
    """A SmallCNN trained for a few epochs (Adam + OneCycle, batch 64, flips), wrapped by
    :func:`as_classifier` (its ``model`` is the SmallCNN).

    For speed benchmarks that need non-trivial maps (a random-init CNN gives all-zero
    Grad-CAM maps for ~30 % of images), not for quality tables.
    """
    from medxgan.classifiers.small_cnn import SmallCNN
    torch.manual_seed(seed)
    net = SmallCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = max(1, epochs * ((len(x) + 63) // 64))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), 64):
            i = perm[s:s + 64]
            flip = torch.rand(len(i), 1, 1, 1, generator=g) < 0.5
            xb = torch.where(flip, x[i].flip(-1), x[i])  # (b, 1, H, W)
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], y[i].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return as_classifier(net, x.shape[-1])
