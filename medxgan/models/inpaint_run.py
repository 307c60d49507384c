"""Deprecated: the image-conditioned families' run is :mod:`medxgan.generators.image_run`; each
family's own part is :mod:`medxgan.generators.inpaint.family` /
:mod:`medxgan.generators.residual.family`. This path works until medxgan-audit 0.2.0, with a
DeprecationWarning.
"""

from medxgan._deprecated import moved


def _generator_from_checkpoint(obj: dict):
    """The generator of a loaded image-conditioned checkpoint dict (CPU, eval mode)."""
    from medxgan.generators.registry import family_of_checkpoint

    return family_of_checkpoint(obj).load(obj)[0]


def _train_image_run(cohort_url, classifier, store, gc, tc, progress=None):
    """Train (or reuse) an image-conditioned family's run (``gc.family``)."""
    from medxgan.generators.stage import train_gan

    return train_gan(cohort_url, classifier, store, gc, tc, progress)


__getattr__ = moved(__name__, "medxgan.generators.image_run", extra={
    "FAMILIES": (("inpaint", "residual"), "medxgan.generators.registry.names()"),
    "generator_from_checkpoint": (
        _generator_from_checkpoint,
        "medxgan.generators.registry.family_of_checkpoint(obj).load(obj)[0]"),
    "train_image_run": (_train_image_run, "medxgan.generators.train_gan"),
})
