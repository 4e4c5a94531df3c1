"""Remake the README's app screenshots from the shipped models, at 1280 px wide (`make screenshots`).

    python docs/make_screenshots.py          # docs/app-first-view.png, docs/app-search.png, docs/app-mask.png

Starts the app in this process on the default pair (SmolLM2-135M and the shipped GEM model), opens it
in headless Chromium, waits for the views drawn on open, runs the first search preset, and saves
each picture atomically. About 2 minutes on 2 cores with the map cache warm.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WIDTH, HEIGHT = 1280, 900
SLOW = 600_000  # ms: a cold map cache embeds 500 texts with both models


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save(page, name: str, **kwargs) -> None:
    tmp = ROOT / "docs" / f".{name}.tmp.png"
    page.screenshot(path=str(tmp), **kwargs)
    os.replace(tmp, ROOT / "docs" / name)
    print("wrote", ROOT / "docs" / name)


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    from lab.app.handlers import Session
    from lab.app.ui import LAUNCH, build_demo

    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        sys.exit("needs Chromium: apt-get install chromium (make test installs it)")
    session = Session()
    session.models()
    demo = build_demo(session)
    port = _port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.wait_for_selector("text=one prefill:", timeout=SLOW)
            page.wait_for_timeout(1000)
            _save(page, "app-first-view.png")  # what the page shows first, above the fold
            page.get_by_role("tab", name="Mask and attention").click()
            page.wait_for_selector('text="No leak."', timeout=SLOW)
            page.get_by_label("break it: the suffix may see the prefix").check()
            page.wait_for_selector('text="Leak."', timeout=SLOW)
            page.wait_for_timeout(1500)  # the redrawn mask settles
            page.get_by_text("Build the mask").scroll_into_view_if_needed()
            _save(page, "app-mask.png")
            page.get_by_role("tab", name="Embeddings").click()
            page.wait_for_selector("text=500 texts with labels", timeout=SLOW)
            page.get_by_text("interest rates and the economy", exact=True).click()
            expect(page.get_by_label("semantic search: query")).to_have_value("interest rates and the economy")
            page.get_by_role("button", name="Search").click()
            page.wait_for_selector("text=top 5 for the query", timeout=SLOW)
            page.get_by_text("semantic search: query").scroll_into_view_if_needed()
            _save(page, "app-search.png", full_page=True)
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
