"""Chest X-ray phantom anatomy (kind ``phantom-cxr``): a lesion-free PA chest radiograph.

:func:`_cxr_anatomy` draws one subject's anatomy parameters (:func:`_cxr_params`) and renders
the thorax outline, two lung fields darker than the soft tissue, heart shadow, mediastinum,
spine, clavicles, ribs and lung markings as a :class:`~medxgan.phantoms.geometry._Scene`, whose
lesion region is the visible lung fields (lungs minus heart and mediastinum).
"""

from __future__ import annotations

import numpy as np

from medxgan.phantoms.geometry import _ellipse, _frame, _Grid, _Scene, _smooth_noise, _soft


def _cxr_params(rng: np.random.Generator) -> dict:
    """One subject's chest anatomy: shape parameters (anatomy-frame units), intensity levels
    (pre-exposure, roughly [0, 1]), exposure (lo, span, gamma) and noise sigma."""
    p = {}
    p["body_w"] = rng.uniform(0.80, 0.88)
    p["body_h"] = rng.uniform(0.95, 1.05)
    p["lungs"] = []
    for side in (-1.0, 1.0):
        cx = rng.uniform(0.38, 0.45)
        wx = rng.uniform(0.27, 0.32)
        top = rng.uniform(-0.74, -0.62)
        bot = rng.uniform(0.56, 0.70) - (0.05 if side < 0 else 0.0)  # right hemidiaphragm higher
        dome = rng.uniform(0.10, 0.20)
        p["lungs"].append((side, cx, wx, top, bot, dome))
    p["heart"] = (rng.uniform(0.08, 0.15), rng.uniform(0.36, 0.46), rng.uniform(0.28, 0.35),
                  rng.uniform(0.24, 0.31), rng.uniform(-0.45, -0.2))
    p["mediast_w"] = rng.uniform(0.12, 0.17)
    p["rib_period"] = rng.uniform(0.13, 0.16)
    p["rib_phase"] = rng.uniform(0.0, 1.0)
    p["rib_amp"] = rng.uniform(0.06, 0.11)
    p["clav_y"] = rng.uniform(-0.70, -0.62)
    p["air"] = rng.uniform(0.02, 0.08)
    p["soft"] = rng.uniform(0.50, 0.62)
    p["lung"] = rng.uniform(0.16, 0.26)
    p["heart_level"] = p["soft"] + rng.uniform(0.02, 0.08)
    p["bone"] = rng.uniform(0.10, 0.16)
    p["marking"] = rng.uniform(0.025, 0.045)
    p["lo"] = rng.uniform(0.0, 0.06)
    p["span"] = rng.uniform(0.85, 1.0)
    p["gamma"] = rng.uniform(0.8, 1.25)
    p["sigma"] = rng.uniform(0.012, 0.03)
    return p


def _cxr_lung_f(a, b, side, cx, wx, top, bot, dome):
    """< 1 inside one lung field (anatomy frame)."""
    yc = top + 0.62 * (bot - top)
    hy = yc - top
    t = np.clip((side * a - (cx - wx)) / (2 * wx), 0.0, 1.0)  # 0 medial .. 1 lateral
    floor = bot - dome * np.sin(np.pi * (1.0 - t) * 0.5 + 0.35) ** 2  # diaphragm dome
    ell = ((side * a - cx) / wx) ** 2 + ((b - yc) / hy) ** 2
    return np.maximum(ell, 1.0 + (b - floor) / 0.08)


def _cxr_region_parts(a, b, p):
    """(lung f, heart f, mediastinum f) in the anatomy frame; each < 1 inside."""
    lung = np.minimum(*(_cxr_lung_f(a, b, *L) for L in p["lungs"]))
    hx, hy, hra, hrb, hrot = p["heart"]
    heart = _ellipse(a, b, hx, hy, hra, hrb, hrot)
    med = np.maximum((a / p["mediast_w"]) ** 2, 1.0 + (b - 0.2) / 0.1)
    return lung, heart, med


def _cxr_anatomy(rng: np.random.Generator, g: _Grid) -> _Scene:
    """Render a lesion-free chest radiograph on grid ``g``; its region is the visible lung
    fields."""
    n = g.size
    fr, a, b = _frame(rng, n, 0.06)
    p = _cxr_params(rng)
    eps = 0.04  # edge softness in f units
    lung_f, heart_f, med_f = _cxr_region_parts(a, b, p)
    aw = np.abs(a / p["body_w"])
    aw2 = aw * aw
    shoulder = -0.74 + 0.32 * aw2 * aw  # top of the shoulders, sloping down laterally
    q = (b - 0.3) / (p["body_h"] + 0.2)
    q2 = q * q
    body_f = np.maximum(aw2 * aw2 + (q2 * q2) * (q2 * q2), 1.0 + (shoulder - b) / 0.1)
    neck_f = np.maximum((a / 0.22) ** 2, 1.0 + (b + 0.5) / 0.2)
    body = _soft(np.minimum(body_f, neck_f), eps)
    thick = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - aw2, 0.0, 1.0))  # thicker in the middle
    lung = _soft(lung_f, eps)
    heart = _soft(heart_f, 0.08)
    med = _soft(med_f, 0.25)

    # soft tissue, lungs (darker at the apex, lighter at the bases and periphery)
    x = p["air"] + (p["soft"] * thick - p["air"]) * body
    lung_level = p["lung"] + 0.06 * np.clip(b + 0.3, -0.5, 1.0) + 0.05 * a * a
    x = x + (lung_level - x) * lung * body
    # lung markings and hila
    mark = _smooth_noise(rng, n, 28)
    hila = np.exp(-(((np.abs(a) - 0.2) / 0.08) ** 2 + ((b + 0.02) / 0.14) ** 2))
    x = x + lung * (p["marking"] * mark + 0.12 * hila * (1.0 - 0.5 * np.abs(a)))
    # ribs: posterior arcs rising from the spine, then curving down laterally
    t = np.abs(a)
    r = (b + 0.9 * t - 0.85 * t ** 2) / (p["rib_period"] * (1.0 + 0.25 * b)) + p["rib_phase"]
    ribs = np.clip(np.cos(2 * np.pi * r) * 1.6 - 0.4, 0.0, 1.0)
    ra2, rb2 = (a / (p["body_w"] - 0.06)) ** 2, ((b + 0.1) / 0.72) ** 2
    rib_mask = body * _soft(ra2 * ra2 * ra2 + rb2 * rb2 * rb2, 0.3)
    x = x + p["rib_amp"] * ribs * rib_mask * (0.4 + 0.6 * lung) * (t > 0.06)
    # clavicles
    clav = np.exp(-(((b - p["clav_y"] + 0.25 * (t - 0.1)) / 0.035) ** 2))
    x = x + 0.12 * clav * body * (t < 0.62) * (t > 0.04)
    # mediastinum and heart override the lungs
    x = x + (p["soft"] + 0.08 - x) * med * body
    x = x + (p["heart_level"] - x) * heart * body
    # spine with vertebrae, trachea
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * b / 0.11)
    sp2 = (a / 0.06) ** 2
    x = x + p["bone"] * np.exp(-sp2 * sp2) * (0.7 + 0.3 * vert) * body
    x = x - 0.12 * np.exp(-(a / 0.03) ** 2) * _soft(1.0 + (b + 0.15) / 0.1, 0.5) * body

    def inside(pa, pb):
        lf, hf, mf = _cxr_region_parts(pa, pb, p)
        return (lf < 1.0) & (hf >= 1.0) & (mf >= 1.0)

    region = (lung_f < 1.0) & (heart_f >= 1.0) & (med_f >= 1.0)
    xs = [L[1] for L in p["lungs"]]
    ws = [L[2] for L in p["lungs"]]
    bounds = (-max(xs) - max(ws), max(xs) + max(ws), min(L[3] for L in p["lungs"]),
              max(L[4] for L in p["lungs"]))
    tex = _smooth_noise(rng, n, 40)
    return _Scene(base=x, region=region, inside=inside, bounds=bounds, frame=fr, tex=tex,
                  lo=p["lo"], span=p["span"], gamma=p["gamma"], bias=1.0, sigma=p["sigma"],
                  tag_level=1.0)

