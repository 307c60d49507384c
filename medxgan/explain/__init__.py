"""Explanation engine: medXGAN (difference map, interpolation), latent IG, and
captum baselines (Grad-CAM, IG, SmoothGrad, occlusion) plus the random and box-prior floors.

>>> expl = make_explainer("gradcam", f).explain(images)   # doctest: +SKIP
>>> expl.maps.shape                                        # (B, H, W) float32, raw
>>> out = explain_batch(images, f, G, ["medxgan", "gradcam"], {})  # doctest: +SKIP
"""

from medxgan._deprecated import moved
from medxgan.explain.base import METHODS, Explainer, Explanation, make_explainer
from medxgan.explain.batch import explain_batch, method_order, train_box_prior

__all__ = ["METHODS", "Explainer", "Explanation", "make_explainer", "explain_batch",
           "method_order", "train_box_prior"]

# The inversion is the published generator family's (medxgan.generators.published.inversion);
# InversionConfig, InversionResult and invert stay readable here until 0.2.0, with a warning.
__getattr__ = moved(__name__, "medxgan.generators.published.inversion")
