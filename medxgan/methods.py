"""The explanation method names: one list for the explainers, the config and the report.

Plain tuples with no imports, so that the config and the report can validate and order method
names without importing torch.
"""

METHODS = ("medxgan", "latent_ig", "counterfactual_ig", "gradcam", "ig", "smoothgrad", "occlusion",
           "random", "box_prior")
GAN_METHODS = ("medxgan", "latent_ig", "counterfactual_ig")  # need a generator
