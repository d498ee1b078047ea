"""Retried REST messages (nlu_bert/retries.py) with Rasa's real stores: the request id kept in the message's
metadata, seen once per conversation (in the process here; across workers in Redis: test_topology.py), and a retry of a stored turn answered with that turn's bot messages.
The whole path (a worker killed after storing the turn, nginx's retry) runs in tests/assistant/test_topology.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, Dict

import pytest
from rasa.core.channels.rest import RestInput
from rasa.core.lock_store import InMemoryLockStore
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert.http_guard import RequestGuard
from nlu_bert.retries import SeenRequests, request_id, stored_replies, tag_rest_metadata


def request(headers: Dict[str, str], body: Any = None) -> Any:
    return SimpleNamespace(headers=headers, json=body or {})


@pytest.mark.parametrize(
    "header, expected",
    [("3f2a9c", "3f2a9c"), ("a.b:c-d_1", "a.b:c-d_1"), ("", None), ("x" * 129, None), ("a b", None), ("é", None)],
)
def test_only_plain_request_ids_are_used(header: str, expected: Any) -> None:
    assert request_id(request({"X-Request-ID": header})) == expected
    assert request_id(request({})) is None


def test_the_rest_channel_keeps_the_request_id_in_the_metadata() -> None:
    channel = RestInput()
    tag_rest_metadata(channel)
    tag_rest_metadata(channel)  # once only
    assert channel.get_metadata(request({"X-Request-ID": "r1"})) == {"request_id": "r1"}
    assert channel.get_metadata(request({})) is None
    body = {"metadata": {"page": "cart", "request_id": "from-the-body"}}  # Rasa's REST channel reads `metadata`
    assert channel.get_metadata(request({"X-Request-ID": "r2"}, body)) == {"page": "cart", "request_id": "r2"}


def test_an_id_is_new_once_per_conversation_and_forgotten_after_the_window() -> None:
    seen = SeenRequests(window=0.2)
    store = InMemoryLockStore()  # no Redis: the ids are kept in the process
    assert seen.first_time(store, "a", "r1") and not seen.first_time(store, "a", "r1")
    assert seen.first_time(store, "b", "r1")  # another conversation, another message
    asyncio.run(asyncio.sleep(0.25))
    assert seen.first_time(store, "a", "r1")


def test_a_retry_of_a_stored_turn_gets_its_bot_messages() -> None:
    domain = Domain.from_dict({"intents": ["greet"], "responses": {"utter_greet": [{"text": "你好"}]}})
    agent = SimpleNamespace(lock_store=InMemoryLockStore(), tracker_store=InMemoryTrackerStore(domain))
    tracker = DialogueStateTracker.from_events(
        "u1",
        [
            UserUttered("你好", {"name": "greet"}, metadata={"request_id": "first"}),
            ActionExecuted("utter_greet"),
            BotUttered("你好", {"buttons": [{"title": "订单", "payload": "/check_order_status"}]}),
            BotUttered("有什么可以帮您？"),
            UserUttered("再见", {"name": "goodbye"}, metadata={"request_id": "second"}),
        ],
    )
    asyncio.run(agent.tracker_store.save(tracker))
    first = asyncio.run(stored_replies(agent, "u1", "first"))
    assert first == [
        {"recipient_id": "u1", "text": "你好", "buttons": [{"title": "订单", "payload": "/check_order_status"}]},
        {"recipient_id": "u1", "text": "有什么可以帮您？"},
    ]
    assert asyncio.run(stored_replies(agent, "u1", "second")) == []  # stored, no reply yet: answered []
    assert asyncio.run(stored_replies(agent, "u1", "unknown")) is None  # not stored: handled as a new message
    assert asyncio.run(stored_replies(agent, "nobody", "first")) is None


def test_the_window_is_a_guard_setting() -> None:
    assert RequestGuard().seen.window == 3600
    assert RequestGuard(retry_window_seconds=0).seen.window == 0
    with pytest.raises(ValueError, match="retry_window_seconds"):
        RequestGuard(retry_window_seconds=-1)
    with pytest.raises(ValueError, match="freeze_gc"):
        RequestGuard(freeze_gc="yes")


def test_freezing_leaves_a_full_collection_nothing_of_what_was_loaded() -> None:
    import gc

    from nlu_bert.gc_freeze import freeze_loaded_objects

    loaded = [[i] for i in range(50_000)]  # what a model leaves alive
    try:
        assert freeze_loaded_objects() >= len(loaded)
        scanned = {id(o) for o in gc.get_objects(generation=2)}  # what a full collection goes through
        assert id(loaded) not in scanned and not any(id(x) in scanned for x in loaded[:100])
    finally:
        gc.unfreeze()
