"""Benchmarks (not tests): speed, memory, scale and quality tables of the product's own code.

Run from the repository root as modules, e.g. ``.venv/bin/python -m bench.quality --quick``
(``make bench-quick`` runs every benchmark's quick mode). Every benchmark calls the library the
audit runs: ``medxgan.explain.explain_batch``, ``medxgan.metrics.score_batch`` /
``shuffle_partners`` (through :func:`bench._pipeline.explain_and_score`), the product's
classifier wrapper (``medxgan.classifiers.wrapper.AuditedClassifier``, Grad-CAM at
``default_target_layer``) and the one ``gaussian_blur``. Results go to ``bench/results/``.
"""
