"""Untrusted strings end to end: a folder-CSV cohort whose finding name is a ``<script>`` tag and
whose image ids hold ``<b>`` renders them only escaped in the audit's HTML report.

Unit-level coverage elsewhere: ``tests/report/test_html.py::test_user_strings_are_escaped``
(every user string of the report), ``tests/ingest/test_process.py::test_safe_relpath`` and
``tests/ingest/test_folder.py`` (paths escaping the input root: ``../``, absolute paths).
"""

from __future__ import annotations

import html.parser

import numpy as np

from flows.audit import audit_flow
from medxgan.storage import Store
from tests.flows._configs import tiny
from tests.ingest.helpers import phantom, write_png

SCRIPT = "<script>alert(1)</script>"


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_script_finding_and_tag_ids_are_escaped_in_the_report(prefect_harness, tmp_path):
    root = tmp_path / "in"
    rows = ["image_id,path,label,x0,y0,x1,y1,finding"]
    for i in range(40):
        pos = i % 2 == 1
        box = (8 + i % 9, 10, 24 + i % 9, 26)
        write_png(str(root / "img" / f"{i}.png"),
                  phantom(48, 48, [box] if pos else [], seed=i).astype(np.uint8))
        rows.append(f"id{i}<b>x,img/{i}.png,1,{box[0]},{box[1]},{box[2]},{box[3]},{SCRIPT}"
                    if pos else f"id{i}<b>x,img/{i}.png,0,,,,,")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = tiny(str(tmp_path / "store"), name="untrusted",
               cohort={"source": "folder", "input": str(root / "labels.csv"), "size": 32},
               classifier={"train": {"epochs": 1, "batch": 16}},
               explain={"methods": ["gradcam", "random", "box_prior"], "max_images": 4,
                        "shard_size": 4},
               score={"n_boot": 20, "faithfulness": False})
    m = audit_flow(cfg)
    page = Store(m["run_url"]).read_bytes("report/index.html").decode()
    assert SCRIPT not in page and "<b>x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the finding is shown, as text
    assert "&lt;b&gt;x" in page                               # so are the image ids
    p = _Tags()
    p.feed(page)
    assert "script" not in p.tags
    text = "".join(p.text)
    assert SCRIPT in text and "<b>x" in text  # the parsed page shows the strings verbatim
