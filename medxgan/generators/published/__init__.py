"""The ``published`` generator family: the paper's GAN (:mod:`.family`)."""
