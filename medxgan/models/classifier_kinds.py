"""Deprecated: moved to :mod:`medxgan.classifiers.kinds`. This path works until medxgan-audit
0.2.0, with a DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.classifiers.kinds')
