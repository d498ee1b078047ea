"""The tracker cache of ResilientSQLTrackerStore (nlu_bert/tracker_cache.py), on SQLite and on a real PostgreSQL:
every tracker it hands out equals the one Rasa's SQLTrackerStore rebuilds from the database, turn after turn,
with two workers (two stores on one database) taking turns of the same conversations, turns that fail before
saving, new sessions, restarts and reverts; the cache is actually used; and what it cannot trust is read again."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity

from nlu_bert.tracker_store import ResilientSQLTrackerStore

from dialogue_fixtures import random_conversation


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    from deploy.local.servers import Postgres, TopologyError

    try:
        server = Postgres()
    except TopologyError as error:
        pytest.skip(str(error))
    try:
        server.start()
        yield server
    finally:
        server.remove()


def _stores(kind: str, domain: Domain, tmp_path: Path, request: pytest.FixtureRequest, **kwargs: Any) -> List[Any]:
    """Two workers' stores (ours) and Rasa's own store, on one database."""
    if kind == "sqlite":
        keys = {"dialect": "sqlite", "db": str(tmp_path / "tracker.db")}
    else:
        server = request.getfixturevalue("postgres")
        name = f"cache_{tmp_path.name.replace('-', '_').lower()}"[:60]
        server.create_database(name)
        keys = {
            "dialect": "postgresql",
            "host": "127.0.0.1",
            "port": server.port,
            "db": name,
            "username": server.user_name,
            "password": server.password,
        }
    ours = [ResilientSQLTrackerStore(domain=domain, **keys, **kwargs) for _ in range(2)]
    return [*ours, SQLTrackerStore(domain, **keys)]


def _turns(events: List[Any], restamp: bool) -> List[List[Any]]:
    """The conversation cut before each user message (a message's turn); timestamps rising if ``restamp``."""
    if restamp:
        for i, event in enumerate(events):
            event.timestamp = 1_700_000_000.0 + i * 0.01
    turns: List[List[Any]] = [[]]
    for event in events:
        if isinstance(event, UserUttered) and turns[-1]:
            turns.append([])
        turns[-1].append(event)
    return turns


def assert_same(got: DialogueStateTracker, expected: DialogueStateTracker, domain: Domain) -> None:
    assert [e.as_dict() for e in got.events] == [e.as_dict() for e in expected.events]
    assert got.current_state(EventVerbosity.ALL) == expected.current_state(EventVerbosity.ALL)
    assert {n: s.value for n, s in got.slots.items()} == {n: s.value for n, s in expected.slots.items()}
    assert got.active_loop == expected.active_loop and got.followup_action == expected.followup_action
    assert got.latest_action == expected.latest_action and got.is_paused() == expected.is_paused()
    assert got.past_states(domain) == expected.past_states(domain)
    assert [e.as_dict() for e in got.applied_events()] == [e.as_dict() for e in expected.applied_events()]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("states_cache_size", [0, 64])
def test_cached_trackers_equal_rebuilt_ones_with_two_workers_and_failed_turns(
    domain: Domain, tmp_path: Path, request: pytest.FixtureRequest, kind: str, states_cache_size: int
) -> None:
    first, second, rasas = _stores(kind, domain, tmp_path, request, states_cache_size=states_cache_size)
    rng = random.Random(7)
    conversations = {
        f"c{i}": _turns(random_conversation(domain, random.Random(i), 25), restamp=i != 3) for i in range(6)
    }

    async def run() -> None:
        worker = {sender: 0 for sender in conversations}
        for step in range(max(len(t) for t in conversations.values())):
            for sender, turns in conversations.items():
                if step >= len(turns):
                    continue
                if rng.random() < 0.25:  # the load balancer sends this message to the other worker
                    worker[sender] = 1 - worker[sender]
                store = (first, second)[worker[sender]]
                tracker = await store.get_or_create_tracker(sender, append_action_listen=False)
                expected = await rasas.retrieve(sender) or DialogueStateTracker(sender, domain.slots)
                assert_same(tracker, expected, domain)
                tracker.update_with_events(turns[step], domain, override_timestamp=False)
                if rng.random() < 0.1 and step:  # the turn fails before saving: nothing of it is stored
                    continue
                await store.save(tracker)
        for sender in conversations:
            got = await first.retrieve(sender)
            assert_same(got, await rasas.retrieve(sender), domain)

    asyncio.run(run())
    for store in (first, second):
        assert store.tracker_cache.hits > 20  # the cache answered most reads ...
        assert store.tracker_cache.stale > 0  # ... and a conversation that moved away and back was read again


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_what_the_cache_cannot_trust_is_read_again(
    domain: Domain, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    store, _, rasas = _stores(kind, domain, tmp_path, request)
    turns = _turns(random_conversation(domain, random.Random(1), 6), restamp=True)

    async def run() -> None:
        tracker = await store.get_or_create_tracker("a", append_action_listen=False)
        for turn in turns[:3]:
            tracker.update_with_events(turn, domain, override_timestamp=False)
            await store.save(tracker)
            tracker = await store.retrieve("a")
        await store.save(tracker)
        # changed after saving, never saved again: the change is not handed out
        tracker.update(ActionExecuted("utter_greet", timestamp=1_800_000_000.0))
        stale = store.tracker_cache.stale
        got = await store.retrieve("a")
        assert store.tracker_cache.stale == stale + 1
        assert_same(got, await rasas.retrieve("a"), domain)
        assert "utter_greet" not in [getattr(e, "action_name", None) for e in got.events][-1:]
        # a tracker the store did not hand out (the HTTP API's PUT .../tracker/events) is saved as Rasa saves it
        await store.save(got)
        assert "a" in store.tracker_cache
        replacement = DialogueStateTracker.from_events("a", [e for t in turns for e in t], domain.slots)
        await store.save(replacement)
        assert "a" not in store.tracker_cache
        assert_same(await store.retrieve("a"), await rasas.retrieve("a"), domain)
        # `exists` (the HTTP API asks it first) leaves the cached tracker where it is
        await store.save(await store.retrieve("a"))
        assert await store.exists("a") and "a" in store.tracker_cache
        assert not await store.exists("nobody")

    asyncio.run(run())


def test_the_cache_is_bounded_and_can_be_turned_off(domain: Domain, tmp_path: Path) -> None:
    db = str(tmp_path / "tracker.db")
    small = ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db, tracker_cache_size=2)
    off = ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db, tracker_cache_size=0)
    assert off.tracker_cache is None
    assert ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db).tracker_cache.size == 256

    async def run() -> None:
        for sender in ("a", "b", "c"):
            tracker = await small.get_or_create_tracker(sender)
            await small.save(tracker)
        assert len(small.tracker_cache) == 2 and "a" not in small.tracker_cache
        got = await off.retrieve("c")
        assert [e.as_dict() for e in got.events] == [e.as_dict() for e in (await small.retrieve("c")).events]

    asyncio.run(run())


def test_a_save_retried_after_its_commit_stores_each_event_once(domain: Domain, tmp_path: Path) -> None:
    """The connection drops after the commit: the retry counts what is stored (as Rasa's save does) instead of
    writing the new events again, and the conversation is read from the database next time."""
    import sqlalchemy as sa

    db = str(tmp_path / "tracker.db")
    store = ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db, retry_seconds=5)
    rasas = SQLTrackerStore(domain, dialect="sqlite", db=db)
    turns = _turns(random_conversation(domain, random.Random(2), 4), restamp=True)
    original, calls = store._write, []

    def write_then_lose_the_connection(tracker: Any, stored: Any = None) -> Any:
        calls.append(stored)
        result = original(tracker, stored)
        if len(calls) == 1:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return result

    async def run() -> None:
        tracker = await store.get_or_create_tracker("r", append_action_listen=False)
        tracker.update_with_events(turns[0], domain, override_timestamp=False)
        await store.save(tracker)
        tracker = await store.retrieve("r")
        tracker.update_with_events(turns[1], domain, override_timestamp=False)
        store._write = write_then_lose_the_connection
        await store.save(tracker)
        assert [c is None for c in calls] == [False, True]  # the retry counted what is stored, as Rasa does
        assert "r" not in store.tracker_cache
        assert_same(await store.retrieve("r"), await rasas.retrieve("r"), domain)
        stored = [e.as_dict() for e in (await rasas.retrieve_full_tracker("r")).events]
        assert len({(e["event"], e["timestamp"]) for e in stored}) == len(stored)  # no event stored twice
        assert stored[-len(tracker.events) :] == [e.as_dict() for e in tracker.events]

    asyncio.run(run())
