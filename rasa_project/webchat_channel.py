"""A Rasa input channel that serves the web chat page from the Rasa server itself.

Listed in ``rasa_project/credentials.yml``; ``rasa run --enable-api --cors "*"`` then serves

* ``/webhooks/webchat/``           the page (``rasa_project/webchat/index.html``, no CDN),
* ``/webhooks/webchat/<asset>``    its script and style sheet,
* ``/webhooks/rest/webhook``       the REST channel the page talks to (same origin),
* ``/model/parse``                 what the page's debug panel shows for every message.

The page needs ``--enable-api`` for ``/model/parse`` and the conversation history
(``/conversations/<id>/tracker``); without it the chat still works and the panel says why it is
empty. The page can also be opened from any static server with ``?server=http://host:5005``.
"""
from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional, Text

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

WEBCHAT_DIR = Path(__file__).resolve().parent / "webchat"


class WebChatInput(InputChannel):
    """Serves the static chat page; messages go through the ``rest`` channel."""

    def __init__(self, title: Optional[Text] = None) -> None:
        self.title = title

    @classmethod
    def name(cls) -> Text:
        return "webchat"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> "InputChannel":
        credentials = credentials or {}
        return cls(title=credentials.get("title"))

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        webchat = Blueprint("webchat_page", __name__)
        assets = {p.name: p for p in WEBCHAT_DIR.iterdir() if p.is_file() and not p.name.startswith(".")}

        @webchat.route("/", methods=["GET"])
        async def page(request: Request) -> HTTPResponse:
            if not request.path.endswith("/"):
                # The page's assets are relative links: they need the trailing slash.
                query = f"?{request.query_string}" if request.query_string else ""
                return response.redirect(request.path + "/" + query)
            html = (WEBCHAT_DIR / "index.html").read_text(encoding="utf-8")
            if self.title:
                html = html.replace("<title>青禾生活馆 · 智能客服</title>", f"<title>{self.title}</title>")
            return response.html(html, headers={"Cache-Control": "no-cache"})

        @webchat.route("/<asset:str>", methods=["GET"])
        async def asset(request: Request, asset: Text) -> HTTPResponse:
            if not asset or asset == "index.html":
                return await page(request)
            path = assets.get(asset)  # only the files of the folder: no path traversal
            if path is None:
                return response.json({"error": f"no such file: {asset}"}, status=404)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type.startswith("text/") or path.suffix in (".js", ".css", ".html", ".json", ".svg"):
                content_type += "; charset=utf-8"
            return await response.file(str(path), mime_type=content_type, headers={"Cache-Control": "no-cache"})

        return webchat
