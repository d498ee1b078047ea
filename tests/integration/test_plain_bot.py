"""A plain Rasa bot (plain_bot.py) behind the RequestGuard, driven as widgets and hostile clients drive it: a socket.io
client with session persistence, REST messages without a sender, and every kind of bad input of bad_inputs.py over
REST, socket.io and the HTTP API. Real `rasa run`, real python-socketio client, nothing mocked."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import List

import pytest
from plain_bot import PlainBot
from socketio_client import ChatClient, texts

from bad_inputs import API_CASES, CASES, LEAK, SOCKET_CASES
from rasa_process import http

pytestmark = pytest.mark.slow
WEBHOOK = "/webhooks/rest/webhook"


def tracker_texts(bot: PlainBot, conversation_id: str) -> List[str]:
    path = urllib.parse.quote(conversation_id, safe="")
    status, tracker = http("GET", f"{bot.url}/conversations/{path}/tracker?token={bot.token}")
    assert status == 200, tracker
    return [e.get("text") for e in tracker["events"] if e["event"] == "user"]


def test_socketio_with_session_persistence_delivers_the_replies(plain_bot: PlainBot) -> None:
    async def conversation() -> None:
        for transports in (["websocket"], ["polling"]):
            client = ChatClient(plain_bot.url, transports)
            try:
                session_id = await client.connect()
                assert isinstance(session_id, str) and len(session_id) >= 16
                assert "你好！我是测试机器人" in texts(await client.say("你好"))
                assert "营业" in texts(await client.say("几点"))
            finally:
                await client.close()
            assert tracker_texts(plain_bot, session_id) == ["你好", "几点"]  # the session id is the conversation

            # the widget reloads: a new socket asks for the same session and gets its replies
            again = ChatClient(plain_bot.url, transports)
            try:
                assert await again.connect(session_id) == session_id
                assert "再见" in texts(await again.say("再见"))
            finally:
                await again.close()

    asyncio.run(conversation())


def test_an_empty_message_is_no_message_on_socketio_and_rest(plain_bot: PlainBot) -> None:
    async def conversation() -> str:
        client = ChatClient(plain_bot.url)
        try:
            session_id = await client.connect()
            # rasa-webchat opened without initPayload sends {"customData": ..., "session_id": ...}: no `message`
            await client.emit("user_uttered", {"customData": {"language": "zh"}, "session_id": session_id})
            for empty in ("", "  ", "\n\t"):
                await client.say(empty, timeout=0.1)
            assert await client.silence(3.0) == []  # not "抱歉，我没太理解"
            assert "你好！" in texts(await client.say("你好"))
            return session_id
        finally:
            await client.close()

    session_id = asyncio.run(conversation())
    assert tracker_texts(plain_bot, session_id) == ["你好"]
    for empty in ("", "   "):
        assert http("POST", f"{plain_bot.url}{WEBHOOK}", {"sender": "rest-empty", "message": empty}) == (200, [])
    assert tracker_texts(plain_bot, "rest-empty") == []


def test_rest_messages_without_sender_share_nothing(plain_bot: PlainBot) -> None:
    status, answer = http("POST", f"{plain_bot.url}{WEBHOOK}", {"message": "你好"})
    assert status == 400 and "`sender`" in answer["message"]
    assert tracker_texts(plain_bot, "default") == []
    status, answer = http("POST", f"{plain_bot.url}{WEBHOOK}", {"sender": "客户 A/1", "message": "你好"})
    assert status == 200 and answer[0]["recipient_id"] == "客户 A/1"
    assert tracker_texts(plain_bot, "客户 A/1") == ["你好"]


def test_the_api_is_closed_without_the_token(plain_bot: PlainBot) -> None:
    for method, path, body in (
        ("GET", "/conversations/x/tracker", None),
        ("POST", "/conversations/x/trigger_intent", {"name": "greet"}),
        ("POST", "/model/parse", {"text": "你好"}),
        ("PUT", "/model", {"model_file": "x"}),
    ):
        status, answer = http(method, f"{plain_bot.url}{path}", body)
        assert status == 401, (path, status, answer)


def _check_answer(name: str, status: int, answer, allowed, failures: List[str]) -> None:
    shown = json.dumps(answer, ensure_ascii=False) if not isinstance(answer, str) else answer
    if status not in allowed:
        failures.append(f"{name}: {status} not in {allowed}: {shown[:200]}")
    elif status >= 400 and not (
        isinstance(answer, dict) and isinstance(answer.get("message"), str) and answer["message"]
    ):
        failures.append(f"{name}: {status} without a plain message: {shown[:200]}")
    if LEAK.search(shown):
        failures.append(f"{name}: the answer shows internals: {shown[:300]}")


def test_hostile_inputs_over_rest_socketio_and_the_api(plain_bot: PlainBot) -> None:
    failures: List[str] = []

    def still_serving(after: str) -> None:
        status, answer = http("POST", f"{plain_bot.url}{WEBHOOK}", {"sender": "probe", "message": "你好"})
        if status != 200 or "测试机器人" not in json.dumps(answer, ensure_ascii=False):
            failures.append(f"after {after}: the server answered {status} {str(answer)[:200]}")

    for name, path, body, allowed in CASES:
        status, answer = http("POST", f"{plain_bot.url}{path}?token={plain_bot.token}", raw=body)
        _check_answer(name, status, answer, allowed, failures)
        still_serving(name)

    http("POST", f"{plain_bot.url}{WEBHOOK}", {"sender": "victim", "message": "你好"})  # a conversation to attack
    for name, method, path, body, allowed in API_CASES:
        url = f"{plain_bot.url}{path.format(cid='victim')}"
        url += ("&" if "?" in url else "?") + f"token={plain_bot.token}"
        status, answer = http(method, url, raw=body)
        _check_answer(name, status, answer, allowed, failures)
        still_serving(name)
    assert tracker_texts(plain_bot, "victim")[:1] == ["你好"]

    async def sockets() -> None:
        client = ChatClient(plain_bot.url)
        try:
            await client.connect()
            for name, event, payload in SOCKET_CASES:
                await client.emit(event, payload)
                got = await client.silence(0.5)
                if got:
                    failures.append(f"socket.io {name}: the bot answered {got}")
                if not client.sio.connected:
                    failures.append(f"socket.io {name}: the server closed the connection")
                    await client.connect()
                replies = await client.say("你好", quiet=0.2)
                if "测试机器人" not in texts(replies):
                    failures.append(f"socket.io after {name}: no reply to a good message ({replies})")
            # unusable session ids in session_request: a new one is issued and works
            for request in ("abc", 7, {"session_id": 5}, {"session_id": "a\nb"}):
                fresh = ChatClient(plain_bot.url)
                try:
                    issued = await fresh.connect(request=request)
                    if not (isinstance(issued, str) and len(issued) == 32) or "测试机器人" not in texts(
                        await fresh.say("你好")
                    ):
                        failures.append(f"session_request {request!r}: got {issued!r}")
                finally:
                    await fresh.close()
        finally:
            await client.close()

    asyncio.run(sockets())
    assert not failures, "\n".join(failures)
    kinds = len(CASES) + len(API_CASES) + len(SOCKET_CASES)
    assert kinds >= 40 and len(API_CASES) >= 20 and len(SOCKET_CASES) >= 20
    log = plain_bot.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log.split("Rasa server is up and running")[-1], log[-3000:]
