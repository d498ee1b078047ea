"""A Rasa input channel that serves the web chat page from the Rasa server itself.

Listed in ``rasa_project/credentials.yml``; ``rasa run`` then serves

* ``/webhooks/webchat/``                 the page (``rasa_project/webchat/index.html``, no CDN),
* ``/webhooks/webchat/<asset>``          its script and style sheet,
* ``/webhooks/webchat/status``           whether a model is loaded (the page's status line),
* ``/webhooks/webchat/history?sender=``  the conversation's user and bot messages (restored on reload),
* ``/webhooks/webchat/parse``            what ``/model/parse`` would answer, for the page's NLU debug panel
                                         (only with ``debug_panel: true``).

The page sends messages through the ``rest`` channel (``/webhooks/rest/webhook``). It needs nothing of Rasa's
HTTP API, so the API can stay closed (``--auth-token``, or no ``--enable-api``) while the page works. The history
of a conversation is readable by whoever knows its id, as the conversation itself is (the REST channel continues
any conversation whose id it is given): the page makes 128-bit random ids. The page can also be opened from any
static server with ``?server=http://host:5005`` (that origin then needs ``--cors``).
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Text

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from nlu_bert.http_guard import RequestGuard

WEBCHAT_DIR = Path(__file__).resolve().parent / "webchat"
#: the most messages the history answer holds (the latest ones)
MAX_HISTORY = 200


class WebChatInput(InputChannel):
    """Serves the static chat page and the few reads it needs; messages go through the ``rest`` channel."""

    def __init__(self, title: Optional[Text] = None, debug_panel: bool = True) -> None:
        self.title = title
        self.debug_panel = bool(debug_panel)
        self.checks = RequestGuard()  # the same text and id checks as the REST channel

    @classmethod
    def name(cls) -> Text:
        return "webchat"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> "InputChannel":
        credentials = credentials or {}
        return cls(title=credentials.get("title"), debug_panel=credentials.get("debug_panel", True))

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

        @webchat.route("/status", methods=["GET"])
        async def status(request: Request) -> HTTPResponse:
            agent = _agent(request)
            model = Path(agent.processor.model_filename or "").name if agent is not None else ""
            return response.json({"model_loaded": agent is not None, "model": model, "debug_panel": self.debug_panel})

        @webchat.route("/history", methods=["GET"])
        async def history(request: Request) -> HTTPResponse:
            sender, problem = self.checks.valid_id(request.args.get("sender"), "The query parameter `sender`")
            if problem is not None:
                return _error(400, problem)
            agent = _agent(request)
            if agent is None:
                return _error(503, "The server has no model loaded yet; try again once it has.")
            tracker = await agent.tracker_store.retrieve_full_tracker(sender)
            events = tracker.events if tracker is not None else []
            return response.json({"sender": sender, "messages": conversation_messages(events, self.debug_panel)})

        @webchat.route("/parse", methods=["POST"])
        async def parse(request: Request) -> HTTPResponse:
            if not self.debug_panel:
                return _error(404, "The NLU debug panel is off (debug_panel: false in credentials.yml).")
            problem = self.checks.problem(request.body or b"", "text", None)
            if problem is not None:
                return _error(*problem)
            agent = _agent(request)
            if agent is None:
                return _error(503, "The server has no model loaded yet; try again once it has.")
            text = json.loads(request.body)["text"]
            return response.json(await agent.parse_message(text))

        @webchat.route("/<asset:str>", methods=["GET"])
        async def asset(request: Request, asset: Text) -> HTTPResponse:
            if not asset or asset == "index.html":
                return await page(request)
            path = assets.get(asset)  # only the files of the folder: no path traversal
            if path is None:
                return _error(404, f"no such file: {asset[:100]}")
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type.startswith("text/") or path.suffix in (".js", ".css", ".html", ".json", ".svg"):
                content_type += "; charset=utf-8"
            return await response.file(str(path), mime_type=content_type, headers={"Cache-Control": "no-cache"})

        return webchat


def conversation_messages(events: List[Any], with_intents: bool) -> List[Dict[str, Any]]:
    """The user's and the bot's messages among a tracker's events, oldest first (at most MAX_HISTORY)."""
    messages: List[Dict[str, Any]] = []
    for event in events:
        kind = getattr(event, "type_name", "")
        if kind == "user" and event.text:
            message: Dict[str, Any] = {"role": "user", "text": event.text}
            intent = event.intent or {}
            if with_intents and intent.get("name"):
                message["intent"] = {"name": intent["name"], "confidence": intent.get("confidence")}
            messages.append(message)
        elif kind == "bot" and (event.text or (event.data or {}).get("image")):
            data = event.data or {}
            messages.append(
                {"role": "bot", "text": event.text, "image": data.get("image"), "buttons": data.get("buttons")}
            )
    return messages[-MAX_HISTORY:]


def _agent(request: Request) -> Any:
    agent = getattr(request.app.ctx, "agent", None)
    return agent if agent is not None and agent.is_ready() else None


def _error(status: int, message: str) -> HTTPResponse:
    return response.json({"status": "failure", "message": message, "code": status}, status=status)
