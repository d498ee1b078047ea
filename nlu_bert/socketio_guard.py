"""The RequestGuard's checks on Rasa's socket.io channel (``socketio:`` in credentials.yml); see http_guard.py."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Text

logger = logging.getLogger("nlu_bert.http_guard")


def guard_socketio(guard: Any, channel: Any) -> None:
    """Wraps the handlers of a Rasa socket.io channel (``socketio:`` in credentials.yml) with the guard's checks."""
    try:
        from rasa.core.channels.socketio import SocketIOInput
    except ImportError:  # pragma: no cover - python-socketio is a dependency of rasa
        return
    sio = getattr(channel, "sio", None)
    if not isinstance(channel, SocketIOInput) or sio is None:
        return
    namespace = channel.namespace or "/"
    handlers = sio.handlers.setdefault(namespace, {})
    original = handlers.get(channel.user_message_evt)

    async def session_request(sid: Text, data: Any = None, *_: Any) -> None:
        session_id = guard.session_id(data)
        if channel.session_persistence:
            joined = sio.enter_room(sid, session_id, namespace=namespace)
            if inspect.isawaitable(joined):  # a coroutine since python-socketio 5.10
                await joined
        await sio.emit("session_confirm", session_id, room=sid, namespace=namespace)

    async def user_message(sid: Text, data: Any = None, *_: Any) -> Any:
        problem = guard.socket_problem(data, channel)
        if problem == "":
            logger.debug("RequestGuard: empty socket.io message from %s ignored", sid)
            return None
        if problem is not None:
            logger.warning("RequestGuard: socket.io message from %s dropped: %s", sid, problem)
            return None
        return await original(sid, data)

    handlers["session_request"] = session_request
    if original is not None:
        handlers[channel.user_message_evt] = user_message
