"""Headless Chromium for tests, driven over the DevTools protocol on 127.0.0.1.

Usage::

    with Browser() as browser:
        page = browser.open(Path("report.html"))
        page.evaluate("document.title")
        page.screenshot(Path("shot.png"))
        page.errors          # console errors and uncaught exceptions seen so far

Like tests/pgcluster.py: the binary is Debian's `chromium`, installed with apt-get when it is
missing and we are root; otherwise `BrowserError`. Nothing here ever skips.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket  # websocket-client

__all__ = ["Browser", "BrowserError", "Page", "find_chromium"]

_NAMES = ("chromium", "chromium-browser")


class BrowserError(RuntimeError):
    """Raised when Chromium cannot be found, installed, started or driven."""


def _search() -> str | None:
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def find_chromium(install: bool = True) -> str:
    """The path of a Chromium binary, installing Debian's `chromium` with apt-get if root."""
    found = _search()
    if found:
        return found
    if install and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(
            "apt-get update && apt-get install -y --no-install-recommends chromium",
            shell=True,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BrowserError(
                "apt-get install chromium failed "
                f"(rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        found = _search()
        if found:
            return found
    raise BrowserError(
        f"No Chromium found (looked for {', '.join(_NAMES)} on PATH); install Debian's "
        "'chromium' package"
    )


class Page:
    """One tab, over its DevTools websocket."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """The first `method` event, received now or already."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise BrowserError(f"no {method} within {timeout}s")

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def key(self, key: str, code: str, text: str | None = None, key_code: int = 0) -> None:
        """Press and release one key, as a keyboard would."""
        down: dict[str, Any] = {"type": "keyDown", "key": key, "code": code}
        if key_code:
            down["windowsVirtualKeyCode"] = key_code
        if text is not None:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=code)

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (CSP violations too)."""
        self.evaluate("1")  # drain what arrived
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails"))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(params["entry"].get("text", "")[:500])
        return found

    @property
    def dialogs(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("method") == "Page.javascriptDialogOpening"]

    def close(self) -> None:
        self.ws.close()


class Browser:
    """A headless Chromium with remote debugging on 127.0.0.1, in a throwaway profile."""

    def __init__(self, width: int = 1300, height: int = 900) -> None:
        self.binary = find_chromium()
        self.size = (width, height)
        self.profile: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.pages: list[Page] = []

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-test-")
        args = [
            self.binary,
            "--headless",
            "--no-sandbox",  # as root, Chromium refuses to start without it
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited at start (rc={self.proc.returncode})")
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text().splitlines()[0])
                return
            time.sleep(0.05)
        self.stop()
        raise BrowserError("chromium did not open its DevTools port within 30s")

    def open(self, path: Path) -> Page:
        """A tab showing `path` (file://), loaded."""
        targets = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10).read()
        )
        tab = next(t for t in targets if t.get("type") == "page")
        page = Page(tab["webSocketDebuggerUrl"])
        self.pages.append(page)
        page.navigate(path.resolve().as_uri())
        return page

    def stop(self) -> None:
        for page in self.pages:
            with contextlib.suppress(Exception):
                page.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
