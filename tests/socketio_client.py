"""A socket.io chat client as rasa-webchat and Rasa's chat widget are one, on python-socketio's AsyncClient.

The widget connects, asks for a session (``session_request``), gets ``session_confirm`` with the session id, sends
``user_uttered`` {"message", "session_id"} and receives each bot message as a ``bot_uttered`` event.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Sequence

import socketio


class ChatClient:
    def __init__(self, url: str, transports: Sequence[str] = ("websocket",)) -> None:
        self.url = url
        self.transports = list(transports)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.replies: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.confirmed: "asyncio.Queue[Any]" = asyncio.Queue()
        self.session_id: Optional[str] = None
        self.sio.on("bot_uttered", self.replies.put)
        self.sio.on("session_confirm", self.confirmed.put)

    async def connect(self, session_id: Optional[str] = None, request: Any = "default", timeout: float = 30) -> str:
        """Connects and asks for a session; returns the session id the server confirmed."""
        await self.sio.connect(self.url, transports=self.transports, socketio_path="socket.io", wait_timeout=timeout)
        await self.sio.emit("session_request", {"session_id": session_id} if request == "default" else request)
        confirmed = await asyncio.wait_for(self.confirmed.get(), timeout)
        self.session_id = confirmed.get("session_id") if isinstance(confirmed, dict) else confirmed
        return self.session_id

    async def emit(self, event: str, data: Any) -> None:
        await self.sio.emit(event, data)

    async def say(self, text: Any, quiet: float = 1.5, timeout: float = 90) -> List[Dict[str, Any]]:
        """Sends a message; the bot's messages until none came for ``quiet`` seconds after the first."""
        await self.emit("user_uttered", {"message": text, "session_id": self.session_id})
        return await self.collect(quiet, timeout)

    async def collect(self, quiet: float = 1.5, timeout: float = 90) -> List[Dict[str, Any]]:
        got: List[Dict[str, Any]] = []
        try:
            got.append(await asyncio.wait_for(self.replies.get(), timeout))
            while True:
                got.append(await asyncio.wait_for(self.replies.get(), quiet))
        except asyncio.TimeoutError:
            return got

    async def silence(self, seconds: float = 3.0) -> List[Dict[str, Any]]:
        """The bot's messages within ``seconds`` (expected: none)."""
        return await self.collect(quiet=seconds, timeout=seconds)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


def texts(replies: List[Dict[str, Any]]) -> str:
    return "\n".join(str(r.get("text", "")) for r in replies)
