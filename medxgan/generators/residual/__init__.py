"""The ``residual`` generator family: VA-GAN's map generator (:mod:`.family`)."""
