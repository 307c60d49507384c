"""Figures: PNGs that PIL can reopen, with heat and boxes where they belong; well-formed SVG."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
from PIL import Image

from medxgan.report.figures import bar_svg, decode_png, image_with_boxes_png, overlay_png, trend_svg
from tests.report._fixtures import EVIL, phantom

BOX = (36, 20, 48, 32)  # x0, y0, x1, y1 (exclusive)


def _open(png: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(png))
    im.verify()  # a valid PNG
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)


def test_image_with_boxes_draws_the_box_outline_only():
    img, _ = phantom(box=BOX)
    a = _open(image_with_boxes_png(img, [BOX], min_size=64))  # scale 1
    assert a.shape == (64, 64, 3)
    x0, y0, x1, y1 = BOX
    assert tuple(a[y0, x0]) == (0, 230, 255) and tuple(a[y1 - 1, x1 - 1]) == (0, 230, 255)
    inner = a[y0 + 2, x0 + 2]
    assert inner[0] == inner[1] == inner[2]  # grey inside the box
    assert tuple(a[y1 + 1, x1 + 1]) != (0, 230, 255)  # nothing outside (x1/y1 exclusive)


def test_overlay_heat_at_the_map_peak_and_upscaled():
    img, m = phantom(box=BOX)
    a = _open(overlay_png(img, m, [BOX], min_size=160))
    assert a.shape == (192, 192, 3)  # 64 px * ceil(160 / 64)
    s = 3
    cy, cx = (20 + 32) // 2, (36 + 48) // 2
    peak = a[cy * s + 1, cx * s + 1]
    far = a[2 * s, 2 * s]
    assert peak[0] > peak[2] + 100  # hot colours at the peak
    assert far[0] == far[1] == far[2]  # zero relevance stays grey


def test_overlay_resizes_a_low_resolution_map_and_handles_constant_maps():
    img, _ = phantom()
    low = np.zeros((8, 8))
    low[5, 1] = 1.0  # peak around (y, x) = (44, 12) at 64 px
    a = _open(overlay_png(img, low, min_size=64))
    y, x = np.unravel_index(np.argmax(a[..., 0] - a[..., 2]), a.shape[:2])
    assert abs(y - 44) <= 6 and abs(x - 12) <= 6
    c = _open(overlay_png(img, np.ones((16, 16)), min_size=64))
    assert (c[..., 0] == c[..., 2]).all()  # a constant map shows no heat


def test_decode_png_8_and_16_bit():
    g = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    for arr in ((g * 255).round().astype(np.uint8), (g * 65535).round().astype(np.uint16)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        d = decode_png(buf.getvalue())
        assert d.shape == (32, 32) and np.allclose(d, g, atol=1 / 255)


def _history(runs=3):
    rows = []
    for i in range(runs):
        for m, base in (("gradcam", 0.9), ("random", 0.1)):
            rows.append((f"r{i}", pd.Timestamp("2026-11-01", tz="UTC") + pd.Timedelta(days=i), m, base - 0.1 * i, base - 0.1 * i - 0.05, base - 0.1 * i + 0.05))
    return pd.DataFrame(rows, columns=["run_id", "time", "method", "mean", "ci_low", "ci_high"])


def test_trend_svg_is_well_formed_with_one_point_per_run_and_flags():
    svg = trend_svg(_history(), title=EVIL, flagged={("r2", "gradcam")})
    root = ET.fromstring(svg)
    circles = root.findall("circle")
    assert len([c for c in circles if c.get("r") == "3"]) == 6  # 3 runs x 2 methods
    assert len([c for c in circles if c.get("r") == "7"]) == 1  # the flagged regression
    assert len(root.findall("polygon")) == 2  # a CI band per method
    assert EVIL not in svg and "&lt;script&gt;" in svg
    assert "http" not in svg
    ET.fromstring(trend_svg(_history(1)))  # a single run still renders
    ET.fromstring(trend_svg(_history(0).reindex(columns=_history().columns)))


def test_bar_svg_one_bar_per_method_and_ci_whiskers():
    s = pd.DataFrame({"method": ["gradcam", "ig", "random"], "mean": [0.9, -0.1, 0.1], "ci_low": [0.8, -0.2, 0.05], "ci_high": [0.95, 0.0, 0.15]})
    root = ET.fromstring(bar_svg(s, title="pointing"))
    bars = [r for r in root.findall("rect")]
    assert len(bars) == 3
    # the gradcam bar is the longest, the floor is grey
    w = [float(r.get("width")) for r in bars]
    assert w[0] == max(w) and bars[2].get("fill") == "#9a9a9a"
    assert len(root.findall("line")) >= 3 * 3


def test_summary_svg_panels_floors_and_intervention():
    from medxgan.report.figures import summary_svg
    from tests.report._fixtures import with_intervention

    _, summary, _ = with_intervention("lesion")
    svg = summary_svg(summary)
    root = ET.fromstring(svg)  # well-formed XML
    texts = [t.text for t in root.iter("text")]
    assert "pointing game" in texts and "relevance mass" in texts
    assert "Grad-CAM" in texts and "random map" in texts and "intervention (boxes infilled)" not in texts
    assert svg.count('class="floor-mark"') == 2
    assert "own boxes infilled" in texts
    only_loc = summary_svg(summary[summary["method"] != "intervention"])
    assert "own boxes infilled" not in only_loc
    assert "no localisation or intervention values" in summary_svg(None)
    assert "<script" not in summary_svg(summary.assign(method=summary["method"].replace("ig", EVIL)))


def test_summary_figure_fits_its_longest_label():
    import re

    import pandas as pd

    from medxgan.catalogue import method_label
    from medxgan.report.figures import label_width, summary_svg

    long = "a method with a very long label indeed (forty-eight characters)"
    rows = [("counterfactual_ig", "pointing_game", 0.8, 0.7, 0.9), (long, "pointing_game", 0.5, 0.4, 0.6)]
    svg = summary_svg(pd.DataFrame(rows, columns=["method", "metric", "mean", "ci_low", "ci_high"]))
    x = float(re.search(r'<rect x="([0-9.]+)" y="\d+" width="[0-9.]+" height="\d+" fill="#fafafa"', svg).group(1))
    assert x >= label_width([long, method_label("counterfactual_ig")]) > 170
    assert x >= 0.6 * 11 * len(long)  # the label's right edge is left of the panel
