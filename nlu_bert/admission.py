"""At most ``max_concurrent_messages`` messages of one `rasa run` worker in progress at once; the others wait their
turn in arrival order.

A worker runs every message on one event loop. Each time a message waits (for the tracker store, the action
server, its HTTP reply) it goes to the back of the loop's queue, behind one step of every other message in
progress, and a webhook message waits like this 10-20 times (3 calls to the action server are about 15). With 20
messages in progress the slowest of them took 5-7 s where their own work was about 0.1 s (benchmarks/load_test.py
``--stages``, benchmarks/load_diagnosis.py). With a bound, a message waits once, in order, and then runs with
few others: the same throughput, a shorter tail.

The bound counts Rasa's ``MessageProcessor.handle_message`` (every channel's messages, inside the conversation's
lock: a message waiting for the lock of its conversation holds no place) and ``Agent.parse_message``
(``/model/parse``). The RequestGuard installs it when the server starts (``max_concurrent_messages`` in
credentials.yml; 0 turns it off).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Optional

_GATE: dict = {"semaphore": None, "limit": 0}


def _gated(original: Callable) -> Callable:
    @functools.wraps(original)
    async def gated(*args: Any, **kwargs: Any) -> Any:
        semaphore: Optional[asyncio.Semaphore] = _GATE["semaphore"]
        if semaphore is None:
            return await original(*args, **kwargs)
        async with semaphore:
            return await original(*args, **kwargs)

    gated._nlu_bert_gated = True  # type: ignore[attr-defined]
    return gated


def install(limit: int) -> None:
    """Bound the messages in progress in this process to ``limit`` (0: no bound). Call it on the server's loop."""
    from rasa.core.agent import Agent
    from rasa.core.processor import MessageProcessor

    for owner, name in ((MessageProcessor, "handle_message"), (Agent, "parse_message")):
        if not getattr(getattr(owner, name), "_nlu_bert_gated", False):
            setattr(owner, name, _gated(getattr(owner, name)))
    _GATE["semaphore"] = asyncio.Semaphore(limit) if limit > 0 else None
    _GATE["limit"] = limit


def in_progress_limit() -> int:
    return int(_GATE["limit"])
