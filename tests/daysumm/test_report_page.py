"""The statistics page in headless Chromium, driven over the DevTools protocol.

Chromium runs with no network features and a private profile; the test speaks the
DevTools protocol over a small WebSocket client (RFC 6455, text frames only: the
standard library has none), so it sees every request the page makes and every
console message, and takes the screenshot itself.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers.report_days import (
    AFTER,
    DAY,
    HOSTILE_NAME,
    HOSTILE_SUBJECT,
    at,
    hostile_day,
    scan,
)
from scanmail.config import Config
from scanmail.daysumm.output import write_page
from scanmail.daysumm.queries import make_report
from scanmail.events import Event, EventLog

CHROMIUM = shutil.which("chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
WIDTH, HEIGHT = 1200, 1600
OFFICE_HOURS = (1, 1, 1, 1, 1, 2, 4, 8, 12, 12, 11, 10, 9, 11, 12, 11, 9, 7, 5, 4, 3, 2, 2, 1)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install-deps)"
)


class DevTools:
    """One DevTools target over a WebSocket: commands, and the events that came meanwhile."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.stream = self.sock.makefile("rb")
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self._handshake(port, path)

    def _handshake(self, port: int, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = self.stream.readline()
        assert b" 101 " in status, status
        while self.stream.readline() not in (b"\r\n", b""):
            pass

    def close(self) -> None:
        self.stream.close()
        self.sock.close()

    def _send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = bytes([0x81, 0x80 | size])
        elif size < 1 << 16:
            header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, size: int) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            raise ConnectionError("DevTools connection closed")
        return data

    def _receive(self) -> dict[str, Any]:
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size >= 126:
                size = int.from_bytes(self._read(2 if size == 126 else 8), "big")
            data = self._read(size)  # a server never masks its frames
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools connection closed")
            if opcode in (0x0, 0x1, 0x2):
                message += data
                if first & 0x80:
                    return json.loads(message)  # type: ignore[no-any-return]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command; return its result, keeping the events that arrive before it."""
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]  # type: ignore[no-any-return]
            self.events.append(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The next event of a kind (or one already received)."""
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            message = self._receive()
            self.events.append(message)
            if message.get("method") == method:
                return message

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def of(self, method: str) -> list[dict[str, Any]]:
        return [event["params"] for event in self.events if event.get("method") == method]


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[int]:
    """Headless Chromium with a private profile; yields its DevTools port."""
    assert CHROMIUM is not None
    profile.mkdir()
    with open(profile.parent / "chromium.log", "wb") as log:
        process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not active.exists() or not active.read_text().strip():
            assert process.poll() is None, (profile.parent / "chromium.log").read_text()
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        yield int(active.read_text().split()[0])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def open_tab(port: int) -> DevTools:
    """The first page target, with the domains the test watches enabled."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/json/list")
    targets = json.loads(conn.getresponse().read())
    conn.close()
    url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    tab = DevTools(port, "/" + url.split("/", 3)[3])
    for domain in ("Page", "Network", "Runtime", "Log"):
        tab.call(f"{domain}.enable")
    tab.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
             deviceScaleFactor=1, mobile=False)
    return tab


def load(tab: DevTools, page: Path) -> None:
    tab.events.clear()
    tab.call("Page.navigate", url=page.as_uri())
    tab.wait_for("Page.loadEventFired")
    tab.evaluate("document.readyState")  # every event of the load has arrived before this


def problems(tab: DevTools, page: Path) -> list[str]:
    """Console errors, exceptions, log errors and requests for anything but the page."""
    found = [f"request {p['request']['url']}" for p in tab.of("Network.requestWillBeSent")
             if p["request"]["url"] != page.as_uri()]
    found += [f"console.{p['type']}" for p in tab.of("Runtime.consoleAPICalled")
              if p["type"] in ("error", "warning", "assert")]
    found += [f"exception {p['exceptionDetails']['text']}"
              for p in tab.of("Runtime.exceptionThrown")]
    found += [f"log {p['entry']['text']}" for p in tab.of("Log.entryAdded")
              if p["entry"]["level"] in ("error", "warning")]
    return found


def screenshot(tab: DevTools, path: Path, full: bool = False) -> None:
    params: dict[str, Any] = {"format": "png"}
    if full:
        size = tab.call("Page.getLayoutMetrics")["cssContentSize"]
        params.update(captureBeyondViewport=True, clip={
            "x": 0, "y": 0, "width": WIDTH, "height": size["height"], "scale": 1})
    path.write_bytes(base64.b64decode(tab.call("Page.captureScreenshot", **params)["data"]))


def busy_month(events: EventLog) -> None:
    """36 days of varied mail, busiest in office hours, in one transaction: a real month."""
    rng = random.Random(5)
    viruses = ("Win.Trojan.Agent-1", "Doc.Dropper.Emotet-7", "Pdf.Exploit.CVE_2023_1",
               "Html.Phishing.Bank-33", "Xls.Macro.Qakbot-2", "Js.Downloader.Nemucod-4")
    events.db.execute("BEGIN")
    for back in range(36):
        day = DAY - timedelta(days=back)
        weekend = day.weekday() >= 5
        reasons = (["clean"] * rng.randint(*(60, 90) if weekend else (150, 220))
                   + ["banned"] * rng.randint(2, 12) + ["unchecked"] * rng.randint(0, 2)
                   + ["infected"] * rng.randint(0, 14))
        for i, reason in enumerate(reasons):
            [hour] = rng.choices(range(24), OFFICE_HOURS)
            virus = (rng.choice(viruses),) if reason == "infected" else ()
            events.record(scan(f"m{back}-{i}", at(day, hour, rng.randint(0, 59)), reason, virus,
                               size=rng.randint(2_000, 400_000)), quiet=True)
    for hour in range(0, 24, 2):
        events.record(Event("sigupdate", verdict="ok", time=at(DAY, hour, 3),
                            detail="daily.cld 27573, built 3.2 hours before"), quiet=True)
    events.record(Event("outage", reason="down", time=at(DAY, 10, 12)), quiet=True)
    events.record(Event("outage", reason="up", time=at(DAY, 10, 19, 30)), quiet=True)
    events.db.execute("COMMIT")


@pytest.fixture
def page(tmp_path: Path, spool_root: Path) -> Path:
    """The statistics page for a busy month ending with a hostile message."""
    config = Config.from_mapping({"SPOOL_DIR": str(spool_root),
                                  "HOSTNAME": "gw.corp.example"})
    with EventLog(config.var_dir) as events:
        busy_month(events)
        hostile_day(events, spool_root)
    path = tmp_path / "index.html"
    write_page(make_report(config, DAY, AFTER), path)
    return path


def test_page_renders_in_chromium_without_errors_or_requests(tmp_path, page):
    with chromium(tmp_path / "profile") as port:
        tab = open_tab(port)
        load(tab, page)
        screenshot(tab, tmp_path / "report.png")
        screenshot(tab, tmp_path / "report-full.png", full=True)
        text = tab.evaluate("document.body.innerText")
        elements = tab.evaluate("document.querySelectorAll('script, img, iframe').length")
        bars = tab.evaluate("document.querySelectorAll('svg rect').length")
        title = tab.evaluate("document.title")
        tab.close()
    assert problems(tab, page) == []
    assert HOSTILE_SUBJECT in text and HOSTILE_NAME in text  # shown as text
    assert elements == 0 and title == "scanmail report 2025-03-11, gw.corp.example"
    assert bars > 100
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


def test_the_harness_sees_requests_and_errors(tmp_path, page):
    """The control: the same page with an external image and a script is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(page.read_text().replace(
        "</main>", '<img src="http://127.0.0.1:9/x.png"><script>console.error(1)</script></main>'))
    with chromium(tmp_path / "profile") as port:
        tab = open_tab(port)
        load(tab, bad)
        tab.close()
    found = problems(tab, bad)
    assert "request http://127.0.0.1:9/x.png" in found
    assert any(p.startswith("log ") and "x.png" in p for p in found), found  # CSP: blocked
    assert any(p.startswith("log ") and "inline script" in p for p in found), found
