"""A message retried by the load balancer is handled once: the retry gets the replies stored for the original.

nginx (deploy/nginx/nginx.conf) sends a message whose worker died before answering to the next worker. When
the first worker had already stored the turn (it dies between saving the tracker and answering), handling the
retry again would store the user's message twice and run its actions twice. nginx gives the original and the
retry one ``X-Request-ID`` (the client's own when it sends one); the RequestGuard (http_guard.py) then:

* keeps that id in the user message's metadata (``metadata.request_id``) on the REST channel;
* marks the id as seen, for ``retry_window_seconds`` (default 3600), in the Redis of Rasa's Redis lock store
  (``SET NX``: shared by all workers), or in the process for other lock stores (one process has no retries);
* for an id seen before, takes the conversation's lock (so a first try still running finishes first), reads
  the conversation, and when a user message with that id is in it, answers with the bot messages of that turn
  as the REST channel would have, without handling the message again. An id seen but not stored (the first
  worker died before saving) is handled as a new message.

Only ``/webhooks/rest/webhook``: the other channels answer through their own clients, and socket.io is not
retried by nginx. A header that is not 1-128 characters of ``A-Za-z0-9._:-`` is ignored.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Text

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel
from rasa.shared.core.events import BotUttered, UserUttered

logger = logging.getLogger(__name__)

HEADER = "X-Request-ID"
METADATA_KEY = "request_id"
VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REST_WEBHOOK = re.compile(r"^/webhooks/rest/webhook/?$")
LOCAL_CAPACITY = 100_000


def request_id(request: Any) -> Optional[str]:
    """The request's usable ``X-Request-ID``, else None."""
    value = request.headers.get(HEADER)
    return value if isinstance(value, str) and VALID_ID.match(value) else None


def tag_rest_metadata(channel: InputChannel) -> None:
    """Makes a REST channel (``rest:``, and channels built on it) keep the request id in the message's metadata."""
    from rasa.core.channels.rest import RestInput

    if not isinstance(channel, RestInput) or getattr(channel, "_nlu_bert_request_ids", False):
        return
    original = channel.get_metadata

    def get_metadata(request: Any) -> Optional[Dict[Text, Any]]:
        metadata = original(request)
        rid = request_id(request)
        if rid is None:
            return metadata
        return {**(metadata or {}), METADATA_KEY: rid}

    channel.get_metadata = get_metadata  # type: ignore[method-assign]
    channel._nlu_bert_request_ids = True  # type: ignore[attr-defined]


class SeenRequests:
    """The request ids of the last ``window`` seconds, per conversation."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.local: "OrderedDict[str, float]" = OrderedDict()

    def first_time(self, lock_store: Any, sender_id: Text, rid: str) -> bool:
        """True the first time ``rid`` is seen for ``sender_id`` within the window (atomic across workers with Redis)."""
        red = getattr(lock_store, "red", None)
        if red is not None:
            key = f"{getattr(lock_store, 'key_prefix', '')}request:{sender_id}:{rid}"
            return bool(red.set(key, 1, nx=True, ex=max(1, int(self.window))))
        now = time.monotonic()
        while self.local and (len(self.local) >= LOCAL_CAPACITY or next(iter(self.local.values())) < now):
            self.local.popitem(last=False)
        key = f"{sender_id}\x00{rid}"
        if key in self.local:
            return False
        self.local[key] = now + self.window
        return True


async def stored_replies(agent: Any, sender_id: Text, rid: str) -> Optional[List[Dict[Text, Any]]]:
    """The REST answer of the stored turn whose user message carries ``rid``; None when no such turn is stored."""
    async with agent.lock_store.lock(sender_id):
        tracker = await agent.tracker_store.retrieve(sender_id)
    if tracker is None:
        return None
    events = list(tracker.events)
    start = next(
        (
            i
            for i in range(len(events) - 1, -1, -1)
            if isinstance(events[i], UserUttered) and (events[i].metadata or {}).get(METADATA_KEY) == rid
        ),
        None,
    )
    if start is None:
        return None
    collector = CollectingOutputChannel()
    for event in events[start + 1 :]:
        if isinstance(event, UserUttered):
            break
        if isinstance(event, BotUttered):
            await collector.send_response(sender_id, event.message())
    return collector.messages


async def answer_retry(request: Any, sender_id: Text, seen: SeenRequests) -> Optional[List[Dict[Text, Any]]]:
    """For a REST message whose request id was seen before and whose turn is stored: that turn's replies."""
    rid = request_id(request)
    agent = getattr(request.app.ctx, "agent", None)
    if rid is None or agent is None or seen.window <= 0:
        return None
    if seen.first_time(agent.lock_store, sender_id, rid):
        return None
    replies = await stored_replies(agent, sender_id, rid)
    if replies is not None:
        logger.warning(
            f"RequestGuard: request {rid} of conversation '{sender_id}' was retried after its turn was stored; "
            f"answered with the stored replies ({len(replies)}), not handled again."
        )
    return replies
