"""Models: the audited classifier's wrapper, a baseline classifier, and the medXGAN GAN.

Modules:
  - :mod:`classifier`: ``ClassifierSpec`` + ``load_classifier`` -> ``AuditedClassifier``.
  - :mod:`small_cnn`: the prototype's small CNN and a 1-channel torchvision ResNet-18.
  - :mod:`train_classifier`: trains a baseline classifier on a cohort.
  - :mod:`gan`: ``GanConfig``, ``Generator`` (published / local), discriminators.
  - :mod:`train_gan`: training loop, the generator's checkpoints and resume,
    ``load_generator``.
  - :mod:`checkpoints`: blobs + sha256, pointers, RNG state, the resume scan.
  - :mod:`encoder`: the optional inversion encoder and its training stage.
  - :mod:`health`: per-checkpoint health metrics of a generator.

Their configs (``GanConfig``, ``GanTrainConfig``, ``EncoderConfig``, ``ClassifierTrainConfig``)
are defined in the torch-free :mod:`medxgan.config` and re-exported here; the train split and
held-out images are loaded by :mod:`medxgan.cohort.loading`.
"""
