"""The generator families (``gan.model.family``) behind the medXGAN methods, as plug-ins.

Every family is a :class:`~medxgan.generators.base.GeneratorFamily` registered by name in
:mod:`medxgan.generators.registry`; the GAN stage (:func:`train_gan`, :func:`load_generator`)
and the explainers only talk to that protocol (docs/design.md, "Generator families as
plug-ins").

- :mod:`base`: the protocol, :class:`Counterfactual`, :class:`SearchResult`;
- :mod:`registry`: ``register`` / ``family`` / ``family_of``; :mod:`stage`: the entry points;
- :mod:`run`: the run folder contract; :mod:`health`: counterfactual health of any family;
- :mod:`published` (the paper's GAN, its inversion and encoder), :mod:`inpaint` (the healthy
  in-filler and the counterfactual search), :mod:`residual` (VA-GAN's map generator), and
  what the two image-conditioned families share: :mod:`image_family`, :mod:`image_run`,
  :mod:`unet`.
"""

from medxgan.generators.base import (Counterfactual, GeneratorFamily, Interpolation, Path,
                                     SearchResult)
from medxgan.generators.registry import family, family_of, names, register
from medxgan.generators.stage import load_generator, train_gan

__all__ = ["Counterfactual", "GeneratorFamily", "Interpolation", "Path", "SearchResult", "family",
           "family_of", "load_generator", "names", "register", "train_gan"]
