"""Screenshots of the verdict page for the README, run by hand: one model validated on few videos (it says it
cannot state its error rates) and one validated on many (it states them, with their sample sizes).

    python docs/make_screenshots.py --model small=SMALL.safetensors --clip small=CLIP.mp4 \
        --model dfdc=DFDC.safetensors --clip dfdc=FACE.jpg

Each model's page, after its input's verdict, goes to docs/serve-NAME.png. Needs Debian's chromium and
Playwright (the test extra).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=FILE")
    ap.add_argument("--clip", action="append", required=True, metavar="NAME=FILE")
    args = ap.parse_args()
    models, clips = _pairs(args.model), _pairs(args.clip)
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "fakefinder", "serve", "--port", str(port),
                               *[f"--model={n}={m}" for n, m in models.items()]])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/api/models", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for name, clip in clips.items():
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(url)
                page.wait_for_selector("#model option", state="attached")
                page.select_option("#model", name)
                page.set_input_files("#file", clip)
                page.wait_for_selector("#verdict:not([hidden])", timeout=300_000)
                page.wait_for_function("() => [...document.images].every(i => i.complete)")
                out = DOCS / f"serve-{name}.png"
                page.screenshot(path=str(out), full_page=True)
                print(f"wrote {out}")
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
