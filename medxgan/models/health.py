"""Deprecated: the published family's health is :mod:`medxgan.generators.published.health`;
``counterfactual_health`` and ``lesion_fidelity`` are :mod:`medxgan.generators.health`. This
path works until medxgan-audit 0.2.0, with a DeprecationWarning.
"""

from medxgan._deprecated import moved

__getattr__ = moved(__name__,
                    'medxgan.generators.published.health',
                    'medxgan.generators.health')
