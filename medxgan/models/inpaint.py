"""Deprecated: moved to :mod:`medxgan.generators.inpaint.inpainter`; the U-Net trunk and the
training-loop helpers are :mod:`medxgan.generators.unet`. This path works until medxgan-audit
0.2.0, with a DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.generators.inpaint.inpainter',
                    'medxgan.generators.unet',
                    renamed={'_device': 'medxgan.generators.unet:device'})
