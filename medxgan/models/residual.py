"""Deprecated: moved to :mod:`medxgan.generators.residual.vagan`. This path works until medxgan-
audit 0.2.0, with a DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.generators.residual.vagan',
                    'medxgan.generators.unet',
                    renamed={'_device': 'medxgan.generators.unet:device'})
