"""rasa-webchat (the npm package) on a page of its own origin, talking to the assistant over socket.io, in headless
Chromium: open the page, send 你好, see the reply; the widget's empty message on connect gets no answer.

The widget's bundle comes from npm (`npm pack rasa-webchat@1.0.1`, cached in ~/.cache/nlu-bert/) or from
NLU_BERT_RASA_WEBCHAT=/path/to/lib/index.js; without npm and without that file the test is skipped with a reason.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import tarfile
import threading
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest

from assistant_helpers import REPO_ROOT, RasaServer

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RASA_WEBCHAT = "rasa-webchat@1.0.1"
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


@pytest.fixture(scope="session")
def rasa_webchat_js() -> Path:
    given = os.environ.get("NLU_BERT_RASA_WEBCHAT")
    if given:
        return Path(given)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nlu-bert" / RASA_WEBCHAT.replace("@", "-")
    bundle = cache / "package" / "lib" / "index.js"
    if bundle.exists():
        return bundle
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Debian: apt-get install -y npm) and NLU_BERT_RASA_WEBCHAT is not set")
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "pack", RASA_WEBCHAT, "--silent"], cwd=cache, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.skip(f"npm pack {RASA_WEBCHAT} failed: {result.stderr.strip()[-300:]}")
    with tarfile.open(cache / result.stdout.strip().splitlines()[-1]) as archive:
        archive.extract("package/lib/index.js", cache)
    return bundle


@pytest.fixture
def widget_page(rasa_webchat_js: Path, widget_port: int, tmp_path: Path) -> Iterator[str]:
    """rasa_project/widget/index.html and the bundle on their own origin (allowed by the server's CORS)."""
    shutil.copy(REPO_ROOT / "rasa_project" / "widget" / "index.html", tmp_path / "index.html")
    shutil.copy(rasa_webchat_js, tmp_path / "rasa-webchat.js")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", widget_port), partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{widget_port}/index.html"
    server.shutdown()
    server.server_close()


def test_rasa_webchat_gets_the_replies(widget_page: str, rasa_server: RasaServer, chromium_path: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="zh-CN")
            page.set_default_timeout(60_000)
            page.goto(f"{widget_page}?server={rasa_server.url}")
            page.wait_for_function("() => (sessionStorage.getItem('chat_session') || '').includes('session_id')")
            page.wait_for_timeout(2000)  # the widget's empty init message has gone out and been dropped
            assert page.locator(".rw-response").count() == 0
            page.fill(".rw-new-message", "你好")
            page.press(".rw-new-message", "Enter")
            # the widget shows a typing indicator first, then the text
            page.locator(".rw-response", has_text="小禾").first.wait_for()
            replies = page.locator(".rw-response").all_inner_texts()
            assert not any("没太理解" in reply for reply in replies), replies
            session_id = page.evaluate("() => JSON.parse(sessionStorage.getItem('chat_session')).session_id")
        finally:
            browser.close()
    assert rasa_server.user_texts(session_id) == ["你好"]
