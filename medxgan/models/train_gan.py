"""Deprecated: ``train_gan`` and ``load_generator`` are :mod:`medxgan.generators.stage` (also
:mod:`medxgan.generators`), the published family's training loop
:mod:`medxgan.generators.published.train` and the run folder helpers
:mod:`medxgan.generators.run`. This path works until medxgan-audit 0.2.0, with a
DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.generators.stage',
                    'medxgan.generators.run',
                    'medxgan.generators.published.train',
                    'medxgan.cohort.loading',
                    renamed={'_REQUIRED': 'medxgan.generators.run:REQUIRED',
                             '_load_ckpt': 'medxgan.generators.run:load_ckpt'})
