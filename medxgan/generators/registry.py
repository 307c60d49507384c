"""The generator families by name (``gan.model.family``): the one place that maps a family to
its code.

A new family is one module (a :class:`~medxgan.generators.base.GeneratorFamily` subclass and
its networks) and one line here, ``register("<name>", <Name>Family)``; its name is also a value
of ``GanConfig.family`` (the typed config, checked before torch loads) and, where it has
options, a section of ``GanTrainConfig`` (``tests/test_layout.py`` holds the three together).

>>> family("inpaint").latent          # doctest: +SKIP
False
>>> family_of(G).counterfactual(G, images, f).x_neg   # doctest: +SKIP
"""

from __future__ import annotations

from torch import nn

from medxgan.generators.base import GeneratorFamily
from medxgan.generators.inpaint.family import InpaintFamily
from medxgan.generators.published.family import PublishedFamily
from medxgan.generators.residual.family import ResidualFamily

#: The family of a checkpoint without a ``family`` key and of a generator module without a
#: ``family`` attribute: the published latent family (the contract ``G(z_a, z_p)``).
DEFAULT = "published"
#: The family whose run the audit trains when it needs a healthy in-filler and its generator
#: has none (``score.ablation_infill: inpaint``; ``GeneratorFamily.infiller``).
INFILLER = "inpaint"

_FAMILIES: dict[str, GeneratorFamily] = {}


def register(name: str, cls: type[GeneratorFamily]) -> GeneratorFamily:
    """Register family ``cls`` under ``name``; returns its (stateless) instance."""
    if name in _FAMILIES:
        raise ValueError(f"generator family {name!r} is registered already")
    fam = cls()
    fam.name = name
    _FAMILIES[name] = fam
    return fam


def unregister(name: str) -> None:
    """Remove family ``name`` (tests of a plug-in); the families above stay registered."""
    _FAMILIES.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered family names, in registration order."""
    return tuple(_FAMILIES)


def family(name: str | None) -> GeneratorFamily:
    """The family registered as ``name`` (None: :data:`DEFAULT`)."""
    try:
        return _FAMILIES[name or DEFAULT]
    except KeyError:
        raise ValueError(f"unknown generator family {name!r}; known: {list(_FAMILIES)}") from None


def family_of(G: nn.Module) -> GeneratorFamily:
    """The family of a generator module (its ``family`` attribute; none: :data:`DEFAULT`)."""
    return family(getattr(G, "family", None))


def family_of_checkpoint(obj: dict) -> GeneratorFamily:
    """The family of a loaded checkpoint dict (its ``family`` key; none: :data:`DEFAULT`)."""
    return family(obj.get("family"))


register("published", PublishedFamily)
register("inpaint", InpaintFamily)
register("residual", ResidualFamily)
