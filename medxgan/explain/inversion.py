"""Deprecated: the inversion is the published family's:
:mod:`medxgan.generators.published.inversion`. This path works until medxgan-audit 0.2.0, with a
DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.generators.published.inversion')
