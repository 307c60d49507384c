"""The one HTML escaper of the report and a few tiny element helpers (no third-party imports).

Every text that reaches the page (HTML or inline SVG) goes through :func:`esc`: it escapes
``& < > " '`` and writes ``://`` as ``&#58;//`` so that the page holds no URL a browser or
scanner could take for a resource. The helpers take **already escaped** bodies; only
:func:`esc` turns a value into text.
"""

from __future__ import annotations

import base64
import html as _html
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

NA_CELL = '<td class="num">—</td>'  # an empty numeric cell


def esc(x: Any) -> str:
    """HTML-escape any value as text; '://' becomes '&#58;//' (no live-looking URLs)."""
    return _html.escape(str(x), quote=True).replace("://", "&#58;//")


def section(id_: str, title: str, body: str) -> str:
    """``<section id=..><h2>title</h2>body</section>`` (title escaped, body as given)."""
    return f'<section id="{id_}"><h2>{esc(title)}</h2>{body}</section>'


def table(rows: Iterable[str], head: Iterable[str] | None = None, cls: str | None = None) -> str:
    """A table of ready ``<tr>`` rows; ``head``: ready ``<th>`` cells of one header row."""
    c = f' class="{cls}"' if cls else ""
    thead = f"<thead><tr>{''.join(head)}</tr></thead>" if head is not None else ""
    return f"<table{c}>{thead}<tbody>{''.join(rows)}</tbody></table>"


def png_img(data: bytes, alt: str, cls: str = "") -> str:
    """An ``<img>`` holding PNG bytes as a ``data:`` URI (alt text escaped)."""
    b64 = base64.b64encode(data).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{esc(alt)}" src="data:image/png;base64,{b64}">'


#: the pages load nothing: images are data: URIs, the stylesheet is inline, no script runs
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def page(title: str, body: str) -> str:
    """A whole self-contained report page: ``title`` (escaped here), ``body`` (ready HTML)
    inside ``<main>``, the package stylesheet inline and :data:`CSP`."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>\n{asset('report.css')}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


@cache
def asset(name: str) -> str:
    """Text of the package data file ``medxgan/report/assets/<name>`` (UTF-8)."""
    return resources.files("medxgan.report").joinpath("assets").joinpath(name).read_text(encoding="utf-8")


__all__ = ["CSP", "NA_CELL", "asset", "esc", "page", "png_img", "section", "table"]
