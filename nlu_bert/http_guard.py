"""RequestGuard: bad requests to Rasa's channels and HTTP API get a 4xx with a plain message.

Add it to ``credentials.yml`` (an input channel only so that ``rasa run`` loads it from there)::

    nlu_bert.http_guard.RequestGuard:
      max_text_chars: 5000       # longer texts get 413
      max_sender_chars: 255      # the SQL tracker store's sender_id column is 255 characters
      max_body_bytes: 1000000
      retry_window_seconds: 3600 # a REST message retried with the same X-Request-ID is answered once (retries.py)
      freeze_gc: true            # after the model is loaded, gc.freeze() its objects (gc_freeze.py)
      max_concurrent_messages: 4 # messages in progress at once in the worker, the rest wait in order (admission.py)

Before Rasa's handlers see a request it checks:

* ``/model/parse`` and the REST / callback webhooks: the body is a JSON object with a string text; the webhooks
  also need a ``sender`` (Rasa would put a message without one into the shared ``default`` conversation). An empty
  or whitespace-only message is no message: the webhook answers ``200 []`` and the conversation is not touched.
* conversation ids, in a ``sender``, a socket.io ``session_id`` or the path of ``/conversations/<id>/...``: a
  non-empty string of at most ``max_sender_chars`` characters, no control characters. Ids in paths are
  percent-decoded, so any id a channel accepts can be read back as ``/conversations/<percent-encoded id>/tracker``.
* the API's bodies: ``trigger_intent`` (a known intent name, entities as an object or a list of objects),
  ``execute``, ``messages`` and tracker events (each must build a tracker), instead of Rasa's 500s.
* socket.io (Rasa's ``socketio`` channel): empty messages are dropped; so are, with a warning in the log, payloads
  that are not objects, non-string or too long messages, invalid session ids and metadata. ``session_request``
  joins the session's room on every python-socketio version (Rasa 3.6 does not await ``enter_room``).

A REST message sent again with the same ``X-Request-ID`` after its turn was stored (nginx retrying on another worker,
or the client) gets that turn's replies, once (retries.py). The loaded model's objects are frozen out of full garbage
collections (gc_freeze.py); at most ``max_concurrent_messages`` messages are in progress, others wait (admission.py);
TEDPolicy is not run where RulePolicy's prediction wins anyway (rule_first.py). Error answers never show a stack
trace, a file path, SQL or a memory address (those go to the server log). With no model loaded, the channel webhooks
answer 503 (Rasa: ``200 []``, message dropped). ``GET /webhooks/guard/``: limits.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Text, Tuple
from urllib.parse import unquote

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from nlu_bert.action_payload import install as send_last_turns_to_actions
from nlu_bert.admission import install as install_admission
from nlu_bert.gc_freeze import freeze_loaded_objects
from nlu_bert.policy_logs import install as format_rule_states_lazily
from nlu_bert.retries import REST_WEBHOOK, SeenRequests, answer_retry, tag_rest_metadata
from nlu_bert.rule_first import install as skip_ted_where_rules_win
from nlu_bert.socketio_guard import guard_socketio

logger = logging.getLogger(__name__)

PARSE = re.compile(r"^/model/parse/?$")
# REST-style channels whose body is {"sender": ..., "message": ...}
SENDER_WEBHOOK = re.compile(r"^/webhooks/(?:rest|callback)/webhook/?$")
# where a channel hands a user's message to the agent (rest, callback, any `/webhooks/<channel>/webhook`)
CHANNEL_WEBHOOK = re.compile(r"^/webhooks/[^/]+/webhook/?$")
CONVERSATION_ACTION = re.compile(r"/(messages|trigger_intent|execute|tracker/events)/?$")
EVENTS_BODY = re.compile(r"^/model/predict/?$")  # a list of events, like `tracker/events`
NO_MODEL_MESSAGE = (
    "The server has no model loaded (it could not load one at start: see its log), so this message was not "
    "processed. Send it again once GET /status answers 200."
)
# what must never reach a client: memory addresses, tracebacks, source paths, SQL and driver names
LEAK = re.compile(
    r"0x[0-9a-fA-F]{6,}|Traceback \(most recent|File \"|\.py\b|site-packages|(?:^|[\s'\"(])/(?:usr|home|opt|tmp|root"
    r"|var|work|srv|app|etc)/|\[SQL:|\bsqlalchemy\b|\bpsycopg|\bsqlite3\b|\bSELECT\b.+\bFROM\b|\bINSERT INTO\b",
    re.IGNORECASE,
)
SERVER_ERROR_MESSAGE = "The server could not handle this request (error {ref}); the details are in the server log."


class RequestGuard(InputChannel):
    """Validates requests to Rasa's channels and HTTP API; see the module docstring."""

    def __init__(
        self,
        max_text_chars: int = 5000,
        max_sender_chars: int = 255,
        max_body_bytes: int = 1_000_000,
        retry_window_seconds: int = 3600,
        freeze_gc: bool = True,
        max_concurrent_messages: int = 4,
    ) -> None:
        for key, value, least in (
            ("max_text_chars", max_text_chars, 1),
            ("max_sender_chars", max_sender_chars, 1),
            ("max_body_bytes", max_body_bytes, 1),
            ("retry_window_seconds", retry_window_seconds, 0),
            ("max_concurrent_messages", max_concurrent_messages, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(
                    f"RequestGuard: `{key}` must be an integer ≥ {least}, got {value!r}. Set it in credentials.yml."
                )
        self.max_text_chars = max_text_chars
        self.max_sender_chars = max_sender_chars
        self.max_body_bytes = max_body_bytes
        self.seen = SeenRequests(retry_window_seconds)  # 0: retried messages are handled again
        if not isinstance(freeze_gc, bool):
            raise ValueError(f"RequestGuard: `freeze_gc` must be true or false, got {freeze_gc!r}.")
        self.freeze_gc = freeze_gc
        self.max_concurrent_messages = max_concurrent_messages  # 0: no bound

    @classmethod
    def name(cls) -> Text:
        return "guard"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> "RequestGuard":
        return cls(**(credentials or {}))

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        skip_ted_where_rules_win()  # before Rasa loads the model: its graph nodes keep the methods they find
        bp = Blueprint("nlu_bert_request_guard", __name__)
        guard = self

        @bp.route("/", methods=["GET"])
        async def limits(request: Request) -> HTTPResponse:
            return response.json(
                {
                    "max_text_chars": guard.max_text_chars,
                    "max_sender_chars": guard.max_sender_chars,
                    "max_body_bytes": guard.max_body_bytes,
                    "retry_window_seconds": int(guard.seen.window),
                    "max_concurrent_messages": guard.max_concurrent_messages,
                }
            )

        @bp.listener("before_server_start")
        async def install(app: Any, _loop: Any) -> None:
            app.register_middleware(guard.check, "request")
            app.register_middleware(guard.scrub, "response")
            for channel in getattr(app.ctx, "input_channels", None) or []:
                guard_socketio(guard, channel)
                tag_rest_metadata(channel)

        @bp.listener("after_server_start")
        async def freeze(app: Any, _loop: Any) -> None:  # Rasa loads the model before the server starts
            install_admission(guard.max_concurrent_messages)
            for patch in (format_rule_states_lazily, send_last_turns_to_actions):  # policy_logs.py, action_payload.py
                patch()
            if guard.freeze_gc:
                freeze_loaded_objects()

        return bp

    # ------------------------------------------------------------------ HTTP requests
    async def check(self, request: Request) -> Optional[HTTPResponse]:
        """None lets the request through; otherwise the 4xx answer (or `200 []` for an empty message)."""
        if getattr(request.ctx, "guard_checked", False):  # Sanic runs request middleware again on an exception
            return None
        request.ctx.guard_checked = True
        path = request.path
        if "conversation_id" in request.match_info:
            conversation_id, problem = self.conversation_id(request.match_info["conversation_id"])
            if problem is not None:
                return _failure(400, problem)
            request.match_info["conversation_id"] = conversation_id
        if request.method not in ("POST", "PUT"):
            return None
        body = request.body or b""
        problem: Optional[Tuple[int, str]] = None
        if PARSE.match(path):
            problem = self.problem(body, "text", None, emulated="emulation_mode" in request.args)
        elif SENDER_WEBHOOK.match(path):
            problem = self.problem(body, "message", "sender")
            if problem is None and _is_empty_message(body, "message"):
                return response.json([])  # no message: nothing to answer, nothing stored
        elif EVENTS_BODY.match(path):
            problem = self.events_problem(body, request.app)
        elif "conversation_id" in request.match_info and CONVERSATION_ACTION.search(path):
            problem = self.api_problem(body, CONVERSATION_ACTION.search(path).group(1), request.app)
        if problem is not None:
            return _failure(*problem)
        if CHANNEL_WEBHOOK.match(path) and not _agent_ready(request.app):
            # Rasa itself answers 200 [] here and drops the message ("Ignoring message as there is no agent")
            return _failure(503, NO_MODEL_MESSAGE, "NoModelLoaded")
        if REST_WEBHOOK.match(path):
            try:
                replies = await answer_retry(request, json.loads(body)["sender"], self.seen)
            except Exception:  # noqa: BLE001 - without the check the message is handled as before
                logger.warning("RequestGuard: could not check for a retried message", exc_info=True)
                replies = None
            if replies is not None:
                return response.json(replies)
        return None

    def problem(
        self, body: bytes, text_key: str, sender_key: Optional[str], emulated: bool = False
    ) -> Optional[Tuple[int, str]]:
        """(status, message) for a bad body of a message endpoint, None for a good one. Pure: tested without a server."""
        example = f'{{"sender": "user-1", "{text_key}": "你好"}}' if sender_key else f'{{"{text_key}": "你好"}}'
        payload, problem = self.json_object(body, example)
        if problem is not None:
            return problem
        if emulated:
            return None
        text = payload.get(text_key)
        if text_key not in payload or text is None:
            return 400, f"The request body has no `{text_key}`. Send {example}."
        problem = self.text_problem(text, text_key, nul_allowed=sender_key is None)
        if problem is not None:
            return problem
        if sender_key is not None:
            if payload.get(sender_key) is None:
                return 400, (
                    f"The request body has no `{sender_key}`. Every message needs the id of its conversation, "
                    f"for example {example}; messages without one would all go into one shared conversation."
                )
            _, problem = self.valid_id(payload[sender_key], f"`{sender_key}`")
            if problem is not None:
                return 400, problem
        return None

    def json_object(self, body: bytes, example: str) -> Tuple[Dict[str, Any], Optional[Tuple[int, str]]]:
        if len(body) > self.max_body_bytes:
            return {}, (413, f"The request body has {len(body)} bytes; the limit is {self.max_body_bytes}.")
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as e:
            return {}, (400, f"The request body is not valid UTF-8 (byte {e.start}). Send JSON encoded as UTF-8.")
        if not decoded.strip():
            return {}, (400, f"The request body is empty. Send a JSON object such as {example}.")
        try:
            payload = json.loads(decoded)
        except (json.JSONDecodeError, RecursionError) as e:
            return {}, (
                400,
                f"The request body is not valid JSON ({getattr(e, 'msg', 'too deeply nested')}). Send a JSON object such as {example}.",
            )
        if not isinstance(payload, dict):
            return {}, (
                400,
                f"The request body must be a JSON object, got a JSON {_json_type(payload)}. Send {example}.",
            )
        return payload, None

    def text_problem(self, text: Any, key: str, nul_allowed: bool = True) -> Optional[Tuple[int, str]]:
        if not isinstance(text, str):
            return 400, f"`{key}` must be a string, got a JSON {_json_type(text)}."
        if len(text) > self.max_text_chars:
            return (
                413,
                f"`{key}` has {len(text)} characters; the limit is {self.max_text_chars}. Send a shorter message.",
            )
        if _has_surrogates(text):
            return (
                400,
                f"`{key}` contains unpaired UTF-16 surrogates (\\ud800-\\udfff escapes); send valid Unicode text.",
            )
        if not nul_allowed and "\x00" in text:
            return 400, f"`{key}` contains a NUL character (\\u0000); remove it."
        return None

    def valid_id(self, value: Any, what: str) -> Tuple[str, Optional[str]]:
        """(id, None) for a usable conversation id, else (``""``, why not)."""
        if not isinstance(value, str):
            return "", f"{what} must be a string, got a JSON {_json_type(value)}."
        if not value.strip():
            return "", f"{what} must not be empty."
        if len(value) > self.max_sender_chars:
            return "", f"{what} has {len(value)} characters; the limit is {self.max_sender_chars}."
        if _has_surrogates(value):
            return "", f"{what} contains unpaired UTF-16 surrogates; send valid Unicode text."
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            return "", f"{what} contains control characters (such as a newline, a tab or NUL); leave them out."
        return value, None

    def conversation_id(self, raw: str) -> Tuple[str, Optional[str]]:
        """The percent-decoded id in the path of `/conversations/<id>/...`, or why it is not usable."""
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return (
                "",
                "The conversation id in the path is not percent-encoded UTF-8; encode it as JavaScript's encodeURIComponent does.",
            )
        return self.valid_id(decoded, "The conversation id in the path")

    def api_problem(self, body: bytes, action: str, app: Any = None) -> Optional[Tuple[int, str]]:
        """Checks the bodies of the API's conversation endpoints (`trigger_intent`, `execute`, `messages`, events)."""
        if action == "tracker/events":
            return self.events_problem(body, app)
        payload, problem = self.json_object(
            body, '{"name": "greet"}' if action != "messages" else '{"text": "你好", "sender": "user"}'
        )
        if problem is not None:
            return problem
        if action == "messages":
            if payload.get("sender") != "user":
                return 400, '`sender` must be "user": only user messages can be added here.'
            problem = self.text_problem(payload.get("text"), "text", nul_allowed=False)
            if problem is None and not payload["text"].strip():
                problem = 400, "`text` is empty: there is no message to add."
            return problem or _parse_data_problem(payload.get("parse_data"))
        name = payload.get("name")
        if not isinstance(name, str) or not name.strip():
            what = "intent" if action == "trigger_intent" else "action"
            return 400, f"`name` must be the name of an {what} (a non-empty string), got {_shown(name)}."
        domain = getattr(getattr(getattr(app, "ctx", None), "agent", None), "domain", None)
        if action == "execute":
            if domain is not None and name not in domain.action_names_or_texts:
                return 404, f"The action {_shown(name)} does not exist in the domain."
            if payload.get("policy") is not None and not isinstance(payload["policy"], str):
                return 400, f"`policy` must be a string, got a JSON {_json_type(payload['policy'])}."
            confidence = payload.get("confidence")
            if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))):
                return 400, f"`confidence` must be a number, got a JSON {_json_type(confidence)}."
            return None
        if domain is not None and name not in domain.intents:
            return 404, f"The intent {_shown(name)} does not exist in the domain."
        return _entities_problem(payload.get("entities"))

    def events_problem(self, body: bytes, app: Any) -> Optional[Tuple[int, str]]:
        """Tracker events must be objects with an `event` name from which Rasa can build a tracker."""
        if len(body) > self.max_body_bytes:
            return 413, f"The request body has {len(body)} bytes; the limit is {self.max_body_bytes}."
        try:
            events = json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return (
                400,
                'The request body is not valid JSON. Send an event such as {"event": "slot", "name": "product", "value": "保温杯"} or a list of events.',
            )
        events = events if isinstance(events, list) else [events]
        for index, event in enumerate(events):
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                return (
                    400,
                    f"Event {index} must be a JSON object with a string `event` (its type), got {_shown(event)}.",
                )
        from rasa.shared.core.trackers import DialogueStateTracker

        domain = getattr(getattr(getattr(app, "ctx", None), "agent", None), "domain", None)
        try:
            DialogueStateTracker.from_dict("guard-check", events, domain.slots if domain is not None else [])
        except Exception as e:  # noqa: BLE001 - any failure here is a bad event
            logger.info("RequestGuard: refused events (%s: %s)", type(e).__name__, e)
            return (
                400,
                "The events are not valid Rasa events (see the HTTP API's event format): a field has the wrong type or is missing.",
            )
        return None

    # ------------------------------------------------------------------ HTTP answers
    async def scrub(self, request: Request, resp: HTTPResponse) -> None:
        """Error answers that would show internals (500s, tracebacks, paths, SQL, addresses) get a plain message."""
        status = int(getattr(resp, "status", 200))
        if status < 400 or not isinstance(getattr(resp, "body", None), bytes):
            return
        text = resp.body.decode("utf-8", errors="replace")
        if status != 500 and not LEAK.search(text):
            return
        ref = uuid.uuid4().hex[:8]
        logger.error(
            "RequestGuard: error %s answering %s %s with %s: %s", ref, request.method, request.path, status, text[:2000]
        )
        reason = "ServerError"
        try:
            reason = str(json.loads(text).get("reason") or reason)
        except (ValueError, AttributeError):
            pass
        message = (
            SERVER_ERROR_MESSAGE.format(ref=ref)
            if status >= 500
            else f"The request was refused (error {ref}); the details are in the server log."
        )
        body = {
            "status": "failure",
            "reason": reason if not LEAK.search(reason) else "ServerError",
            "message": message,
            "code": status,
        }
        resp.body = json.dumps(body).encode("utf-8")  # changed in place: later middleware (CORS) still runs
        for header in [h for h in resp.headers if h.lower() in ("content-length", "content-type")]:
            del resp.headers[header]
        resp.content_type = resp.headers["content-type"] = "application/json"

    # ------------------------------------------------------------------ socket.io

    def socket_problem(self, data: Any, channel: Any) -> Optional[str]:
        """Why a socket.io user message is dropped ("" for an empty message), None to let it through."""
        if not isinstance(data, dict):
            return f"the payload must be a JSON object, got {_shown(data)}"
        text = data.get("message")
        if text is None or (isinstance(text, str) and not text.strip()):
            return ""
        problem = self.text_problem(text, "message", nul_allowed=False)
        if problem is not None:
            return problem[1]
        if getattr(channel, "session_persistence", False):
            _, problem_text = self.valid_id(data.get("session_id"), "`session_id`")
            if problem_text is not None:
                return problem_text
        metadata = data.get(getattr(channel, "metadata_key", "metadata") or "metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except (json.JSONDecodeError, RecursionError):
                return "the metadata is a string that is not JSON"
        if metadata is not None and not isinstance(metadata, dict):
            return f"the metadata must be a JSON object, got {_shown(metadata)}"
        return None

    def session_id(self, data: Any) -> str:
        """The session id a socket.io client asked for when usable, else a new one (the client adopts it)."""
        wanted = data.get("session_id") if isinstance(data, dict) else None
        if wanted is not None:
            value, problem = self.valid_id(wanted, "`session_id`")
            if problem is None:
                return value
            logger.warning(
                "RequestGuard: socket.io session_request with an unusable session_id (%s); a new one is issued", problem
            )
        return uuid.uuid4().hex


def _entities_problem(entities: Any) -> Optional[Tuple[int, str]]:
    if entities is None or entities == [] or entities == {}:
        return None
    if isinstance(entities, dict):
        bad = next((k for k, v in entities.items() if isinstance(v, (dict, list))), None)
        return None if bad is None else (400, f"`entities.{bad[:50]}` must be a string, number or boolean.")
    if isinstance(entities, list):
        for index, entity in enumerate(entities):
            if not isinstance(entity, dict) or not isinstance(entity.get("entity"), str) or "value" not in entity:
                return 400, f'`entities[{index}]` must be an object such as {{"entity": "product", "value": "保温杯"}}.'
        return None
    return (
        400,
        f'`entities` must be an object such as {{"product": "保温杯"}} or a list of entities, got a JSON {_json_type(entities)}.',
    )


def _parse_data_problem(parse_data: Any) -> Optional[Tuple[int, str]]:
    if parse_data is None:
        return None
    example = '{"intent": {"name": "greet", "confidence": 1.0}, "entities": []}'
    intent = parse_data.get("intent") if isinstance(parse_data, dict) else None
    if (
        not isinstance(intent, dict)
        or not isinstance(intent.get("name"), str)
        or not isinstance(parse_data.get("entities"), list)
    ):
        return 400, f"`parse_data` must be an object such as {example}."
    problem = _entities_problem(parse_data["entities"])
    return None if problem is None else (400, problem[1].replace("`entities", "`parse_data.entities"))


def _is_empty_message(body: bytes, key: str) -> bool:
    text = json.loads(body.decode("utf-8")).get(key)
    return isinstance(text, str) and not text.strip()


def _failure(status: int, message: str, reason: Optional[str] = None) -> HTTPResponse:
    reason = reason or {400: "BadRequest", 404: "NotFound", 413: "PayloadTooLarge"}.get(status, "Error")
    return response.json({"status": "failure", "reason": reason, "message": message, "code": status}, status=status)


def _agent_ready(app: Any) -> bool:
    agent = getattr(getattr(app, "ctx", None), "agent", None)
    return bool(agent is not None and agent.is_ready())


def _shown(value: Any) -> str:
    """A JSON value in an error message: its type, and the value itself when it is short and plain."""
    if isinstance(value, str):
        return json.dumps(value[:60] + ("…" if len(value) > 60 else ""), ensure_ascii=False)
    if value is None or isinstance(value, (bool, int, float)):
        return f"the JSON {_json_type(value)} {json.dumps(value)}"
    return f"a JSON {_json_type(value)}"


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


__all__: List[str] = ["RequestGuard", "guard_socketio"]
