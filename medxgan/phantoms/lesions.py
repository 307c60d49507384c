"""Lesions: placing and rasterising opacities (chest X-ray) and tumours (brain MRI).

:func:`_place_lesions` draws 1-3 non-overlapping opacities (``phantom-cxr``) or one tumour
(``phantom-brain``) as :class:`_Shape` s (ellipses or irregular blobs, anatomy frame) that lie
inside the scene's lesion region; :func:`_draw` rasterises each into a :class:`_Lesion`: an
additive intensity field on a pixel window, exactly 0 outside the lesion's support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medxgan.phantoms.geometry import _Grid, _Scene


@dataclass
class _Lesion:
    """One rasterised lesion on the pixel window ``[rows, cols]`` of the image."""

    rows: slice
    cols: slice
    field: np.ndarray    # (h, w) additive intensity, exactly 0 outside ``support``
    support: np.ndarray  # (h, w) bool
    finding: str


@dataclass
class _Shape:
    """A lesion outline in the anatomy frame: centre (ca, cb), radii (ra, rb), rotation ``rot``
    (radians) and harmonic radius modulations (none: an ellipse)."""

    ca: float
    cb: float
    ra: float
    rb: float
    rot: float
    harm: np.ndarray  # (K, 3): order k, amplitude, phase of radius modulations

    @property
    def rmax(self) -> float:
        return max(self.ra, self.rb) * (1.0 + np.abs(self.harm[:, 1]).sum())

    def t(self, a, b):
        """Normalised radius: < 1 inside the shape (anatomy frame)."""
        cr, sr = np.cos(self.rot), np.sin(self.rot)
        da, db = a - self.ca, b - self.cb
        pa, pb = (da * cr + db * sr) / self.ra, (-da * sr + db * cr) / self.rb
        th = np.arctan2(pb, pa)
        return np.sqrt(pa ** 2 + pb ** 2) / self._radius(th)

    def _radius(self, th):
        r = np.ones_like(th)
        for k, amp, ph in self.harm:
            r = r + amp * np.cos(k * th + ph)
        return r

    def outline(self, m: int = 96, margin: float = 0.015) -> tuple[np.ndarray, np.ndarray]:
        """Points on and inside the boundary (grown by ``margin``), anatomy frame."""
        th = np.linspace(0.0, 2 * np.pi, m, endpoint=False)
        rad = self._radius(th)
        frac = np.array([1.0, 0.7, 0.35, 0.0])[:, None]
        pa = (self.ra * rad * frac + margin) * np.cos(th)  # (4, m)
        pb = (self.rb * rad * frac + margin) * np.sin(th)
        cr, sr = np.cos(self.rot), np.sin(self.rot)
        return self.ca + pa * cr - pb * sr, self.cb + pa * sr + pb * cr


def _smoothstep(x):
    """Cubic ramp from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _place_lesions(kind: str, rng: np.random.Generator, scene: _Scene, g: _Grid) -> list[_Lesion]:
    """Draw 1-3 opacities (cxr) or one tumour (brain), non-overlapping, inside the region."""
    if kind == "phantom-cxr":
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        size_range, finding = (0.11, 0.28), "opacity"
    else:
        count, size_range, finding = 1, (0.12, 0.30), "tumour"
    min_r = 3.0 / g.size  # at least ~1.5 px semi-axis, only binds at the smallest sizes
    shapes: list[_Shape] = []
    for k in range(count):
        shrink = 1.0 if k == 0 else 0.75
        for attempt in range(40):
            ra = rng.uniform(*size_range) * shrink
            rb = ra * rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:  # irregular blob
                harm = np.stack([np.arange(2, 6), rng.uniform(0.0, 0.08, 4),
                                 rng.uniform(0, 2 * np.pi, 4)], 1)
            else:
                harm = np.zeros((0, 3))
            ra, rb = max(ra, min_r), max(rb, min_r)
            a0, a1, b0, b1 = scene.bounds
            s = _Shape(rng.uniform(a0, a1), rng.uniform(b0, b1), ra, rb,
                       rng.uniform(0, np.pi), harm)
            if all(np.hypot(s.ca - o.ca, s.cb - o.cb) > s.rmax + o.rmax + 0.03 for o in shapes) \
                    and scene.inside(*s.outline()).all():
                shapes.append(s)
                break
            if attempt % 10 == 9:
                shrink *= 0.8
    return [_draw(kind, rng, s, scene, g, finding) for s in shapes]


def _draw(kind: str, rng: np.random.Generator, s: _Shape, scene: _Scene, g: _Grid,
          finding: str) -> _Lesion:
    """Rasterise one lesion in a pixel window around it."""
    n, c = g.size, g.c
    cu, cv = scene.frame.to_image(s.ca, s.cb)
    rad = s.rmax * scene.frame.scale + 2.0 / n
    cols = slice(*np.searchsorted(c, [cu - rad, cu + rad]))
    rows = slice(*np.searchsorted(c, [cv - rad, cv + rad]))
    a, b = scene.frame.to_anatomy(c[None, cols], c[rows, None])  # (h, w)
    t = s.t(a, b)
    support = t < 1.0
    tex = scene.tex[rows, cols]
    if kind == "phantom-cxr":
        style = int(rng.integers(3))  # 0 solid, 1 mottled, 2 ground glass
        amp = rng.uniform(0.1, 0.22) if style < 2 else rng.uniform(0.08, 0.13)
        edge = rng.uniform(0.25, 0.45) if style < 2 else rng.uniform(0.6, 0.9)
        prof = _smoothstep((1.0 - t) / edge)
        mod = 1.0 + (0.0, 0.45, 0.2)[style] * tex
        field = amp * prof * np.clip(mod, 0.2, None)
    else:
        style = int(rng.integers(2))  # 0 solid enhancing, 1 ring-enhancing with necrotic core
        amp = rng.uniform(0.12, 0.3)
        oedema = rng.uniform(0.04, 0.1)
        halo = _smoothstep((1.0 - t) / 0.25) * _smoothstep((t - 0.55) / 0.2)
        if style == 0:
            core = _smoothstep((0.8 - t) / 0.2) * (1.0 + 0.15 * tex)
        else:
            rim = np.exp(-((t - 0.62) / 0.1) ** 2) * _smoothstep((0.8 - t) / 0.1)
            core = rim - 0.6 * _smoothstep((0.5 - t) / 0.2) * (1.0 + 0.3 * tex)
        field = amp * core - oedema * halo
    field = np.where(support, field, 0.0).astype(np.float32)
    return _Lesion(rows, cols, field, support, finding)
