"""nlu_bert.lock_store: a message whose ticket expired while it waited behind a dead worker's ticket is served,
where Rasa's lock store waits for it forever. Two workers sharing Redis with a worker killed:
tests/assistant/test_topology.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from rasa.core.lock_store import InMemoryLockStore, LockStore
from rasa.utils.endpoints import EndpointConfig

from nlu_bert.lock_store import ResilientInMemoryLockStore, ResilientRedisLockStore


async def wait_behind_a_dead_ticket(store: LockStore, within: float) -> float:
    """A worker took a ticket and died (never released); a moment later another message of the conversation
    waits with a ticket that expires just after the dead one. Seconds until it holds the lock."""
    store.issue_ticket("c", 0.5)  # the dead worker's ticket
    await asyncio.sleep(0.1)
    started = time.monotonic()

    async def handle() -> None:
        async with store.lock("c", lock_lifetime=0.5, wait_time_in_seconds=0.7):
            pass

    await asyncio.wait_for(handle(), within)
    return time.monotonic() - started


def test_rasas_lock_store_waits_forever_there() -> None:
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(wait_behind_a_dead_ticket(InMemoryLockStore(), 3.0))


def test_a_renewed_ticket_is_served_and_released() -> None:
    store = ResilientInMemoryLockStore()
    assert asyncio.run(wait_behind_a_dead_ticket(store, 3.0)) < 3.0
    lock = store.get_lock("c")
    assert lock is None or not lock.tickets  # nothing left behind to block the next message

    async def next_message() -> None:
        async with store.lock("c", lock_lifetime=5, wait_time_in_seconds=0.1):
            pass

    asyncio.run(asyncio.wait_for(next_message(), 1.0))


def test_messages_of_one_conversation_still_take_turns() -> None:
    store = ResilientInMemoryLockStore()
    inside: list = []

    async def handle(i: int) -> None:
        async with store.lock("c", lock_lifetime=5, wait_time_in_seconds=0.02):
            inside.append(i)
            assert len(inside) == 1, "two messages of one conversation at once"
            await asyncio.sleep(0.05)
            inside.remove(i)

    async def main() -> None:
        await asyncio.gather(*(handle(i) for i in range(5)))

    asyncio.run(main())


def test_made_from_endpoints_like_rasas_redis_store() -> None:
    config = EndpointConfig(
        url="redis.internal", type="nlu_bert.lock_store.ResilientRedisLockStore", port=6380, db=2, key_prefix="shop"
    )
    store = ResilientRedisLockStore(endpoint_config=config)  # redis-py connects lazily
    kwargs = store.red.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.internal", 6380, 2)
    assert store.key_prefix.startswith("shop:")


def test_a_message_behind_another_of_its_conversation_starts_soon_after_it() -> None:
    # Rasa's agent takes the lock without a wait time: Rasa's stores then look again only after 1 s
    async def second_start(store: LockStore) -> float:
        released = {}

        async def first() -> None:
            async with store.lock("c", lock_lifetime=5):
                await asyncio.sleep(0.15)
            released["at"] = time.monotonic()

        async def second() -> float:
            await asyncio.sleep(0.02)
            async with store.lock("c", lock_lifetime=5):
                return time.monotonic()

        _, started = await asyncio.gather(first(), second())
        return started - released["at"]

    assert asyncio.run(second_start(InMemoryLockStore())) > 0.5
    assert asyncio.run(second_start(ResilientInMemoryLockStore())) < 0.15


def test_the_wait_between_looks_is_an_endpoints_setting() -> None:
    config = EndpointConfig(
        url="localhost", type="nlu_bert.lock_store.ResilientRedisLockStore", wait_time_in_seconds=0.5
    )
    assert ResilientRedisLockStore(endpoint_config=config).wait_time_in_seconds == 0.5
    assert ResilientRedisLockStore(host="localhost").wait_time_in_seconds == 0.1
    with pytest.raises(ValueError, match="wait_time_in_seconds"):
        ResilientInMemoryLockStore(wait_time_in_seconds=0)
