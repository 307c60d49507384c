"""Models: the audited classifier's wrapper, a baseline classifier, and the medXGAN GAN.

Modules:
  - :mod:`classifier`: ``ClassifierSpec`` + ``load_classifier`` -> ``AuditedClassifier``.
  - :mod:`small_cnn`: the prototype's small CNN and a 1-channel torchvision ResNet-18.
  - :mod:`train_classifier`: trains a baseline classifier on a cohort.
  - :mod:`gan`: ``GanConfig``, ``Generator`` (published / local), discriminators.
  - :mod:`train_gan`: training loop, checkpoints, resume, ``load_generator``.
  - :mod:`health`: per-checkpoint health metrics of a generator.
"""
