"""The evidence report in a real browser (issue #21, item 4): a demo-sized report opened in
headless Chromium (Debian's ``chromium`` package; ``make test`` installs it where it can) must
raise no console error and no script exception, and no label of its inline SVG figures may be
clipped by the figure's edge. The test also takes the screenshot of the report's answers that
the README shows (``docs/img/report-answers.png``, written there when
``MEDXGAN_WRITE_SCREENSHOT=1``, else into the test's temporary folder), of the report at
``MEDXGAN_REPORT`` when that is set (a demo run's), else of a fixture report.

Chromium is driven through its DevTools protocol (``--remote-debugging-port``) with the
``websockets`` client that Prefect already installs; nothing is downloaded.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from medxgan.report import render_report
from tests.report._fixtures import sample_inputs

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(`apt-get install chromium`; `make test` installs it where it can)")

# every <text> of every inline <svg>: its box in the svg's own user units against the viewBox
CLIPPED_JS = """
(() => {
  const out = [];
  for (const svg of document.querySelectorAll('svg')) {
    const vb = svg.viewBox && svg.viewBox.baseVal;
    const w = vb && vb.width ? vb.width : svg.width.baseVal.value;
    const h = vb && vb.height ? vb.height : svg.height.baseVal.value;
    for (const t of svg.querySelectorAll('text')) {
      const b = t.getBBox();
      if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > w + 0.5 || b.y + b.height > h + 0.5)
        out.push({text: t.textContent, x: b.x, y: b.y, w: b.width, svg_w: w});
    }
  }
  return JSON.stringify(out);
})()
"""


class _Page:
    """One Chromium tab over the DevTools protocol: send commands, collect events."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2**20)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if e.get("method") == event:
                    return e
            self.events.append(json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic()))))
        raise TimeoutError(event)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium with a DevTools port; yields the port."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    p = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                          f"--user-data-dir={profile}", "--remote-debugging-port=0",
                          "--window-size=1200,1400", "about:blank"],
                         stderr=subprocess.PIPE, text=True)
    port, t0 = None, time.monotonic()
    while port is None and time.monotonic() - t0 < 60:
        line = p.stderr.readline()
        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line or "")
        if m:
            port = int(m.group(1))
        elif not line and p.poll() is not None:
            break
    if port is None:
        p.kill()
        pytest.fail("chromium did not open its DevTools port")
    yield port
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def _open(port: int, url: str) -> _Page:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    target = json.loads(urllib.request.urlopen(req, timeout=30).read())
    page = _Page(target["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log"):
        page.call(f"{domain}.enable")
    page.call("Emulation.setDeviceMetricsOverride", width=1200, height=1400, deviceScaleFactor=1,
              mobile=False)
    page.call("Page.navigate", url=url)
    page.wait_for("Page.loadEventFired")
    return page


def _errors(page: _Page) -> list[str]:
    out = []
    for e in page.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append(p.get("exceptionDetails", {}).get("text", "exception"))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(p["entry"].get("text", "log error"))
    return out


@pytest.mark.parametrize("kind", ["lesion", "shortcut", "given"])
def test_the_report_renders_without_errors_or_clipped_labels(chromium, tmp_path, kind):
    """``given``: the report at ``MEDXGAN_REPORT`` (e.g. a demo run's ``report/index.html``),
    which then also gives the screenshot."""
    given = os.environ.get("MEDXGAN_REPORT")
    if kind == "given":
        if not given:
            pytest.skip("set MEDXGAN_REPORT to a report/index.html to check it too")
        f = Path(given)
    else:
        f = tmp_path / "index.html"
        f.write_text(render_report(sample_inputs(kind, evidence=True)), encoding="utf-8")
    page = _open(chromium, f.as_uri())
    time.sleep(0.3)  # late console messages
    page.call("Runtime.evaluate", expression="0")
    assert _errors(page) == [], _errors(page)
    clipped = json.loads(page.call("Runtime.evaluate", expression=CLIPPED_JS,
                                   returnByValue=True)["result"]["value"])
    assert clipped == [], f"clipped figure labels: {clipped}"
    n_svg = page.call("Runtime.evaluate", expression="document.querySelectorAll('svg text').length",
                      returnByValue=True)["result"]["value"]
    assert n_svg > 10  # the figures were there to check
    if kind == ("given" if given else "lesion"):  # the screenshot of the answers the README shows
        box = page.call("Runtime.evaluate", returnByValue=True, expression=(
            "(() => { const a = document.querySelector('#answers') || document.querySelector('section');"
            " const r = a.getBoundingClientRect(); const c = document.querySelector('#criteria');"
            " const b = c ? c.getBoundingClientRect().bottom : r.bottom;"
            " return [0, 0, 1200, Math.min(1400, b + window.scrollY + 8)]; })()"))["result"]["value"]
        shot = page.call("Page.captureScreenshot", format="png",
                         clip={"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1})
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        out = ROOT / "docs" / "img" / "report-answers.png" if os.environ.get("MEDXGAN_WRITE_SCREENSHOT") \
            else tmp_path / "report-answers.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
    page.ws.close()
