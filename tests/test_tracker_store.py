"""ResilientSQLTrackerStore (nlu_bert/tracker_store.py) on SQLite: it reads what Rasa's SQLTrackerStore wrote
exactly as Rasa reads it, hands out Rasa's trackers (or, with ``states_cache_size``, trackers that compute their
states incrementally), and waits for a
database that cannot be opened instead of failing at once. PostgreSQL restarted under two `rasa run`
workers: tests/assistant/test_topology.py."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from pathlib import Path

import pytest
import rasa
import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert.tracker_states import IncrementalStatesTracker
from nlu_bert.tracker_store import ResilientSQLTrackerStore, deserialise_events, is_unreachable

from dialogue_fixtures import random_conversation, story_trackers


@pytest.mark.parametrize("states_cache_size", [0, 512])
def test_reads_what_rasas_store_wrote_as_rasa_reads_it(domain: Domain, tmp_path: Path, states_cache_size: int) -> None:
    db = str(tmp_path / "tracker.db")
    rasa_store = SQLTrackerStore(domain, dialect="sqlite", db=db)
    ours = ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db, states_cache_size=states_cache_size)
    kind = IncrementalStatesTracker if states_cache_size else DialogueStateTracker
    conversations = {f"random-{i}": random_conversation(domain, random.Random(i), 15) for i in range(4)}
    conversations.update({f"story-{i}": list(t.events) for i, t in enumerate(story_trackers(domain)[:8])})

    async def check() -> None:
        for sender, events in conversations.items():
            await rasa_store.save(DialogueStateTracker.from_events(sender, events, domain.slots))
            expected = await rasa_store.retrieve(sender)
            got = await ours.retrieve(sender)
            assert type(got) is kind
            assert [e.as_dict() for e in got.events] == [e.as_dict() for e in expected.events], sender
            assert got.current_state() == expected.current_state()
            assert got.past_states(domain) == expected.past_states(domain)
            full = await ours.retrieve_full_tracker(sender)
            assert len(full.events) >= len(got.events)
        assert await ours.retrieve("nobody") is None

    asyncio.run(check())


def test_a_new_conversation_is_saved_by_either_store(domain: Domain, tmp_path: Path) -> None:
    db = str(tmp_path / "tracker.db")
    ours = ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db, states_cache_size=16)

    async def check() -> None:
        tracker = await ours.get_or_create_tracker("new")
        assert isinstance(tracker, IncrementalStatesTracker)
        tracker.update_with_events(random_conversation(domain, random.Random(5), 3), domain)
        await ours.save(tracker)
        rasas = await SQLTrackerStore(domain, dialect="sqlite", db=db).retrieve_full_tracker("new")
        assert [e.as_dict() for e in rasas.events] == [e.as_dict() for e in tracker.events]

    asyncio.run(check())


def test_incremental_states_are_opt_in_and_only_for_the_rasa_they_follow(
    domain: Domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = str(tmp_path / "tracker.db")
    assert ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db).states_cache is None
    assert ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db, states_cache_size=8).states_cache
    monkeypatch.setattr(rasa, "__version__", "3.6.22")
    with caplog.at_level(logging.WARNING, logger="nlu_bert.tracker_store"):
        store = ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=db, states_cache_size=8)
    assert store.states_cache is None
    assert any("states_cache_size is ignored" in r.getMessage() for r in caplog.records)


def test_unknown_event_types_are_refused_like_rasa_does() -> None:
    with pytest.raises(ValueError, match="Unknown event name 'no_such_event'"):
        deserialise_events([{"event": "no_such_event", "timestamp": 1.0}])
    assert deserialise_events([{"timestamp": 1.0}, {"event": "topic", "timestamp": 1.0}]) == []


def test_unreachable_means_the_database_not_the_query() -> None:
    assert is_unreachable(sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused")))
    assert is_unreachable(sa.exc.OperationalError("SELECT 1", {}, Exception("unable to open database file")))
    assert not is_unreachable(sa.exc.OperationalError("SELECT 1", {}, Exception("no such table: events")))
    assert not is_unreachable(sa.exc.ProgrammingError("SELECT nonsense", {}, Exception("syntax error")))
    assert not is_unreachable(ValueError("bad event"))


def test_a_database_that_cannot_be_opened_is_waited_for(
    domain: Domain, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, away = tmp_path / "db", tmp_path / "away"
    folder.mkdir()
    store = ResilientSQLTrackerStore(domain=domain, dialect="sqlite", db=str(folder / "tracker.db"), retry_seconds=20)
    asyncio.run(
        store.save(
            DialogueStateTracker.from_events("kept", random_conversation(domain, random.Random(1), 2), domain.slots)
        )
    )
    before = [e.as_dict() for e in asyncio.run(store.retrieve("kept")).events]
    store.engine.dispose()
    folder.rename(away)  # SQLite cannot open a file in a folder that is not there
    back = threading.Timer(1.5, lambda: away.rename(folder))
    back.start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="nlu_bert.tracker_store"):
        tracker = asyncio.run(store.retrieve("kept"))
    back.join()
    assert tracker is not None and [e.as_dict() for e in tracker.events] == before
    assert time.monotonic() - started >= 1.0
    assert any("the database is unreachable" in r.getMessage() for r in caplog.records)


def test_a_database_that_stays_away_gives_up_after_retry_seconds(domain: Domain, tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    store = ResilientSQLTrackerStore(
        domain=domain, dialect="sqlite", db=str(tmp_path / "db" / "tracker.db"), retry_seconds=1
    )
    (tmp_path / "db").rename(tmp_path / "gone")
    store.engine.dispose()
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="unable to open database file"):
        asyncio.run(store.retrieve("anyone"))
    assert time.monotonic() - started < 5
