"""RequestGuard: every malformed body gets a 4xx with a message (pure checks, no server)."""
from __future__ import annotations

import re
from typing import Tuple

import pytest

from bad_inputs import CASES, PARSE, WEBHOOK, j
from nlu_bert.http_guard import RequestGuard

GUARD = RequestGuard()
FIELDS = {PARSE: ("text", None), WEBHOOK: ("message", "sender")}


@pytest.mark.parametrize("name, path, body, allowed", CASES, ids=[c[0] for c in CASES])
def test_guard_answers_bad_bodies_with_a_message(name: str, path: str, body: bytes, allowed: Tuple[int, ...]) -> None:
    problem = GUARD.problem(body, *FIELDS[path])
    if problem is None:
        assert 200 in allowed, f"{name}: the guard let it through, but only {allowed} are acceptable"
    else:
        status, message = problem
        assert status in allowed and status != 200
        assert message.endswith(".") and len(message) > 20


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"hello", 'The request body is not valid JSON (Expecting value). Send a JSON object such as {"text": "你好"}.'),
        (j(["x"]), 'The request body must be a JSON object, got a JSON array. Send {"text": "你好"}.'),
        (j({"text": 5}), "`text` must be a string, got a JSON number."),
        (j({"text": "好" * 5001}), "`text` has 5001 characters; the limit is 5000. Send a shorter message."),
        (b'{"text": "\xff"}', "The request body is not valid UTF-8 (byte 10). Send JSON encoded as UTF-8."),
    ],
)
def test_guard_messages_say_what_to_send(body: bytes, expected: str) -> None:
    assert GUARD.problem(body, "text", None) == (400 if "limit" not in expected else 413, expected)


def test_good_bodies_pass() -> None:
    assert GUARD.problem(j({"text": "我要退款"}), "text", None) is None
    assert GUARD.problem(j({"sender": "user-1", "message": "你好"}), "message", "sender") is None
    assert GUARD.problem(j({"message": "你好"}), "message", "sender") is None  # Rasa's default sender


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match=re.escape("RequestGuard: `max_text_chars` must be an integer ≥ 1, got 0.")):
        RequestGuard(max_text_chars=0)
    assert RequestGuard.from_credentials({"max_text_chars": 10}).max_text_chars == 10
