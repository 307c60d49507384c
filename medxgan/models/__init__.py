"""Deprecated package: its modules moved in issue #21 (CHANGELOG, "Session 7").

- the classifier under audit, its loaders, check, baseline architectures and training:
  :mod:`medxgan.classifiers`;
- the generator families (published GAN, inpaint, residual), their training, checkpoints,
  health and inversion encoder: :mod:`medxgan.generators`;
- the checkpoint store: :mod:`medxgan.checkpoints`.

Each old module here is a stub that finds its names at the new path with a
``DeprecationWarning``, until medxgan-audit 0.2.0.
"""
