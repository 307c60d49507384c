"""Argument groups shared by the benchmarks (argparse parent parsers, ``add_help=False``).

    ap = argparse.ArgumentParser(parents=[gan_flags(), classifier_flags()])
"""

from __future__ import annotations

import argparse


def gan_flags(*, variant: bool = True, losses: bool = True) -> argparse.ArgumentParser:
    """medXGAN model and loss flags: ``--generator``, ``--discriminator`` (with ``variant``),
    ``--g-width``, ``--d-width``, ``--lambda-d-cls``, ``--lambda-min-change`` (with
    ``losses``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("generator (medxgan.generators.published: gan / train)")
    if variant:
        g.add_argument("--generator", default="published", choices=["published", "local"],
                       help="generator architecture")
        g.add_argument("--discriminator", default="unconditional",
                       choices=["unconditional", "projection"], help="discriminator kind")
    g.add_argument("--g-width", type=float, default=0.25, help="generator width multiplier")
    g.add_argument("--d-width", type=float, default=0.5, help="discriminator width multiplier")
    if losses:
        g.add_argument("--lambda-d-cls", type=float, default=0.0,
                       help="projection D: BCE weight of its class term on real images")
        g.add_argument("--lambda-min-change", type=float, default=0.0,
                       help="minimal-change penalty weight")
    return p


def classifier_flags(*, train: bool = True, folder: bool = False,
                     folder_default: str | None = None,
                     folder_help: str = "folder of an already trained classifier (spec.yaml)"
                     ) -> argparse.ArgumentParser:
    """Classifier flags: ``--arch`` and ``--epochs`` (with ``train``; ``--epochs`` defaults to
    None, the benchmark's own default), ``--classifier`` (with ``folder``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("classifier (medxgan.classifiers.train / classifier)")
    if train:
        g.add_argument("--arch", default="small_cnn2", help="classifier architecture")
        g.add_argument("--epochs", type=int, default=None,
                       help="classifier training epochs (default: the benchmark's)")
    if folder:
        g.add_argument("--classifier", default=folder_default, help=folder_help)
    return p


def device_flags(*, threads: int = 1) -> argparse.ArgumentParser:
    """``--device`` (cpu / cuda) and ``--threads`` (torch CPU threads)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="device of training and explanation")
    p.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    return p
