"""Explanation engine: medXGAN (inversion, difference map, interpolation), latent IG, and
captum baselines (Grad-CAM, IG, SmoothGrad, occlusion) plus the random and box-prior floors.

>>> expl = make_explainer("gradcam", f).explain(images)   # doctest: +SKIP
>>> expl.maps.shape                                        # (B, H, W) float32, raw
>>> out = explain_batch(images, f, G, ["medxgan", "gradcam"], {})  # doctest: +SKIP
"""

from medxgan.explain.base import METHODS, Explainer, Explanation, make_explainer
from medxgan.explain.batch import explain_batch, method_order, train_box_prior
from medxgan.explain.inversion import InversionConfig, InversionResult, invert

__all__ = ["METHODS", "Explainer", "Explanation", "make_explainer", "explain_batch",
           "method_order", "train_box_prior", "InversionConfig", "InversionResult", "invert"]
