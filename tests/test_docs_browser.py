"""Browser test of the generated audit site: headless Chromium opens the NCT07117175 page, the diagram and the
decision tables are there, the page logs no error, and a screenshot is saved under ci-artifacts/."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import selectors
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from escalation_rules.cli import main

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "ci-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"),
    pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (apt-get install graphviz)"),
]


class Browser:
    """Headless Chromium driven through the DevTools protocol over a pipe (no network port, no extra package)."""

    def __init__(self, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # runs in the child: the DevTools pipe is fds 3 (commands) and 4 (replies)
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1400,1000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._from_child, selectors.EVENT_READ)
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        """Send one command (to the page session once attached) and wait for its reply, keeping events."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """Wait for an event (looking first at those already received)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str, width: int = 1400, height: int = 1000) -> None:
        """Open ``url`` in a new tab of this size, attach to it and wait until it has loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return reply["result"]["value"]

    def screenshot(self, selector: str, path: Path) -> bytes:
        """Save a PNG of the first element matching ``selector`` (whole, even beyond the window, with an 8 px
        margin) to ``path``."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return {x: Math.max(0, r.left + window.scrollX - 8),"
                            " y: Math.max(0, r.top + window.scrollY - 8), w: r.width + 16, h: r.height + 16}; })()")
        shot = self.send("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True,
                          "clip": {"x": box["x"], "y": box["y"], "width": box["w"], "height": box["h"], "scale": 1}},
                         timeout=60)
        png = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    def close(self) -> None:
        """End the browser this object started."""
        try:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append(f"exception: {details.get('text')} {details.get('exception', {}).get('description', '')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params.get('type')}: {[a.get('value') for a in params.get('args', [])]}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"log: {entry.get('text')} {entry.get('url', '')}")
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit site of NCT07117175, built by the CLI as a user would."""
    pytest.importorskip("sphinx")
    out = tmp_path_factory.mktemp("site")
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        assert main(["docs", "spec/nct07117175", "--out", str(out), "--strict"]) == 0
    finally:
        os.chdir(cwd)
    return out


def test_audit_page_in_chromium_shows_diagram_and_tables_without_errors(site: Path, tmp_path: Path) -> None:
    """The NCT07117175 audit page loads in headless Chromium with its SVG diagram and decision tables, logs no
    error, and its screenshot is saved to ci-artifacts/."""
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((site / "index.html").as_uri())
        time.sleep(0.5)  # let the theme's scripts run
        evaluate = browser.evaluate
        facts = evaluate("""({
            title: document.title,
            svgNodes: document.querySelectorAll('.escalation-diagram svg g.node').length,
            svgEdges: document.querySelectorAll('.escalation-diagram svg g.edge').length,
            svgWidth: (document.querySelector('.escalation-diagram svg') || {getBoundingClientRect: () => ({width: 0})})
                .getBoundingClientRect().width,
            tables: document.querySelectorAll('table.escalation-decision-table').length,
            rows: document.querySelectorAll('table.escalation-decision-table tbody tr').length,
            verification: document.querySelectorAll('table.escalation-verification tbody tr').length,
            traceability: document.querySelectorAll('table.escalation-traceability tbody tr').length,
            fullSize: (document.querySelector('a.escalation-diagram-full') || {}).href || null,
            text: document.body.innerText.includes('every invariant holds'),
        })""")
        assert facts["svgNodes"] >= 15 and facts["svgEdges"] >= 20
        assert facts["svgWidth"] > 300
        assert facts["tables"] == 3 and facts["rows"] >= 14
        assert facts["verification"] == 10 and facts["traceability"] >= 4
        assert facts["fullSize"] and facts["fullSize"].endswith(".svg")
        assert facts["text"]
        height = evaluate("Math.ceil(document.documentElement.scrollHeight)")
        shot = browser.send("Page.captureScreenshot",
                            {"format": "png", "captureBeyondViewport": True,
                             "clip": {"x": 0, "y": 0, "width": 1400, "height": min(int(height), 16000), "scale": 1}},
                            timeout=60)
        ARTIFACTS.mkdir(exist_ok=True)
        png = base64.b64decode(shot["data"])
        (ARTIFACTS / "audit-nct07117175.png").write_bytes(png)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        # the diagram alone, scrolled into view, as a second artifact
        browser.screenshot(".escalation-diagram", ARTIFACTS / "audit-nct07117175-diagram.png")
        assert _errors(browser.events) == []
    finally:
        browser.close()


def test_stage_diagrams_are_legible_at_page_width(site: Path, tmp_path: Path) -> None:
    """Each stage's diagram (or each dose's, for a wide stage) is drawn at 80% of its natural size or more, so the
    arrows' 8-point labels are at least 8 CSS pixels high and the boxes' 10-point text at least 10 (the whole
    diagram at page width was about half that); each part is saved as a screenshot to ci-artifacts/."""
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((site / "index.html").as_uri())
        time.sleep(0.3)
        parts = browser.evaluate("""Array.from(document.querySelectorAll('.escalation-stage-diagram')).map((div, i) => {
            div.id = 'stage-diagram-' + i;
            const svg = div.querySelector('svg');
            return {label: div.getAttribute('aria-label'),
                    scale: svg.getBoundingClientRect().width / svg.viewBox.baseVal.width,
                    frame: div.getBoundingClientRect().width};
        })""")
        assert len(parts) >= 3
        assert any("stage titration" in p["label"] for p in parts)
        small = [(p["label"], round(8 * p["scale"], 1)) for p in parts if 8 * p["scale"] < 8]
        assert small == []
        for i in range(len(parts)):
            browser.screenshot(f"#stage-diagram-{i}", ARTIFACTS / f"audit-nct07117175-diagram-part-{i + 1}.png")
        assert _errors(browser.events) == []
    finally:
        browser.close()


def test_oc_chart_legend_is_not_cut_off(site: Path, tmp_path: Path) -> None:
    """Every scenario's name in the OC chart's legend is drawn whole inside the chart on screen; the chart is saved
    to ci-artifacts/."""
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((site / "index.html").as_uri())
        legend = browser.evaluate("""(() => {
            const svg = document.querySelector('svg.escalation-oc-chart');
            const box = svg.getBoundingClientRect();
            return Array.from(svg.querySelectorAll('text.legend')).map(t => {
                const r = t.getBoundingClientRect();
                return {text: t.textContent, inside: r.left >= box.left && r.right <= box.right + 0.5
                        && r.bottom <= box.bottom + 0.5, width: r.width};
            });
        })()""")
        assert len(legend) >= 4
        assert [item["text"] for item in legend if not item["inside"] or item["width"] <= 0] == []
        browser.screenshot("svg.escalation-oc-chart", ARTIFACTS / "audit-nct07117175-oc-chart.png")
    finally:
        browser.close()


def test_full_size_diagram_opens_without_errors(site: Path, tmp_path: Path) -> None:
    """The full-size SVG linked from the page opens on its own in Chromium as a drawing with every box."""
    svg = next((site / "_escalation").glob("NCT07117175-*.svg"))
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(svg.as_uri())
        nodes = browser.send("Runtime.evaluate", {"expression": "document.querySelectorAll('g.node').length",
                                                  "returnByValue": True})["result"]["value"]
        assert nodes >= 15
        assert _errors(browser.events) == []
    finally:
        browser.close()


def test_error_probe_sees_console_errors_and_exceptions(tmp_path: Path) -> None:
    """The probe is not vacuous: a page that logs an error and throws is reported twice."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); throw new Error('bang');</script></body></html>",
                    encoding="utf-8")
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        browser.send("Runtime.evaluate", {"expression": "1"})
        errors = _errors(browser.events)
        assert any("boom" in e for e in errors) and any("bang" in e for e in errors)
    finally:
        browser.close()


def _table_headers(page: Path) -> list[tuple[str, list[str]]]:
    """Each table of an HTML page: its class and the text of its column headers."""
    class Tables(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: list[tuple[str, list[str]]] = []
            self.cell: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table":
                self.tables.append((dict(attrs).get("class") or "", []))
            elif tag == "th" and self.tables:
                self.cell = ""

        def handle_endtag(self, tag: str) -> None:
            if tag == "th" and self.cell is not None:
                self.tables[-1][1].append(" ".join(self.cell.split()))
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell += data

    parser = Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    return [(css, heads) for css, heads in parser.tables if heads]


def _pdf_pages(pdf: Path) -> list[tuple[str, bool]]:
    """The text of each page of a PDF (pdftotext, layout kept) and whether the page is landscape (pdfinfo)."""
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "9999", str(pdf)], capture_output=True, text=True,
                          check=True).stdout
    sizes = [(float(m[1]), float(m[2])) for m in re.finditer(r"Page +\d+ size: +([\d.]+) x ([\d.]+)", info)]
    pages = text.split("\f")[:len(sizes)]
    return [(page, w > h) for page, (w, h) in zip(pages, sizes, strict=True)]


def _header_on_page(heads: list[str], lines: list[str], span: int) -> bool:
    """Do the header texts appear, in order, within ``span`` consecutive lines (wrapped header cells)?"""
    for i in range(len(lines)):
        words = " ".join(lines[i:i + span]).split()
        if all(w in words for h in heads for w in h.split()):
            if span > 1:
                return True
            if re.search(r"\s+".join(re.escape(h) for h in heads), " ".join(words)):
                return True
    return False


@pytest.mark.skipif(shutil.which("pdftotext") is None or shutil.which("pdfinfo") is None,
                    reason="poppler-utils is not installed (Debian: apt-get install poppler-utils)")
def test_docs_pdf_has_every_column_of_every_wide_table_on_landscape_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'docs --pdf' writes DIR/audit.pdf; every column header of every table of five columns or more is in the PDF's
    text on a landscape page (the eligibility table's Clause and the data dictionary's Source and Used by columns
    on one header line), portrait pages remain for the rest, and the pages that hold the once-clipped tables are
    saved as PNG to ci-artifacts/."""
    pytest.importorskip("sphinx")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "site"
    assert main(["docs", "spec/nct07117175", "--out", str(out), "--pdf"]) == 0
    pdf = out / "audit.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    pages = _pdf_pages(pdf)
    assert len(pages) > 5 and any(landscape for _, landscape in pages) and not all(land for _, land in pages)
    wide = [(css.split()[0], heads) for css, heads in _table_headers(out / "index.html") if "escalation-wide" in css]
    assert len(wide) >= 10
    missing = []
    for css, heads in wide:
        span = 1 if css in ("escalation-eligibility", "escalation-data-items") else 3
        found = [n for n, (text, landscape) in enumerate(pages, 1)
                 if landscape and _header_on_page(heads, text.splitlines(), span)]
        if not found:
            missing.append((css, heads))
        elif css in ("escalation-eligibility", "escalation-data-items"):
            ARTIFACTS.mkdir(exist_ok=True)
            subprocess.run(["pdftoppm", "-png", "-r", "60", "-singlefile", "-f", str(found[0]), "-l", str(found[0]),
                            str(pdf), str(ARTIFACTS / f"audit-pdf-{css}")], check=True)
    assert missing == []


#: The JavaScript that measures, for every table of the page, where its frame and each of its column headers are.
_TABLE_GEOMETRY = """Array.from(document.querySelectorAll('article table')).map(t => {
    const wrapper = t.closest('.table-wrapper') || t.parentElement;
    const frame = wrapper.getBoundingClientRect();
    return {cls: t.className, frameLeft: frame.left, frameRight: Math.min(frame.right, window.innerWidth),
            right: t.getBoundingClientRect().right, scrolls: ['auto', 'scroll'].includes(getComputedStyle(wrapper)
            .overflowX) && wrapper.scrollWidth >= t.getBoundingClientRect().width - 1,
            heads: Array.from(t.querySelectorAll('thead th')).map(th => {
                const r = th.getBoundingClientRect();
                return {text: th.innerText.trim(), left: r.left, right: r.right, width: r.width};
            })};
})"""

#: The tables whose columns were cut off before (eligibility Clause, data dictionary Source and Used by).
WIDE_TABLES = ("escalation-eligibility", "escalation-data-items", "escalation-decision-table",
               "escalation-transitions", "escalation-traceability", "escalation-vectors", "escalation-oc")


@pytest.mark.parametrize("width", [1400, 600])
def test_every_column_of_every_table_is_on_screen(site: Path, tmp_path: Path, width: int) -> None:
    """In a desktop window every column header of every table of the audit page lies inside the table's frame and
    the window (no column clipped, no scrolling needed); in a phone-sized window each table either fits too or its
    frame scrolls sideways to every column. The once-clipped wide tables are saved as screenshots to ci-artifacts/."""
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((site / "index.html").as_uri(), width=width)
        time.sleep(0.3)
        tables = browser.evaluate(_TABLE_GEOMETRY)
        assert len(tables) >= 15
        outside = [(t["cls"].split()[0], h["text"]) for t in tables for h in t["heads"]
                   if h["width"] <= 0 or h["left"] < t["frameLeft"] - 1 or h["right"] > t["frameRight"] + 1]
        wider = [t for t in tables if t["right"] > t["frameRight"] + 1]
        if width >= 1000:
            assert outside == [] and wider == []
        else:
            assert len(wider) <= 3  # only the widest tables need to scroll on a phone
            assert [t["cls"] for t in wider if not t["scrolls"]] == []
            assert {css for css, _ in outside} <= {t["cls"].split()[0] for t in wider}
        for css in WIDE_TABLES:
            png = browser.screenshot(f"table.{css}", ARTIFACTS / f"audit-table-{css}-{width}px.png")
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert _errors(browser.events) == []
    finally:
        browser.close()


def test_geometry_probe_sees_a_clipped_column(tmp_path: Path) -> None:
    """The probe is not vacuous: a table wider than its scrolling frame has its last header reported outside."""
    page = tmp_path / "clipped.html"
    page.write_text("<html><body><article><div class='table-wrapper' style='width:300px;overflow-x:auto'>"
                    "<table style='width:900px'><thead><tr><th>A</th><th>B</th><th>Clause</th></tr></thead>"
                    "</table></div></article></body></html>", encoding="utf-8")
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        [table] = browser.evaluate(_TABLE_GEOMETRY)
        assert [h["text"] for h in table["heads"] if h["right"] > table["frameRight"] + 1] == ["B", "Clause"]
    finally:
        browser.close()
