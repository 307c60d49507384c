"""Brain MRI phantom anatomy (kind ``phantom-brain``): a lesion-free axial T1-like slice.

:func:`_brain_anatomy` renders scalp, dark skull ring, cortex with sulci, white matter,
ventricles and falx, plus the subject's bias field, as a
:class:`~medxgan.phantoms.geometry._Scene` whose lesion region is the brain inside the skull.
"""

from __future__ import annotations

import numpy as np

from medxgan.phantoms.geometry import _ellipse, _frame, _Grid, _Scene, _smooth_noise, _soft


def _brain_anatomy(rng: np.random.Generator, g: _Grid) -> _Scene:
    """Render a lesion-free axial brain slice on grid ``g``; its region is the brain inside the
    skull."""
    n = g.size
    fr, a, b = _frame(rng, n, 0.08)
    ra, rb = rng.uniform(0.68, 0.78), rng.uniform(0.82, 0.90)  # head radii
    scalp_t, skull_t = rng.uniform(0.05, 0.07), rng.uniform(0.04, 0.06)
    wm_r = rng.uniform(0.68, 0.76)
    vent = (rng.uniform(0.06, 0.09), rng.uniform(-0.12, -0.02), rng.uniform(0.035, 0.06),
            rng.uniform(0.16, 0.24), rng.uniform(0.15, 0.35))
    levels = dict(bg=0.0, scalp=rng.uniform(0.6, 0.8), skull=rng.uniform(0.05, 0.12),
                  csf=rng.uniform(0.08, 0.16), gm=rng.uniform(0.38, 0.46),
                  wm=rng.uniform(0.56, 0.66))
    eps = 0.03

    rho = np.sqrt((a / ra) ** 2 + (b / rb) ** 2)  # 1 at the outer scalp
    brain_r = 1.0 - scalp_t - skull_t  # inner skull, in rho units
    head = _soft(rho, 0.02)
    in_skull = _soft(rho / (1.0 - scalp_t), 0.02)
    brain = _soft(rho / brain_r, 0.02)
    x = levels["bg"] + (levels["scalp"] - levels["bg"]) * head
    x = x + (levels["skull"] - x) * in_skull
    x = x + (levels["csf"] - x) * _soft(rho / (brain_r - 0.005), 0.02)
    wig = _smooth_noise(rng, n, 14)
    gm = _soft(rho / (brain_r - 0.02), 0.02)
    x = x + (levels["gm"] - x) * gm
    wm = _soft(rho / (wm_r * brain_r * (1.0 + 0.06 * wig)), 0.08)
    x = x + (levels["wm"] - x) * wm
    # sulci: dark CSF clefts in the cortex
    sul = _smooth_noise(rng, n, 30)
    cortex = gm * (1.0 - wm) * (rho > 0.55 * brain_r)
    x = x + (levels["csf"] - x) * cortex * np.exp(-(sul / 0.15) ** 2) * 0.7
    # falx and interhemispheric fissure
    x = x + (levels["csf"] - x) * gm * np.exp(-(a / 0.012) ** 2) * (np.abs(b) > 0.28) * 0.8
    # lateral ventricles (mirror pair) and third ventricle
    vx, vy, vra, vrb, vrot = vent
    vf = np.minimum(_ellipse(a, b, -vx, vy, vra, vrb, -vrot),
                    _ellipse(a, b, vx, vy, vra, vrb, vrot))
    vf = np.minimum(vf, _ellipse(a, b, 0.0, vy + 0.2, 0.012, 0.05))
    x = x + (levels["csf"] - x) * _soft(vf, 0.15)
    x = x + 0.025 * _smooth_noise(rng, n, 40) * gm

    def inside(pa, pb):
        return np.sqrt((pa / ra) ** 2 + (pb / rb) ** 2) < brain_r

    region = rho < brain_r
    bounds = (-ra * brain_r, ra * brain_r, -rb * brain_r, rb * brain_r)
    bias = 1.0 + 0.08 * _smooth_noise(rng, n, 4)
    tex = _smooth_noise(rng, n, 36)
    return _Scene(base=x, region=region, inside=inside, bounds=bounds, frame=fr, tex=tex,
                  lo=rng.uniform(0.0, 0.03), span=rng.uniform(0.85, 1.0),
                  gamma=rng.uniform(0.85, 1.2), bias=bias, sigma=rng.uniform(0.015, 0.035),
                  tag_level=1.0)

