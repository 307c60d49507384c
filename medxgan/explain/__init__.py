"""Explanation engine: medXGAN (inversion, difference map, interpolation), latent IG, and
captum baselines (Grad-CAM, IG, SmoothGrad, occlusion) plus the random and box-prior floors.

>>> expl = make_explainer("gradcam", f).explain(images)   # doctest: +SKIP
>>> expl.maps.shape                                        # (B, H, W) float32, raw
"""

from medxgan.explain.base import METHODS, Explainer, Explanation, make_explainer
from medxgan.explain.inversion import InversionConfig, InversionResult, invert

__all__ = ["METHODS", "Explainer", "Explanation", "make_explainer", "InversionConfig",
           "InversionResult", "invert"]
