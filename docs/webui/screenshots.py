"""Take the chat page's screenshots in docs/webui/: light and dark, desktop and phone width.

Starts `opengemma serve --watermark` (fresh keys) on a free loopback port, has one real exchange
with the embedded model through the page in headless Chromium, then photographs the page.

    .venv/bin/python docs/webui/screenshots.py
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from opengemma.safety.watermark import keygen

OUT = Path(__file__).resolve().parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]  # fmt: skip
PROMPT = "Write a Python function that returns the square of a number."
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def serve(keys: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "opengemma.cli", "serve", "--port", str(port),
           "--watermark", str(keys)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready")


def shrink(path: Path) -> None:
    """A 128-colour palette PNG: the page is flat colours, so a quarter of the bytes."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    proc, url = serve(keygen().save(tmp / "keys.json"))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            first = browser.new_context(viewport={"width": 1280, "height": 800})
            page = first.new_page()
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready=true]")
            page.click("#toggle-settings")
            page.fill("#set-max-tokens", "96")
            page.fill("#set-temperature", "1")
            page.fill("#set-top-k", "40")
            page.fill("#set-seed", "3")
            page.click("#toggle-settings")
            page.fill("#prompt", PROMPT)
            page.press("#prompt", "Enter")
            page.wait_for_selector("body:not(.running) #messages article.assistant .stat-tokens",
                                   timeout=300_000)  # fmt: skip
            state = first.storage_state()
            first.close()
            for scheme in ("light", "dark"):
                for name, (w, h) in SIZES.items():
                    ctx = browser.new_context(viewport={"width": w, "height": h},
                                              color_scheme=scheme, storage_state=state)  # fmt: skip
                    p = ctx.new_page()
                    p.goto(url + "/")
                    p.wait_for_selector("body[data-ready=true]")
                    if name == "desktop":  # the reply checked for the watermark
                        p.click("#messages article.assistant button[data-action=check]")
                        p.wait_for_selector("#check-result .verdict")
                    p.screenshot(path=str(OUT / f"{scheme}-{name}.png"))
                    shrink(OUT / f"{scheme}-{name}.png")
                    ctx.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
