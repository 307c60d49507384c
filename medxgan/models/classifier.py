"""Deprecated: the wrapper is :mod:`medxgan.classifiers.wrapper` and the loader
:mod:`medxgan.classifiers.load` (both also :mod:`medxgan.classifiers`); the spec is
:mod:`medxgan.config.classifier`. This path works until medxgan-audit 0.2.0, with a
DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.classifiers.wrapper',
                    'medxgan.classifiers.load',
                    'medxgan.classifiers.kinds',
                    'medxgan.config.classifier')
