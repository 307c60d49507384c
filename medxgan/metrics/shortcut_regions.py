"""What the per-image shortcut search found, grouped: by appearance first, then by place.

The search (:func:`medxgan.metrics.shortcut.find_shortcut`) returns, for each positive that f
still calls positive without its findings, the region outside the findings whose in-filling made
f call it negative. Here every connected component of those masks (8-connectivity, skimage) is
described by

- **appearance**: polarity (``bright`` / ``dark`` / ``faint``: the mean of what the in-filling
  removed, ``x - x_filled``, above 0.03, below -0.03, or between), size (``small`` < 1 % of the
  image, ``medium`` < 5 %, else ``large``) and shape (``elongated`` when the longer side of its
  bounding box is at least 3 times the shorter, else ``compact``);
- **place**: the cell of a 3 x 3 grid its centroid falls in (``top-left corner``, ``top edge``,
  ``top-right corner``, ``left side``, ``centre``, ..., ``bottom-right corner``); an elongated
  component that touches the image's edge along its length is ``along the top edge`` (bottom,
  left, right).

Components of one polarity and shape whose areas lie within a factor :data:`AREA_FACTOR` of
a cluster's first (largest) member form a **cluster**, whatever their places: a marker that
moves between the corners is one cluster with four places; the size word comes from the
cluster's median area. A cluster's ``share`` is the share of the
positives f calls positive whose found region holds such a component; its ``box`` is the
bounding box of its components at its most frequent place (the legacy single region).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

AREA_FACTOR = 2.5
PLACES = (("top-left corner", "top edge", "top-right corner"),
          ("left side", "centre", "right side"),
          ("bottom-left corner", "bottom edge", "bottom-right corner"))


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """Connected components (8-connectivity) of a (H, W) bool mask, largest first."""
    from skimage.measure import label

    lab = label(mask, connectivity=2)
    comps = [lab == k for k in range(1, int(lab.max()) + 1)]
    return sorted(comps, key=lambda c: -int(c.sum()))


def describe_component(comp: np.ndarray, change: np.ndarray) -> dict:
    """Appearance and place of one component (H, W) bool; ``change`` (H, W) = x - x_filled."""
    H, W = comp.shape
    rows, cols = np.nonzero(comp)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    area = float(comp.sum()) / (H * W)
    contrast = float(change[comp].mean())
    h, w = y1 - y0, x1 - x0
    polarity = "bright" if contrast > 0.03 else "dark" if contrast < -0.03 else "faint"
    size = "small" if area < 0.01 else "medium" if area < 0.05 else "large"
    shape = "elongated" if max(h, w) >= 3 * min(h, w) else "compact"
    cy, cx = rows.mean() + 0.5, cols.mean() + 0.5
    place = PLACES[min(2, int(3 * cy / H))][min(2, int(3 * cx / W))]
    if shape == "elongated":  # a line or band along an edge is named by the edge
        edge = ("top" if y0 == 0 else "bottom" if y1 == H else None) if w >= h else \
            ("left" if x0 == 0 else "right" if x1 == W else None)
        place = f"along the {edge} edge" if edge else place
    return {"box": [x0, y0, x1, y1], "area": area, "contrast": contrast, "polarity": polarity,
            "size": size, "shape": shape, "place": place,
            "appearance": f"{size} {polarity} {'line or band' if shape == 'elongated' else 'object'}"}


def cluster_regions(masks: np.ndarray, changes: np.ndarray, image_index: np.ndarray,
                    n_reference: int, min_pixels: int = 2) -> list[dict]:
    """Clusters of the found regions (module docstring), largest first.

    Args:
        masks: (n, H, W) bool, found regions (only images where the search flipped f).
        changes: (n, H, W) float, x - x_filled of those images.
        image_index: (n,) int, each mask's image (index into the caller's batch).
        n_reference: the denominator of ``share`` (positives f calls positive).
        min_pixels: smaller components are ignored.

    Returns: dicts with ``appearance``, ``polarity``, ``size``, ``shape``, ``n_images``,
    ``share``, ``places`` ({place: images}), ``place`` (most frequent), ``place_text``,
    ``box`` ([x0, y0, x1, y1] at the most frequent place), ``area`` and ``contrast`` (medians),
    ``images`` (image indices) and ``boxes`` (one per image: its component's box).
    """
    comps: list[tuple[int, dict]] = []
    for m, ch, i in zip(masks, changes, image_index):
        for comp in _components(m):
            if comp.sum() >= min_pixels:
                comps.append((int(i), describe_component(comp, ch)))
    groups: list[list[tuple[int, dict]]] = []
    for i, d in sorted(comps, key=lambda t: -t[1]["area"]):
        for g in groups:
            head = g[0][1]
            if (head["polarity"], head["shape"]) == (d["polarity"], d["shape"]) \
                    and head["area"] <= AREA_FACTOR * d["area"]:
                g.append((i, d))
                break
        else:
            groups.append([(i, d)])
    out = []
    for items in groups:
        first: dict[int, dict] = {}
        for i, d in items:  # one component per image: its largest of this cluster
            first.setdefault(i, d)
        places = Counter(d["place"] for d in first.values())
        top, top_n = places.most_common(1)[0]
        at_top = [d["box"] for d in first.values() if d["place"] == top]
        box = [min(b[0] for b in at_top), min(b[1] for b in at_top),
               max(b[2] for b in at_top), max(b[3] for b in at_top)]
        n = len(first)
        some = next(iter(first.values()))
        area = float(np.median([d["area"] for d in first.values()]))
        size = "small" if area < 0.01 else "medium" if area < 0.05 else "large"
        kind = "line or band" if some["shape"] == "elongated" else "object"
        out.append({
            "appearance": f"{size} {some['polarity']} {kind}", "polarity": some["polarity"],
            "size": size, "shape": some["shape"], "n_images": n,
            "share": n / n_reference if n_reference else float("nan"),
            "places": dict(places.most_common()), "place": top,
            "place_text": place_text(places), "box": box, "area": area,
            "contrast": float(np.median([d["contrast"] for d in first.values()])),
            "images": list(first), "boxes": [d["box"] for d in first.values()],
        })
    return sorted(out, key=lambda c: (-c["n_images"], c["appearance"]))


def place_text(places: Counter) -> str:
    """``in the top-right corner`` when one place holds >= 70 % of the images, else ``in 4
    places: top-left corner (35), top-right corner (32), ...``."""
    total = sum(places.values())
    (top, n), = places.most_common(1)
    if n >= 0.7 * total or len(places) == 1:
        return top if top.startswith("along ") else f"in the {top}"
    parts = ", ".join(f"{p} ({k})" for p, k in places.most_common(4))
    more = f" and {len(places) - 4} more" if len(places) > 4 else ""
    return f"in {len(places)} places: {parts}{more}"


__all__ = ["PLACES", "cluster_regions", "describe_component", "place_text"]
