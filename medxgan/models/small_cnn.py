"""Deprecated: moved to :mod:`medxgan.classifiers.small_cnn`. This path works until medxgan-audit
0.2.0, with a DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.classifiers.small_cnn')
