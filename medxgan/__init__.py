"""medXGAN Audit: audits binary medical image classifiers with medXGAN and baseline explanations.

The library never imports Prefect; orchestration lives in the top-level ``tasks`` and ``flows``
packages.
"""

__version__ = "0.1.0"
