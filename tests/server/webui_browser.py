"""Headless Chromium for the chat page's tests: Debian's `chromium` driven by Playwright from
PyPI (no browser download), and a page whose requests are all logged."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlparse

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

def chromium_path() -> str:
    path = os.environ.get("OPENGEMMA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail(
            "the chat page's browser tests need Chromium: on Debian/Ubuntu run "
            "`apt-get install -y chromium` (as root; `make test` does it), or point "
            "OPENGEMMA_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    return path


def launch():
    """Yields a headless Chromium (for a module-scoped `browser` fixture); fails, saying how to
    install it, when Chromium or Playwright is missing."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need Playwright: `.venv/bin/python -m pip install -c "
            "constraints.txt playwright` (it is in the dev extra; no `playwright install`: "
            "the tests drive the system's chromium)",
            pytrace=False,
        )
    with sync_playwright() as pw:
        # Playwright gives every launch a fresh, temporary --user-data-dir
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


class Page:
    """One browser context (its own localStorage) with the page open, its requests logged."""

    def __init__(self, browser, url: str, **context):
        self.url = url
        # without the page's Content-Security-Policy: Playwright's waits evaluate strings, and the
        # sanitizer tests then stand on the renderer alone (the header is tested on its own)
        self.context = browser.new_context(bypass_csp=True, **context)
        self.requests: list = []
        self.errors: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r))
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.open()

    def open(self) -> None:
        self.page.goto(self.url + "/")
        self.page.wait_for_selector("body[data-ready=true]")

    def reload(self) -> None:
        self.page.reload()
        self.page.wait_for_selector("body[data-ready=true]")

    def settings(self, **fields: str) -> None:
        if self.page.locator("#settings").is_hidden():
            self.page.click("#toggle-settings")
        for name, value in fields.items():
            self.page.fill(f"#set-{name.replace('_', '-')}", value)

    def send(self, text: str, wait: bool = True) -> None:
        self.page.fill("#prompt", text)
        self.page.press("#prompt", "Enter")
        if wait:
            self.wait_idle()

    def wait_idle(self, timeout: float = 120_000) -> None:
        self.page.wait_for_function("!document.body.classList.contains('running')", timeout=timeout)

    def stored(self) -> list[dict]:
        return self.page.evaluate("JSON.parse(localStorage.getItem('opengemma.conversations.v1'))")

    def chat_bodies(self) -> list[dict]:
        return [
            r.post_data_json
            for r in self.requests
            if r.url.endswith("/v1/chat/completions") and r.method == "POST"
        ]

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"errors in the page: {self.errors}"
        assert_local(self.requests)


def assert_local(requests) -> None:
    """No request of the browser went anywhere but 127.0.0.1."""
    assert requests, "the network log is empty: the recorder did not run"
    away = []
    for r in requests:
        u = urlparse(r.url)
        if u.scheme in ("data", "blob"):
            continue
        if u.scheme not in ("http", "https") or u.hostname != "127.0.0.1":
            away.append(r.url)
    assert not away, f"requests left 127.0.0.1: {away}"
