"""Report figures with PIL only: PNG overlays (bytes) and inline SVG charts (strings).

Conventions:
- Images are (H, W) float arrays in [0, 1] (greyscale), row-major, origin top-left.
- Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the image, x1/y1 exclusive (as
  in ``boxes.parquet``); they are drawn as 1-pixel-wide (scaled) rectangle outlines.
- Maps may have any resolution; they are resized bilinearly to the image and min-max
  normalised per map (``absolute=True`` first takes ``|map|``); a constant map shows as
  no heat.
- Small images are enlarged by an integer factor (nearest neighbour) so that the longer
  side is at least ``min_size`` pixels: every pixel stays visible as a square.
- SVG strings carry no ``xmlns`` URL (inline SVG in HTML does not need it) and every text
  they contain is HTML-escaped (``medxgan.report._html.esc``, the report's one escaper).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from medxgan.catalogue import FLOORS, INTERVENTION, METHODS, method_label, metric_label, order_methods
from medxgan.report._html import esc
from medxgan.report._text import fmt

Box = Sequence[float]
_BOX_RGB = (0, 230, 255)
_PALETTE = ("#1f6fb4", "#d9730d", "#2a9d4b", "#b8323b", "#7a4fb0", "#c2569e", "#7b5a3c", "#8a9a1b", "#1aa3b8")
_FLOOR_GREYS = ("#8c8c8c", "#4d4d4d", "#b0b0b0", "#262626")
_COLOURED = tuple(m for m in METHODS if m not in FLOORS)  # catalogue methods with a palette colour


def _colour(method: str, j: int) -> str:
    """A fixed colour per catalogued method (the same in every chart), floors in grey."""
    if method in FLOORS:
        return _FLOOR_GREYS[FLOORS.index(method) % len(_FLOOR_GREYS)]
    if method in _COLOURED:
        return _PALETTE[_COLOURED.index(method) % len(_PALETTE)]
    return _PALETTE[(len(_COLOURED) + j) % len(_PALETTE)]


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes (8- or 16-bit greyscale; colour is converted to grey) -> (H, W) float64 in [0, 1]."""
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
        return np.clip(a / top, 0.0, 1.0)
    if im.mode != "L":
        im = im.convert("L")
    return np.asarray(im, dtype=np.float64) / 255.0


def _scale_for(h: int, w: int, min_size: int) -> int:
    return max(1, math.ceil(min_size / max(h, w, 1)))


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    if img.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {img.shape}")
    return np.clip(img, 0.0, 1.0)


def _heat(v: np.ndarray) -> np.ndarray:
    """Red-to-yellow colormap: (H, W) in [0, 1] -> (H, W, 3) float in [0, 1] (no blue, so it shows over grey)."""
    r = np.clip(0.3 + 1.4 * v, 0, 1)
    g = np.clip(2 * v - 1, 0, 1)
    return np.stack([r, g, np.zeros_like(v)], axis=-1)  # (H, W, 3)


def _normalised_map(m: np.ndarray, shape: tuple[int, int], absolute: bool) -> np.ndarray:
    """Resize a map to ``shape`` (bilinear) and min-max normalise it to [0, 1]."""
    a = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.ndim != 2:
        raise ValueError(f"map must be (H, W), got shape {a.shape}")
    if absolute:
        a = np.abs(a)
    if a.shape != shape:
        a = np.asarray(Image.fromarray(a.astype(np.float32)).resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros(shape)
    return (a - lo) / (hi - lo)


def _draw_boxes(im: Image.Image, boxes: Iterable[Box], s: int) -> None:
    d = ImageDraw.Draw(im)
    W, H = im.size
    for b in boxes or ():
        x0, y0, x1, y1 = (float(v) for v in b)
        if any(math.isnan(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            continue
        X0, Y0 = max(0, int(round(x0 * s))), max(0, int(round(y0 * s)))
        X1, Y1 = min(W - 1, int(round(x1 * s)) - 1), min(H - 1, int(round(y1 * s)) - 1)
        if X1 < X0 or Y1 < Y0:
            continue
        d.rectangle([X0, Y0, X1, Y1], outline=_BOX_RGB, width=max(1, s // 2))


def _png(rgb: np.ndarray, boxes: Iterable[Box], s: int) -> bytes:
    u8 = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)  # (H, W, 3)
    im = Image.fromarray(u8)
    if s > 1:
        im = im.resize((im.width * s, im.height * s), Image.NEAREST)
    _draw_boxes(im, boxes, s)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def image_with_boxes_png(image: np.ndarray, boxes: Iterable[Box] = (), *, min_size: int = 160) -> bytes:
    """Greyscale image with its boxes drawn as rectangles.

    Args:
        image: (H, W) float in [0, 1].
        boxes: (x0, y0, x1, y1) in image pixels, x1/y1 exclusive.
        min_size: the longer side is enlarged (integer factor) to at least this.

    Returns: PNG bytes (RGB).
    """
    g = _grey(image)
    return _png(np.repeat(g[..., None], 3, axis=-1), boxes, _scale_for(*g.shape, min_size))


def overlay_png(
    image: np.ndarray,
    map: np.ndarray,
    boxes: Iterable[Box] = (),
    *,
    alpha: float = 0.7,
    absolute: bool = False,
    min_size: int = 160,
) -> bytes:
    """Heat map blended over the grey image, boxes drawn on top.

    Each pixel is ``(1 - alpha * v) * grey + alpha * v * heat(v)`` with v the map
    normalised to [0, 1]: irrelevant pixels stay grey, relevant ones turn red, the most
    relevant yellow.

    Args:
        image: (H, W) float in [0, 1].
        map: (h, w) float (any range; resized bilinearly to (H, W)).
        boxes: (x0, y0, x1, y1) in image pixels, x1/y1 exclusive.
        alpha: maximum opacity of the heat.
        absolute: normalise ``|map|`` instead of the map.
        min_size: the longer side is enlarged (integer factor) to at least this.

    Returns: PNG bytes (RGB).
    """
    g = _grey(image)
    v = _normalised_map(map, g.shape, absolute)  # (H, W)
    w = (alpha * v)[..., None]  # (H, W, 1)
    rgb = (1 - w) * g[..., None] + w * _heat(v)  # (H, W, 3)
    return _png(rgb, boxes, _scale_for(*g.shape, min_size))


def _range(lo: float, hi: float) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-9:
        return lo - 0.5, hi + 0.5
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + pad


def trend_svg(
    history: pd.DataFrame,
    *,
    title: str = "",
    flagged: Iterable[tuple[str, str]] = (),
    width: int = 600,
    height: int = 200,
) -> str:
    """Line chart of one metric's mean over runs, with its 95 % CI as a band and error bars.

    Args:
        history: rows of ``HISTORY_SCHEMA`` for **one** metric (any number of methods):
            ``run_id, time, method, mean, ci_low, ci_high``. Runs are placed in time order,
            equally spaced.
        title: caption drawn at the top (escaped).
        flagged: (run_id, method) pairs to mark as regressions (red ring).
        width, height: SVG size in pixels.

    Returns: an ``<svg>`` element as a string (no external references).
    """
    h = history.dropna(subset=["mean"]).copy()
    flagged = {(str(r), str(m)) for r, m in flagged}
    out = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    if title:
        out.append(f'<text x="6" y="14" font-size="12" font-weight="bold">{esc(title)}</text>')
    if h.empty:
        out.append(f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" font-size="12">no history</text></svg>')
        return "".join(out)
    runs = h.sort_values(["time", "run_id"]).drop_duplicates("run_id")[["run_id", "time"]].reset_index(drop=True)
    xi = {r: i for i, r in enumerate(runs["run_id"])}
    L, R, T, B = 52, 170, 24, 34
    pw, ph = width - L - R, height - T - B
    lo = float(np.nanmin(h[["mean", "ci_low"]].to_numpy()))
    hi = float(np.nanmax(h[["mean", "ci_high"]].to_numpy()))
    y0, y1 = _range(lo, hi)

    def X(i: int) -> float:
        return L + (pw / 2 if len(runs) == 1 else pw * i / (len(runs) - 1))

    def Y(v: float) -> float:
        return T + ph * (1 - (v - y0) / (y1 - y0))

    out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#bbb"/>')
    for v in (y0 + 0.08 * (y1 - y0) / 1.16, y1 - 0.08 * (y1 - y0) / 1.16):
        out.append(f'<text x="{L - 4}" y="{Y(v) + 4:.1f}" text-anchor="end" font-size="10">{fmt(v)}</text>')
    labels = [(0, runs["time"].iloc[0])] + ([(len(runs) - 1, runs["time"].iloc[-1])] if len(runs) > 1 else [])
    for i, t in labels:
        txt = pd.Timestamp(t).strftime("%Y-%m-%d %H:%M") if not pd.isna(t) else ""
        anchor = "start" if i == 0 and len(runs) > 1 else ("end" if len(runs) > 1 else "middle")
        out.append(f'<text x="{X(i):.1f}" y="{height - 18}" text-anchor="{anchor}" font-size="10">{esc(txt)}</text>')
    out.append(f'<text x="{L + pw / 2:.1f}" y="{height - 4}" text-anchor="middle" font-size="10">{len(runs)} run(s)</text>')
    bands: list[str] = []  # drawn first, so every line stays on top of every band
    marks: list[str] = []
    for j, method in enumerate(order_methods(h["method"].astype(str).unique())):
        g = h[h["method"].astype(str) == method]
        c = _colour(method, j)
        dash = ' stroke-dasharray="5,3"' if method in FLOORS else ""
        g = g.assign(_x=g["run_id"].map(xi)).sort_values("_x")
        pts = [(X(int(i)), Y(m)) for i, m in zip(g["_x"], g["mean"])]
        band = g.dropna(subset=["ci_low", "ci_high"])
        if len(band) >= 2:
            up = [f"{X(int(i)):.1f},{Y(v):.1f}" for i, v in zip(band["_x"], band["ci_high"])]
            dn = [f"{X(int(i)):.1f},{Y(v):.1f}" for i, v in zip(band["_x"][::-1], band["ci_low"][::-1])]
            bands.append(f'<polygon points="{" ".join(up + dn)}" fill="{c}" fill-opacity="0.15" stroke="none"/>')
        for i, a, b in zip(band["_x"], band["ci_low"], band["ci_high"]):
            marks.append(f'<line x1="{X(int(i)):.1f}" x2="{X(int(i)):.1f}" y1="{Y(a):.1f}" y2="{Y(b):.1f}" stroke="{c}"/>')
        if len(pts) >= 2:
            marks.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for (x, y), r in zip(pts, g["run_id"]):
            marks.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{c}"/>')
            if (str(r), str(method)) in flagged:
                marks.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="#d00" stroke-width="2"><title>regression</title></circle>')
        marks.append(f'<rect x="{width - R + 8}" y="{T + 14 * j}" width="10" height="10" fill="{c}"/>')
        marks.append(f'<text x="{width - R + 22}" y="{T + 9 + 14 * j}" font-size="10">{esc(method_label(str(method)))}</text>')
    out += bands + marks
    out.append("</svg>")
    return "".join(out)


def bar_svg(summary: pd.DataFrame, *, title: str = "", width: int = 520, row_height: int = 22) -> str:
    """Horizontal bars of one metric's mean per method with 95 % CI whiskers.

    Args:
        summary: rows ``method, mean, ci_low, ci_high`` of **one** metric, drawn in the
            given order (floors in grey).
        title: caption (escaped).

    Returns: an ``<svg>`` element as a string.
    """
    s = summary.dropna(subset=["mean"])
    T = 22 if title else 6
    height = T + row_height * max(1, len(s)) + 22
    out = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    if title:
        out.append(f'<text x="6" y="14" font-size="12" font-weight="bold">{esc(title)}</text>')
    if s.empty:
        out.append(f'<text x="{width // 2}" y="{T + 14}" text-anchor="middle" font-size="12">no values</text></svg>')
        return "".join(out)
    L, R = 170, 56
    pw = width - L - R
    vals = s[["mean", "ci_low", "ci_high"]].to_numpy(dtype=np.float64)
    lo = min(0.0, float(np.nanmin(vals)))
    hi = max(0.0, float(np.nanmax(vals)))
    if hi - lo < 1e-12:
        hi = lo + 1.0

    def X(v: float) -> float:
        return L + pw * (v - lo) / (hi - lo)

    for i, r in enumerate(s.itertuples(index=False)):
        y = T + row_height * i
        c = "#9a9a9a" if r.method in FLOORS else "#1f6fb4"
        a, b = sorted((X(0.0), X(r.mean)))
        out.append(f'<rect x="{a:.1f}" y="{y + 4}" width="{max(b - a, 1):.1f}" height="{row_height - 8}" fill="{c}"/>')
        if not (pd.isna(r.ci_low) or pd.isna(r.ci_high)):
            ym = y + row_height / 2
            out.append(f'<line x1="{X(r.ci_low):.1f}" x2="{X(r.ci_high):.1f}" y1="{ym:.1f}" y2="{ym:.1f}" stroke="#222" stroke-width="1.5"/>')
            for v in (r.ci_low, r.ci_high):
                out.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{ym - 4:.1f}" y2="{ym + 4:.1f}" stroke="#222"/>')
        out.append(f'<text x="{L - 6}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" font-size="11">{esc(method_label(str(r.method)))}</text>')
        out.append(f'<text x="{width - 2}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" font-size="10">{fmt(r.mean)}</text>')
    yb = T + row_height * len(s) + 4
    out.append(f'<line x1="{L}" x2="{L + pw}" y1="{yb}" y2="{yb}" stroke="#888"/>')
    for v in (lo, 0.0, hi) if lo < 0 else (0.0, hi):
        out.append(f'<text x="{X(v):.1f}" y="{yb + 14}" text-anchor="middle" font-size="10">{fmt(v, 2)}</text>')
    out.append("</svg>")
    return "".join(out)


def label_width(labels: Sequence[str], font_px: float = 11.0, least: int = 170) -> int:
    """Pixels a column of right-aligned labels needs at ``font_px`` (a sans-serif glyph is at
    most ~0.62 em wide on average: an upper bound for the report's fonts), plus a margin."""
    longest = max((len(t) for t in labels), default=0)
    return max(least, int(0.62 * font_px * longest + 12))


def summary_svg(
    summary: pd.DataFrame | None,
    metrics: Sequence[str] = ("pointing_game", "relevance_mass"),
    *,
    width: int = 760,
    row_height: int = 18,
) -> str:
    """The report's one overview figure: per method, each of ``metrics`` (mean with its 95 %
    CI whisker; one panel per metric, floors in grey and the highest floor's CI top marked by a
    dashed line), then the intervention evidence: f's probability drop with the image's own
    boxes infilled vs another image's boxes (``ablation_drop`` / ``ablation_drop_shuffled`` of
    method ``intervention``), when present.

    Args:
        summary: ``method, metric, mean, ci_low, ci_high`` (more columns are ignored).
        metrics: the localisation metrics of the panels (absent ones are skipped).

    Returns: an ``<svg>`` element as a string (no external references; text escaped).
    """
    s = pd.DataFrame(columns=["method", "metric", "mean", "ci_low", "ci_high"]) if summary is None else summary
    s = s.dropna(subset=["mean"])
    idx = {(str(r.method), str(r.metric)): r for r in s.itertuples(index=False)}
    panels = [k for k in metrics if any(kk == k and m != INTERVENTION for m, kk in idx)]
    methods = [m for m in order_methods({m for m, k in idx if k in panels}) if m != INTERVENTION]
    inter = [(lab, idx[(INTERVENTION, k)]) for lab, k in (("own boxes infilled", "ablation_drop"),
             ("another image's boxes infilled", "ablation_drop_shuffled")) if (INTERVENTION, k) in idx]
    labels = [method_label(m) for m in methods] + [lab for lab, _ in inter]
    L, gap, T = label_width(labels), 14, 34  # every label fits left of the panels
    top_h = T + row_height * len(methods) + 18 if panels else 0
    inter_h = 26 + row_height * len(inter) + 18 if inter else 0
    height = max(top_h + inter_h, 40)
    out = [f'<svg class="chart summary" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    if not panels and not inter:
        out.append(f'<text x="{width // 2}" y="24" text-anchor="middle" font-size="12">no localisation or intervention values</text></svg>')
        return "".join(out)

    def whisker(X, y: float, r, c: str) -> None:
        a, b = sorted((X(0.0), X(float(r.mean))))
        out.append(f'<rect x="{a:.1f}" y="{y + 3:.1f}" width="{max(b - a, 1):.1f}" height="{row_height - 6}" fill="{c}"/>')
        if not (pd.isna(r.ci_low) or pd.isna(r.ci_high)):
            ym = y + row_height / 2
            out.append(f'<line x1="{X(float(r.ci_low)):.1f}" x2="{X(float(r.ci_high)):.1f}" y1="{ym:.1f}" y2="{ym:.1f}" stroke="#222" stroke-width="1.5"/>')

    def scale(vals: list[float], x0: float, pw: float, unit: bool = True):
        lo = min([0.0] + vals)
        hi = max([1.0 if unit and all(v <= 1 for v in vals) else 0.05] + vals)
        hi = hi if hi - lo > 1e-12 else lo + 1.0
        return (lambda v: x0 + pw * (v - lo) / (hi - lo)), lo, hi

    if panels:
        out.append('<text x="6" y="14" font-size="12" font-weight="bold">Explanations: mean and 95 % CI per method (floors grey, dashed: highest floor)</text>')
        pw = (width - L - gap * len(panels)) / len(panels)
        for i, m in enumerate(methods):
            y = T + row_height * i
            out.append(f'<text x="{L - 6}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" font-size="11">{esc(method_label(m))}</text>')
        for j, k in enumerate(panels):
            x0 = L + j * (pw + gap)
            rows = [(i, m, idx[(m, k)]) for i, m in enumerate(methods) if (m, k) in idx]
            vals = [float(v) for _, _, r in rows for v in (r.mean, r.ci_low, r.ci_high) if not pd.isna(v)]
            X, lo, hi = scale(vals, x0, pw)
            out.append(f'<text x="{x0 + pw / 2:.1f}" y="{T - 6}" text-anchor="middle" font-size="11">{esc(metric_label(k))}</text>')
            out.append(f'<rect x="{x0:.1f}" y="{T}" width="{pw:.1f}" height="{row_height * len(methods)}" fill="#fafafa" stroke="#ddd"/>')
            for i, m, r in rows:
                whisker(X, T + row_height * i, r, "#9a9a9a" if m in FLOORS else _colour(m, i))
            tops = [float(r.ci_high) for _, m, r in rows if m in FLOORS and not pd.isna(r.ci_high)]
            if tops:
                xf = X(max(tops))
                out.append(f'<line class="floor-mark" x1="{xf:.1f}" x2="{xf:.1f}" y1="{T}" y2="{T + row_height * len(methods)}" stroke="#b8323b" stroke-dasharray="4,3"/>')
            yb = T + row_height * len(methods) + 12
            for v, anchor in ((lo, "start"), (hi, "end")):
                out.append(f'<text x="{X(v):.1f}" y="{yb}" text-anchor="{anchor}" font-size="9">{fmt(v, 2)}</text>')
    if inter:
        y0 = top_h + 14
        out.append(f'<text x="6" y="{y0}" font-size="12" font-weight="bold">Intervention: drop of p when boxes are infilled (mean, 95 % CI)</text>')
        pw = width - L - 52
        vals = [float(v) for _, r in inter for v in (r.mean, r.ci_low, r.ci_high) if not pd.isna(v)]
        X, lo, hi = scale(vals, L, pw, unit=False)
        for i, (lab, r) in enumerate(inter):
            y = y0 + 8 + row_height * i
            out.append(f'<text x="{L - 6}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" font-size="11">{esc(lab)}</text>')
            whisker(X, y, r, "#2a9d4b" if i == 0 else "#9a9a9a")
            out.append(f'<text x="{width - 2}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" font-size="10">{fmt(float(r.mean))}</text>')
        yb = y0 + 8 + row_height * len(inter) + 10
        out.append(f'<line x1="{X(0.0):.1f}" x2="{X(0.0):.1f}" y1="{y0 + 8}" y2="{yb - 10}" stroke="#888"/>')
        for v, anchor in ((lo, "start"), (hi, "end")):
            out.append(f'<text x="{X(v):.1f}" y="{yb}" text-anchor="{anchor}" font-size="9">{fmt(v, 2)}</text>')
    out.append("</svg>")
    return "".join(out)
