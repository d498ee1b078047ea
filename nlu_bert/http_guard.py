"""RequestGuard: turns malformed requests to Rasa's HTTP API into 4xx answers with a message.

Rasa 3.6 answers 500 (or crashes a handler) when `/model/parse` or the REST webhook get a body that is not JSON,
not an object, or has a non-string text; and it passes 100,000-character texts and megabyte sender ids through to
the NLU graph and the tracker store. Add the guard to ``credentials.yml`` and every such request gets a 400/413 with
a message saying what to send instead, before Rasa's handlers see it::

    nlu_bert.http_guard.RequestGuard:
      max_text_chars: 5000       # longer texts get 413
      max_sender_chars: 255      # the SQL tracker store's sender_id column is 255 characters
      max_body_bytes: 1000000

It also answers 503 with a message, instead of Rasa's silent ``200 []``, when a channel webhook receives a message
while the server has no model (``rasa run`` stays up when its model fails to load), so clients can retry.

It is an input channel only so that `rasa run` loads it from ``credentials.yml``; it installs an app-wide request
middleware and serves ``GET /webhooks/guard/`` (its limits).
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable, Dict, Optional, Text, Tuple

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

# path pattern → (field holding the user's text, field holding the sender id or None)
GUARDED: Tuple[Tuple["re.Pattern[str]", str, Optional[str]], ...] = (
    (re.compile(r"^/model/parse/?$"), "text", None),
    (re.compile(r"^/webhooks/rest/webhook/?$"), "message", "sender"),
    (re.compile(r"^/conversations/[^/]+/messages/?$"), "text", "sender"),
)
# where a channel hands a user's message to the agent (rest, webchat, any `/webhooks/<channel>/webhook`)
CHANNEL_WEBHOOK = re.compile(r"^/webhooks/[^/]+/webhook/?$")
NO_MODEL_MESSAGE = (
    "The server has no model loaded (it could not load one at start: see its log), so this message was not "
    "processed. Send it again once GET /status answers 200."
)


class RequestGuard(InputChannel):
    """Validates the bodies of Rasa's message endpoints; see the module docstring."""

    def __init__(
        self, max_text_chars: int = 5000, max_sender_chars: int = 255, max_body_bytes: int = 1_000_000
    ) -> None:
        for key, value in (
            ("max_text_chars", max_text_chars),
            ("max_sender_chars", max_sender_chars),
            ("max_body_bytes", max_body_bytes),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"RequestGuard: `{key}` must be an integer ≥ 1, got {value!r}. Set it in credentials.yml."
                )
        self.max_text_chars = max_text_chars
        self.max_sender_chars = max_sender_chars
        self.max_body_bytes = max_body_bytes

    @classmethod
    def name(cls) -> Text:
        return "guard"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> "RequestGuard":
        return cls(**(credentials or {}))

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("nlu_bert_request_guard", __name__)
        guard = self

        @bp.route("/", methods=["GET"])
        async def limits(request: Request) -> HTTPResponse:
            return response.json(
                {
                    "max_text_chars": guard.max_text_chars,
                    "max_sender_chars": guard.max_sender_chars,
                    "max_body_bytes": guard.max_body_bytes,
                }
            )

        @bp.listener("before_server_start")
        async def install(app: Any, _loop: Any) -> None:
            app.register_middleware(guard.check, "request")

        return bp

    async def check(self, request: Request) -> Optional[HTTPResponse]:
        """None lets the request through; otherwise the 4xx answer."""
        if request.method not in ("POST", "PUT"):
            return None
        match = next(
            ((text_key, sender_key) for pattern, text_key, sender_key in GUARDED if pattern.match(request.path)), None
        )
        if match is not None:
            problem = self.problem(request.body or b"", match[0], match[1], emulated="emulation_mode" in request.args)
            if problem is not None:
                status, message = problem
                reason = "BadRequest" if status == 400 else "PayloadTooLarge"
                return response.json(
                    {"status": "failure", "reason": reason, "message": message, "code": status}, status=status
                )
        if CHANNEL_WEBHOOK.match(request.path) and not _agent_ready(request.app):
            # Rasa itself answers 200 [] here and drops the message ("Ignoring message as there is no agent")
            return response.json(
                {"status": "failure", "reason": "NoModelLoaded", "message": NO_MODEL_MESSAGE, "code": 503}, status=503
            )
        return None

    def problem(
        self, body: bytes, text_key: str, sender_key: Optional[str], emulated: bool = False
    ) -> Optional[Tuple[int, str]]:
        """(status, message) for a bad body, None for a good one. Pure: tested without a server."""
        if len(body) > self.max_body_bytes:
            return 413, f"The request body has {len(body)} bytes; the limit is {self.max_body_bytes}."
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as e:
            return 400, f"The request body is not valid UTF-8 (byte {e.start}). Send JSON encoded as UTF-8."
        if not decoded.strip():
            return 400, f'The request body is empty. Send a JSON object such as {{"{text_key}": "你好"}}.'
        try:
            payload = json.loads(decoded)
        except (json.JSONDecodeError, RecursionError) as e:
            return (
                400,
                f'The request body is not valid JSON ({getattr(e, "msg", "too deeply nested")}). Send a JSON object such as {{"{text_key}": "你好"}}.',
            )
        if not isinstance(payload, dict):
            return (
                400,
                f'The request body must be a JSON object, got a JSON {_json_type(payload)}. Send {{"{text_key}": "你好"}}.',
            )
        if emulated:
            return None
        text = payload.get(text_key)
        if text_key not in payload or text is None:
            return 400, f'The request body has no `{text_key}`. Send {{"{text_key}": "你好"}}.'
        if not isinstance(text, str):
            return 400, f"`{text_key}` must be a string, got a JSON {_json_type(text)}."
        if len(text) > self.max_text_chars:
            return (
                413,
                f"`{text_key}` has {len(text)} characters; the limit is {self.max_text_chars}. Send a shorter message.",
            )
        if _has_surrogates(text):
            return (
                400,
                f"`{text_key}` contains unpaired UTF-16 surrogates (\\ud800-\\udfff escapes); send valid Unicode text.",
            )
        if sender_key is not None and sender_key in payload and payload[sender_key] is not None:
            sender = payload[sender_key]
            if not isinstance(sender, str):
                return 400, f"`{sender_key}` must be a string, got a JSON {_json_type(sender)}."
            if not sender.strip():
                return 400, f"`{sender_key}` must not be empty."
            if len(sender) > self.max_sender_chars:
                return 400, f"`{sender_key}` has {len(sender)} characters; the limit is {self.max_sender_chars}."
            if _has_surrogates(sender):
                return 400, f"`{sender_key}` contains unpaired UTF-16 surrogates; send valid Unicode text."
        return None


def _agent_ready(app: Any) -> bool:
    agent = getattr(getattr(app, "ctx", None), "agent", None)
    return bool(agent is not None and agent.is_ready())


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)
