"""The web chat page in headless Chromium (Debian `chromium`, driven by Playwright).

Type a message, see the bot's reply and, in the debug panel, the intent (the channel's parse route); reload
and find the conversation again (it comes back from the tracker store), for a conversation id with spaces,
Chinese characters and a slash. The page uses nothing of Rasa's HTTP API, which is behind a token here. The screenshot goes to
tmp_path; set NLU_BERT_SCREENSHOT=docs/webchat.png to refresh the README's picture.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from assistant_helpers import REPO_ROOT, RasaServer

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(chromium_path: str):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        browser.close()


def send(page, text: str) -> None:
    page.get_by_test_id("chat-input").fill(text)
    page.get_by_test_id("chat-input").press("Enter")


def test_chat_in_the_browser(page, rasa_server: RasaServer, fresh_shop_db: str, sender: str, tmp_path: Path) -> None:
    sender = f"用户 一/{sender}"  # any id round-trips: spaces, Chinese, slashes
    page.goto(f"{rasa_server.url}/webhooks/webchat/?sender={quote(sender)}")
    bot = page.get_by_test_id("msg-bot")
    bot.first.wait_for()  # the welcome line
    assert page.get_by_test_id("sender-id").inner_text() == sender

    send(page, "你好")
    bot.nth(1).wait_for()
    assert "小禾" in bot.nth(1).inner_text()
    intent = page.get_by_test_id("debug-intent").first
    intent.wait_for()
    assert intent.inner_text() == "greet"
    assert "置信度" in page.get_by_test_id("debug-confidence").first.inner_text()
    assert page.get_by_test_id("debug-fewshot").first.is_visible()

    send(page, "帮我查一下订单2405200117")
    page.get_by_test_id("msg-bot").filter(has_text="后四位").wait_for()  # the identity check first
    page.get_by_test_id("debug-entry").nth(1).wait_for()
    newest = page.get_by_test_id("debug-entry").first  # newest on top
    assert newest.get_by_test_id("debug-intent").inner_text() == "check_order_status"
    assert "order_id = 2405200117" in newest.get_by_test_id("debug-entities").inner_text()
    # one chip per extractor: BERT's with its confidence, the regex's without one
    chips = [c.inner_text() for c in newest.get_by_test_id("debug-entity").all()]
    assert any(re.fullmatch(r"order_id = 2405200117 · BERT [01]\.\d{3}", c) for c in chips), chips
    assert "order_id = 2405200117 · Regex" in chips, chips
    send(page, "1357")
    page.get_by_test_id("msg-bot").filter(has_text="智能手环").wait_for()
    assert page.get_by_test_id("intent-tag").nth(1).inner_text().startswith("意图：check_order_status")

    page.wait_for_timeout(300)
    shot = tmp_path / "webchat.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("NLU_BERT_SCREENSHOT")
    if target:
        shutil.copyfile(shot, REPO_ROOT / target)

    # The history comes back from the tracker store after a reload.
    page.reload()
    page.locator(".msg.restored").first.wait_for()
    restored = page.locator(".msg.restored").all_inner_texts()
    assert any("2405200117" in text for text in restored)
    assert "tracker store" in page.locator(".msg.system").last.inner_text()
