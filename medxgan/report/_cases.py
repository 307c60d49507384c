"""The report's per-image sections: the gallery (image with boxes + each method's overlay)
and medXGAN's interpolation strips with f's probability per frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medxgan.catalogue import method_label, order_methods
from medxgan.report._html import esc, png_img, section
from medxgan.report._text import fmt
from medxgan.report.figures import decode_png, image_with_boxes_png, overlay_png


def _box_coords(b: Any) -> tuple[tuple[float, float, float, float], str | None]:
    if isinstance(b, Mapping):
        return (float(b["x0"]), float(b["y0"]), float(b["x1"]), float(b["y1"])), b.get("finding")
    t = tuple(b)
    return (float(t[0]), float(t[1]), float(t[2]), float(t[3])), (str(t[4]) if len(t) > 4 else None)


def _gallery_case(item: Mapping[str, Any]) -> str:
    iid = str(item.get("image_id", "?"))
    boxes, names = [], []
    for b in item.get("boxes") or ():
        xy, name = _box_coords(b)
        boxes.append(xy)
        if name:
            names.append(name)
    names += [str(f) for f in item.get("findings") or ()]
    title = f"<code>{esc(iid)}</code> · label {esc(item.get('label', '—'))}"
    if item.get("note"):
        title += f" · {esc(item['note'])}"
    if names:
        title += " · findings: " + ", ".join(esc(n) for n in dict.fromkeys(names))
    figs = []
    try:
        img = decode_png(item["image_png"])
    except Exception as exc:  # noqa: BLE001 - a broken image must not break the report
        return f'<div class="case"><h3>{title}</h3><p>image not readable ({esc(type(exc).__name__)})</p></div>'
    figs.append(f"<figure>{png_img(image_with_boxes_png(img, boxes), f'{iid} with boxes')}<figcaption>image and boxes</figcaption></figure>")
    overlays = dict(item.get("overlays") or {})
    for m in order_methods(overlays):
        try:
            png = overlay_png(img, np.asarray(overlays[m]), boxes)
        except Exception as exc:  # noqa: BLE001
            figs.append(f"<figure><p>{esc(m)}: no overlay ({esc(type(exc).__name__)})</p></figure>")
            continue
        figs.append(f"<figure>{png_img(png, f'{iid} {m}')}<figcaption>{esc(method_label(m))}</figcaption></figure>")
    return f'<div class="case"><h3>{title}</h3><div class="gallery">{"".join(figs)}</div></div>'


def gallery_section(items: Sequence[Mapping[str, Any]]) -> str:
    """One case per item: ``image_id, label, image_png, boxes, overlays {method: map}, note, findings``."""
    title = "Gallery: best and worst cases"
    if not items:
        return section("gallery", title, "<p>No gallery images were given.</p>")
    expl = "<p>Each case: the image with its annotated boxes (cyan), then each method's map over it (bright = relevant).</p>"
    return section("gallery", title, expl + "".join(_gallery_case(it) for it in items))


def strips_section(strips: Sequence[Mapping[str, Any]]) -> str:
    """One strip per item: ``image_id, strip_png, frame_probs``."""
    title = "medXGAN interpolation"
    if not strips:
        return section("strips", title, "<p>No interpolation strips were given.</p>")
    expl = (
        "<p>Frames from the generated negative counterpart x_neg (&alpha; = 0, left) to the image "
        "(&alpha; = 1, right), with the classifier's probability of the positive class for each "
        "frame: G(z_a, &alpha;&middot;z_p) for the published generator, x_neg + &alpha;(x &minus; "
        "x_neg) for the inpaint family (x_neg: the healthy in-filling of the smallest region that "
        "flips the classifier) and the residual family (x_neg = x + M(x), VA-GAN's learned "
        "additive map). On a phantom cohort the <em>true</em> healthy twin (the same "
        "subject rendered without its lesions, never seen by the generator) is shown beside the "
        "strip: the generated counterpart should look like it.</p>"
    )
    parts = [expl]
    for s in strips:
        iid = str(s.get("image_id", "?"))
        probs = [float(p) for p in s.get("frame_probs") or ()]
        img = png_img(s["strip_png"], f"{iid} interpolation", "strip") if s.get("strip_png") else "<p>no strip image</p>"
        tab = ""
        if probs:
            alphas = np.linspace(0, 1, len(probs)) if len(probs) > 1 else np.array([1.0])
            tab = (
                "<table><tbody><tr><th>&alpha;</th>"
                + "".join(f'<td class="num">{a:.2f}</td>' for a in alphas)
                + "</tr><tr><th>p(positive)</th>"
                + "".join(f'<td class="num">{fmt(p)}</td>' for p in probs)
                + "</tr></tbody></table>"
            )
        twin = (f'<figure class="twin">{png_img(s["twin_png"], f"{iid} true healthy twin", "twin")}'
                "<figcaption>true healthy twin</figcaption></figure>") if s.get("twin_png") else ""
        parts.append(f'<div class="case"><h3><code>{esc(iid)}</code></h3>{img}{twin}{tab}</div>')
    return section("strips", title, "".join(parts))


__all__ = ["gallery_section", "strips_section"]
