"""Browser test of the generated audit site: headless Chromium opens the NCT07117175 page, the diagram and the
decision tables are there, the page logs no error, and a screenshot is saved under ci-artifacts/."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import shutil
import subprocess
import time
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
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        browser.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable")
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        browser.send("Page.navigate", {"url": (site / "index.html").as_uri()})
        browser.wait_for("Page.loadEventFired")
        time.sleep(0.5)  # let the theme's scripts run

        def evaluate(expression: str) -> Any:
            reply = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
            return reply["result"]["value"]

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
        box = evaluate("(() => { const r = document.querySelector('.escalation-diagram').getBoundingClientRect();"
                       " return {x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height}; })()")
        shot = browser.send("Page.captureScreenshot",
                            {"format": "png", "captureBeyondViewport": True,
                             "clip": {"x": box["x"], "y": box["y"], "width": box["w"], "height": box["h"], "scale": 1}},
                            timeout=60)
        (ARTIFACTS / "audit-nct07117175-diagram.png").write_bytes(base64.b64decode(shot["data"]))
        assert _errors(browser.events) == []
    finally:
        browser.close()


def test_full_size_diagram_opens_without_errors(site: Path, tmp_path: Path) -> None:
    """The full-size SVG linked from the page opens on its own in Chromium as a drawing with every box."""
    svg = next((site / "_escalation").glob("NCT07117175-*.svg"))
    browser = Browser(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        browser.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", {"url": svg.as_uri()})
        browser.wait_for("Page.loadEventFired")
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
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        browser.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", {"url": page.as_uri()})
        browser.wait_for("Page.loadEventFired")
        browser.send("Runtime.evaluate", {"expression": "1"})
        errors = _errors(browser.events)
        assert any("boom" in e for e in errors) and any("bang" in e for e in errors)
    finally:
        browser.close()


def test_docs_command_prints_the_audit_page_to_pdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'docs --pdf' writes DIR/audit.pdf, a PDF of several pages printed from the site by Chromium."""
    pytest.importorskip("sphinx")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "site"
    assert main(["docs", "spec/nct07117175", "--out", str(out), "--pdf"]) == 0
    pdf = (out / "audit.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") + pdf.count(b"/Type/Page") > 5
