#!/usr/bin/env python
"""Refresh docs/webchat.png from a running assistant (``make run`` in another terminal).

Drives the web chat page in headless Chromium (Debian ``chromium``, via Playwright): a short
conversation, then a screenshot with the debug panel.

    python scripts/screenshot_webchat.py [--url http://localhost:5005] [--out docs/webchat.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import uuid
from pathlib import Path

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONVERSATION = ["你好", "帮我查一下订单2405200117", "1357", "那快递到哪了", "asdfgh"]  # 1357: the phone check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://localhost:5005")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "webchat.png"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    sender = f"screenshot-{uuid.uuid4().hex[:8]}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page.set_default_timeout(60_000)
        page.goto(f"{args.url}/webhooks/webchat/?sender={sender}")
        page.get_by_test_id("msg-bot").first.wait_for()
        for turn, text in enumerate(CONVERSATION, start=1):
            page.get_by_test_id("chat-input").fill(text)
            page.get_by_test_id("chat-input").press("Enter")
            page.get_by_test_id("msg-bot").nth(turn).wait_for()
            page.get_by_test_id("debug-entry").nth(turn - 1).wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=args.out)
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
