"""Hostile and malformed inputs for a Rasa server with the RequestGuard, over every way in.

* ``CASES``: ``/model/parse`` and the REST webhook: (id, path, raw body bytes, acceptable statuses). A status of
  200 means "a valid answer is acceptable" (the text is odd but legitimate).
* ``API_CASES``: the HTTP API's conversation and model endpoints, called with the API token: (id, method, path with
  ``{cid}`` for a conversation id, raw body bytes or None, acceptable statuses).
* ``SOCKET_CASES``: socket.io events a client may send: (id, event, payload). None may crash the server or reach
  the dialogue; a valid message sent after each must still be answered.

Every answer must be a 4xx with a plain message or a valid answer, and no answer may show a stack trace, a path,
SQL or a memory address (``LEAK``).
"""

from __future__ import annotations

import json
import re
from typing import Any, List, Optional, Tuple

PARSE, WEBHOOK = "/model/parse", "/webhooks/rest/webhook"
BAD = (400, 413)


def j(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


CASES: List[Tuple[str, str, bytes, Tuple[int, ...]]] = [
    ("empty body", PARSE, b"", BAD),
    ("whitespace body", PARSE, b"   \n", BAD),
    ("not json", PARSE, b"hello", BAD),
    ("truncated json", PARSE, b'{"text": "\xe4\xbd\xa0\xe5\xa5\xbd"', BAD),
    ("json array", PARSE, j(["你好"]), BAD),
    ("json string", PARSE, j("你好"), BAD),
    ("json number", PARSE, b"42", BAD),
    ("json null", PARSE, b"null", BAD),
    ("missing text", PARSE, j({"message": "你好"}), BAD),
    ("text null", PARSE, j({"text": None}), BAD),
    ("text number", PARSE, j({"text": 123}), BAD),
    ("text list", PARSE, j({"text": ["你好"]}), BAD),
    ("text object", PARSE, j({"text": {"a": 1}}), BAD),
    ("text bool", PARSE, j({"text": True}), BAD),
    ("invalid utf-8", PARSE, b'{"text": "\xff\xfe\xfd"}', BAD),
    ("lone surrogate", PARSE, b'{"text": "\\ud800abc"}', BAD),
    ("100k characters", PARSE, j({"text": "退" * 100_000}), BAD),
    ("deeply nested", PARSE, b"[" * 100_000 + b"]" * 100_000, BAD),
    ("empty text", PARSE, j({"text": ""}), (200,) + BAD),
    ("whitespace text", PARSE, j({"text": " \t\n "}), (200,) + BAD),
    ("only emoji", PARSE, j({"text": "😀🎉🔥" * 50}), (200,)),
    ("control chars and NUL", PARSE, j({"text": "你\x00好\x07\x1b[31m"}), (200,)),
    ("right-to-left marks", PARSE, j({"text": "\u202e\u200f退款\u200e\u202c"}), (200,)),
    ("zero-width chars", PARSE, j({"text": "退\u200b款\ufeff"}), (200,)),
    ("intent syntax", PARSE, j({"text": "/greet"}), (200,)),
    ("intent syntax with entities", PARSE, j({"text": '/greet{"name": "小明"}'}), (200,)),
    ("broken intent syntax", PARSE, j({"text": "/greet{not json"}), (200,) + BAD),
    ("html and script", PARSE, j({"text": "<script>alert(1)</script>"}), (200,)),
    ("sql-looking text", PARSE, j({"text": "'; DROP TABLE events; --"}), (200,)),
    ("traditional and english", PARSE, j({"text": "我要退貨 refund please 123"}), (200,)),
    ("extra fields", PARSE, j({"text": "你好", "foo": [1, 2]}), (200,)),
    ("webhook not json", WEBHOOK, b"{{{", BAD),
    ("webhook missing message", WEBHOOK, j({"sender": "u1"}), BAD),
    ("webhook message number", WEBHOOK, j({"sender": "u1", "message": 5}), BAD),
    ("webhook sender number", WEBHOOK, j({"sender": 5, "message": "你好"}), BAD),
    ("webhook sender huge", WEBHOOK, j({"sender": "x" * 100_000, "message": "你好"}), BAD),
    ("webhook sender empty", WEBHOOK, j({"sender": "", "message": "你好"}), BAD),
    ("webhook 100k message", WEBHOOK, j({"sender": "u1", "message": "好" * 100_000}), BAD),
    ("webhook without sender", WEBHOOK, j({"message": "我的快递到哪了"}), BAD),
    ("webhook sender null", WEBHOOK, j({"sender": None, "message": "你好"}), BAD),
    ("webhook sender object", WEBHOOK, j({"sender": {"id": 1}, "message": "你好"}), BAD),
    ("webhook sender whitespace", WEBHOOK, j({"sender": " \t", "message": "你好"}), BAD),
    ("webhook sender with newline", WEBHOOK, j({"sender": "a\nb", "message": "你好"}), BAD),
    ("webhook sender with NUL", WEBHOOK, j({"sender": "a\x00b", "message": "你好"}), BAD),
    ("webhook sender lone surrogate", WEBHOOK, b'{"sender": "\\udfff", "message": "hi"}', BAD),
    ("webhook message null", WEBHOOK, j({"sender": "u1", "message": None}), BAD),
    ("webhook message with NUL", WEBHOOK, j({"sender": "u1", "message": "你\x00好"}), BAD),
    ("webhook message lone surrogate", WEBHOOK, b'{"sender": "u1", "message": "\\ud800"}', BAD),
    ("webhook body over 1 MB", WEBHOOK, j({"sender": "u1", "message": "x", "pad": "y" * 1_100_000}), BAD),
    # no message: `200 []`, nothing stored
    ("webhook empty message", WEBHOOK, j({"sender": "u1", "message": ""}), (200,)),
    ("webhook whitespace message", WEBHOOK, j({"sender": "u1", "message": " \n\t"}), (200,)),
    ("webhook only emoji", WEBHOOK, j({"sender": "u1", "message": "😀" * 10}), (200,)),
    ("webhook sql-looking sender", WEBHOOK, j({"sender": "x'; DROP TABLE events; --", "message": "你好"}), (200,)),
    ("webhook sender with slash and spaces", WEBHOOK, j({"sender": "用户 一/../二", "message": "你好"}), (200,)),
]

GET, POST, PUT = "GET", "POST", "PUT"
API_CASES: List[Tuple[str, str, str, Optional[bytes], Tuple[int, ...]]] = [
    ("trigger_intent array body", POST, "/conversations/{cid}/trigger_intent", b"[]", BAD),
    ("trigger_intent name number", POST, "/conversations/{cid}/trigger_intent", j({"name": 123}), BAD),
    ("trigger_intent name empty", POST, "/conversations/{cid}/trigger_intent", j({"name": ""}), BAD),
    ("trigger_intent name object", POST, "/conversations/{cid}/trigger_intent", j({"name": {"a": 1}}), BAD),
    (
        "trigger_intent unknown intent",
        POST,
        "/conversations/{cid}/trigger_intent",
        j({"name": "no_such_intent"}),
        (404,),
    ),
    (
        "trigger_intent entities string",
        POST,
        "/conversations/{cid}/trigger_intent",
        j({"name": "greet", "entities": "x"}),
        BAD,
    ),
    (
        "trigger_intent entities of numbers",
        POST,
        "/conversations/{cid}/trigger_intent",
        j({"name": "greet", "entities": [1, 2]}),
        BAD,
    ),
    (
        "trigger_intent entity value object",
        POST,
        "/conversations/{cid}/trigger_intent",
        j({"name": "greet", "entities": {"a": {"b": 1}}}),
        BAD,
    ),
    ("trigger_intent not json", POST, "/conversations/{cid}/trigger_intent", b"{name: greet}", BAD),
    ("trigger_intent empty body", POST, "/conversations/{cid}/trigger_intent", b"", BAD),
    ("execute name number", POST, "/conversations/{cid}/execute", j({"name": 5}), BAD),
    ("execute unknown action", POST, "/conversations/{cid}/execute", j({"name": "action_nope"}), (404,)),
    (
        "execute confidence string",
        POST,
        "/conversations/{cid}/execute",
        j({"name": "utter_greet", "confidence": "high"}),
        BAD,
    ),
    ("events number", POST, "/conversations/{cid}/tracker/events", j(5), BAD),
    ("events list of numbers", POST, "/conversations/{cid}/tracker/events", j([1, 2]), BAD),
    ("event without type", POST, "/conversations/{cid}/tracker/events", j({"name": "x"}), BAD),
    (
        "event slot name object",
        POST,
        "/conversations/{cid}/tracker/events",
        j({"event": "slot", "name": {}, "value": 1}),
        BAD,
    ),
    (
        "event action without name",
        PUT,
        "/conversations/{cid}/tracker/events",
        j([{"event": "action", "name": None}]),
        BAD,
    ),
    ("events not json", PUT, "/conversations/{cid}/tracker/events", b"[{", BAD),
    ("messages without sender", POST, "/conversations/{cid}/messages", j({"text": "你好"}), BAD),
    ("messages sender bot", POST, "/conversations/{cid}/messages", j({"text": "你好", "sender": "bot"}), BAD),
    ("messages text number", POST, "/conversations/{cid}/messages", j({"text": 5, "sender": "user"}), BAD),
    ("messages text empty", POST, "/conversations/{cid}/messages", j({"text": " ", "sender": "user"}), BAD),
    (
        "messages parse_data broken",
        POST,
        "/conversations/{cid}/messages",
        j({"text": "你好", "sender": "user", "parse_data": {"intent": 5}}),
        BAD,
    ),
    ("predict events broken", POST, "/model/predict", j([{"event": "user", "text": 5, "parse_data": 3}]), BAD),
    ("conversation id not utf-8", GET, "/conversations/%FF%FE/tracker", None, BAD),
    ("conversation id with newline", GET, "/conversations/a%0Ab/tracker", None, BAD),
    ("conversation id too long", GET, "/conversations/" + "x" * 300 + "/tracker", None, BAD),
    ("tracker include_events bogus", GET, "/conversations/{cid}/tracker?include_events=BOGUS", None, BAD),
    ("tracker until not a number", GET, "/conversations/{cid}/tracker?until=yesterday", None, (200,) + BAD),
    ("story of an unknown conversation", GET, "/conversations/never-seen-{cid}/story", None, (404,)),
    ("load a model from a path", PUT, "/model", j({"model_file": "/etc/passwd"}), BAD + (404, 409)),
]

# (id, event, payload); USER is the channel's user message event (credentials.yml: user_message_evt)
USER, SESSION = "user_uttered", "session_request"
SOCKET_CASES: List[Tuple[str, str, Any]] = [
    ("message empty", USER, {"message": ""}),
    ("message whitespace", USER, {"message": " \n "}),
    ("message missing (rasa-webchat's open without initPayload)", USER, {"customData": {}}),
    ("message null", USER, {"message": None}),
    ("message number", USER, {"message": 5}),
    ("message list", USER, {"message": ["你好"]}),
    ("message 100k characters", USER, {"message": "退" * 100_000}),
    ("message with NUL", USER, {"message": "你\x00好"}),
    ("message lone surrogate", USER, {"message": "\ud800"}),
    ("payload a string", USER, "你好"),
    ("payload a list", USER, ["你好"]),
    ("payload a number", USER, 42),
    ("payload null", USER, None),
    ("session_id a number", USER, {"message": "你好", "session_id": 5}),
    ("session_id empty", USER, {"message": "你好", "session_id": ""}),
    ("session_id 1000 characters", USER, {"message": "你好", "session_id": "s" * 1000}),
    ("session_id with newline", USER, {"message": "你好", "session_id": "a\nb"}),
    ("metadata not json", USER, {"message": "你好", "metadata": "{not json"}),
    ("metadata a list", USER, {"message": "你好", "metadata": [1, 2]}),
    ("metadata a json list", USER, {"message": "你好", "metadata": "[1, 2]"}),
    ("session_request a string", SESSION, "abc"),
    ("session_request a number", SESSION, 7),
    ("session_request session_id a number", SESSION, {"session_id": 5}),
    ("session_request session_id with newline", SESSION, {"session_id": "a\nb"}),
    ("an unknown event", "no_such_event", {"message": "你好"}),
]

# what must never reach a client
LEAK = re.compile(
    r"0x[0-9a-fA-F]{6,}|Traceback|File \"|\.py\b|site-packages|/(?:usr|home|tmp|root|work|opt)/|\[SQL:|sqlalchemy|"
    r"psycopg|sqlite3|SELECT .* FROM|<function |<bound method |object at ",
    re.IGNORECASE,
)
