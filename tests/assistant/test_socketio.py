"""The assistant over Rasa's socket.io channel (credentials.yml: `socketio:` with session_persistence), as rasa-webchat
talks to it, with python-socketio's AsyncClient; then rasa-webchat itself in headless Chromium (test_rasa_webchat.py)."""

from __future__ import annotations

import asyncio

import pytest
from socketio_client import ChatClient, texts

from assistant_helpers import RasaServer

pytestmark = pytest.mark.slow


def test_an_order_over_socketio_across_a_reload(rasa_server: RasaServer, fresh_shop_db: str) -> None:
    async def conversation() -> str:
        client = ChatClient(rasa_server.url)
        try:
            session_id = await client.connect()
            assert "小禾" in texts(await client.say("你好"))
            ask = texts(await client.say("帮我查一下订单2405190555"))
            assert "后四位" in ask and "京东" not in ask
        finally:
            await client.close()
        # the page is reloaded: a new socket, the same session, the same conversation (the phone is still asked for)
        again = ChatClient(rasa_server.url, transports=["polling", "websocket"])
        try:
            assert await again.connect(session_id) == session_id
            assert "京东物流" in texts(await again.say("4826"))
            await again.emit("user_uttered", {"session_id": session_id})  # rasa-webchat's open without initPayload
            assert await again.silence(3.0) == []
        finally:
            await again.close()
        return session_id

    session_id = asyncio.run(conversation())
    assert rasa_server.user_texts(session_id) == ["你好", "帮我查一下订单2405190555", "4826"]
