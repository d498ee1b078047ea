"""RequestGuard: every malformed body, id and socket.io payload is refused with a plain message (pure checks, no
server; tests/integration/test_plain_bot.py sends the same inputs to a real `rasa run`)."""

from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace
from typing import Tuple

import pytest

from nlu_bert.http_guard import RequestGuard

from bad_inputs import API_CASES, CASES, LEAK, PARSE, SESSION, SOCKET_CASES, USER, WEBHOOK, j

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
        (
            b"hello",
            'The request body is not valid JSON (Expecting value). Send a JSON object such as {"text": "你好"}.',
        ),
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
    assert GUARD.problem(j({"sender": "用户 一/二?#%", "message": "你好"}), "message", "sender") is None


@pytest.mark.parametrize("body", [j({"message": "你好"}), j({"sender": None, "message": "你好"})])
def test_a_message_without_sender_is_refused_naming_the_field(body: bytes) -> None:
    # Rasa would put it into the shared conversation `default`, where every such client reads the others' replies
    status, message = GUARD.problem(body, "message", "sender")
    assert status == 400 and message.startswith("The request body has no `sender`.")
    assert '{"sender": "user-1", "message": "你好"}' in message


def test_error_texts_suggest_bodies_with_a_sender() -> None:
    for body in (b"", b"[]", b"{", j({"sender": "u"})):
        assert '"sender"' in GUARD.problem(body, "message", "sender")[1]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("abc", "abc"),
        ("%E7%94%A8%E6%88%B7%20%E4%B8%80", "用户 一"),
        ("a%2Fb", "a/b"),
        ("a/b", "a/b"),
        ("100%25", "100%"),
    ],
)
def test_conversation_ids_in_paths_are_percent_decoded(raw: str, expected: str) -> None:
    assert GUARD.conversation_id(raw) == (expected, None)


@pytest.mark.parametrize("raw", ["%FF", "a%0Ab", "%00", "%20%20", "x" * 256])
def test_unusable_conversation_ids_are_refused(raw: str) -> None:
    value, problem = GUARD.conversation_id(raw)
    assert value == "" and problem.startswith("The conversation id in the path")


API_FIELDS = {
    "/conversations/{cid}/trigger_intent": "trigger_intent",
    "/conversations/{cid}/execute": "execute",
    "/conversations/{cid}/tracker/events": "tracker/events",
    "/conversations/{cid}/messages": "messages",
}


# the body checks that need no domain (unknown intents and actions: tests/integration/test_plain_bot.py)
BODY_CASES = [c for c in API_CASES if (c[2] in API_FIELDS or c[2] == "/model/predict") and c[4] != (404,)]


@pytest.mark.parametrize("name, method, path, body, allowed", BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_api_bodies_are_checked(name: str, method: str, path: str, body: bytes, allowed: Tuple[int, ...]) -> None:
    if path == "/model/predict":
        problem = GUARD.events_problem(body, None)
    else:
        problem = GUARD.api_problem(body, API_FIELDS[path], None)
    assert problem is not None and problem[0] in allowed, problem
    assert not LEAK.search(problem[1]) and "0x" not in problem[1]


def test_trigger_intent_messages_are_plain() -> None:
    assert GUARD.api_problem(b"[]", "trigger_intent") == (
        400,
        'The request body must be a JSON object, got a JSON array. Send {"name": "greet"}.',
    )
    assert GUARD.api_problem(j({"name": 123}), "trigger_intent") == (
        400,
        "`name` must be the name of an intent (a non-empty string), got the JSON number 123.",
    )
    assert GUARD.api_problem(j({"name": "greet", "entities": {"product": "保温杯"}}), "trigger_intent") is None
    assert (
        GUARD.api_problem(
            j({"name": "greet", "entities": [{"entity": "product", "value": "保温杯"}]}), "trigger_intent"
        )
        is None
    )


@pytest.mark.parametrize(
    "name, event, payload", [c for c in SOCKET_CASES if c[1] == USER], ids=[c[0] for c in SOCKET_CASES if c[1] == USER]
)
def test_bad_socketio_messages_are_dropped(name: str, event: str, payload) -> None:
    channel = SimpleNamespace(session_persistence=True, metadata_key="metadata")
    problem = GUARD.socket_problem(payload, channel)
    assert problem is not None, name
    empty = isinstance(payload, dict) and (
        payload.get("message") is None or (isinstance(payload["message"], str) and not payload["message"].strip())
    )
    assert (problem == "") is empty  # empty messages are no messages: dropped without a warning


def test_good_socketio_messages_pass() -> None:
    channel = SimpleNamespace(session_persistence=True, metadata_key="metadata")
    assert GUARD.socket_problem({"message": "你好", "session_id": "abc", "metadata": {"a": 1}}, channel) is None
    assert GUARD.socket_problem({"message": "你好", "session_id": "abc", "metadata": '{"a": 1}'}, channel) is None
    # without session persistence the socket's own id is the conversation id: no session_id needed
    assert (
        GUARD.socket_problem({"message": "你好"}, SimpleNamespace(session_persistence=False, metadata_key="metadata"))
        is None
    )


@pytest.mark.parametrize("payload", [c[2] for c in SOCKET_CASES if c[1] == SESSION] + [None, {}, {"session_id": None}])
def test_unusable_session_requests_get_a_new_session_id(payload) -> None:
    issued = GUARD.session_id(payload)
    assert re.fullmatch(r"[0-9a-f]{32}", issued)
    assert GUARD.session_id({"session_id": "会话 1"}) == "会话 1"


class FakeResponse:
    def __init__(self, status: int, body: str) -> None:
        self.status, self.body, self.headers = status, body.encode("utf-8"), {"content-type": "text/plain"}


@pytest.mark.parametrize(
    "status, body",
    [
        (500, '{"reason": "ConversationError", "message": "An unexpected error occurred. Error: \'entities\'"}'),
        (500, "Internal Server Error"),
        (400, '{"message": "Supplied events are not valid. <object at 0x7f3a2c1d9e80>"}'),
        (400, '{"message": "(sqlite3.OperationalError) no such table [SQL: SELECT * FROM events]"}'),
        (409, 'Traceback (most recent call last):\n  File "/app/rasa/server.py", line 3'),
    ],
)
def test_error_answers_never_show_internals(status: int, body: str) -> None:
    response = FakeResponse(status, body)
    request = SimpleNamespace(method="POST", path="/x")
    asyncio.run(GUARD.scrub(request, response))
    answer = json.loads(response.body)
    assert answer["code"] == status and "the details are in the server log" in answer["message"]
    assert not LEAK.search(response.body.decode()) and response.headers["content-type"] == "application/json"


def test_plain_error_answers_are_kept() -> None:
    response = FakeResponse(404, '{"message": "Conversation ID not found."}')
    asyncio.run(GUARD.scrub(SimpleNamespace(method="GET", path="/x"), response))
    assert json.loads(response.body) == {"message": "Conversation ID not found."}


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match=re.escape("RequestGuard: `max_text_chars` must be an integer ≥ 1, got 0.")):
        RequestGuard(max_text_chars=0)
    assert RequestGuard.from_credentials({"max_text_chars": 10}).max_text_chars == 10
