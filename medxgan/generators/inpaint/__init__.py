"""The ``inpaint`` generator family: a healthy in-filler and the counterfactual search (:mod:`.family`)."""
