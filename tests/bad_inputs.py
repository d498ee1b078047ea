"""Bad inputs for Rasa's HTTP API: (id, path, raw body bytes, acceptable statuses).

A status of 200 means "a valid parse is an acceptable answer" (the text is odd but legitimate).
"""
from __future__ import annotations

import json
from typing import List, Tuple

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
]
