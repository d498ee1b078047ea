"""Rasa's SQL tracker store, made safe for a database that restarts.

Rasa 3.6 wraps every tracker store in a ``FailSafeTrackerStore``: when a read fails it answers "no such
conversation", and when a write fails it keeps the tracker in the memory of that one process. After a
PostgreSQL restart, every pooled connection of every `rasa run` process is dead, so the next message of
each conversation is read as a new conversation and its turn is kept nowhere the other processes can see.

``ResilientSQLTrackerStore`` (``type: nlu_bert.tracker_store.ResilientSQLTrackerStore`` in endpoints.yml,
with the same keys as Rasa's ``type: SQL``) changes these things:

* its reads and writes of a database server (PostgreSQL, MySQL ...) run in a thread, so the worker's event loop
  serves other messages while one waits for the database (Rasa's store blocks the whole process meanwhile: a
  commit waits for the disk);
* every connection is checked before use (SQLAlchemy's ``pool_pre_ping``), so the dead connections of a
  restarted server are replaced instead of failing a message;
* a read or write that fails because the database cannot be reached is tried again, with a growing pause,
  for up to ``retry_seconds`` (default 30): a message that arrives while the database restarts waits for
  it, and is then handled against the whole conversation. Only after that does Rasa's fallback apply;
* reading a conversation costs less as it grows: Rasa turns each stored event back into an ``Event`` by
  searching every subclass of ``Event`` (``Event.resolve_by_type``), 97% of the time of rebuilding a tracker
  (28 ms for a 100-turn conversation, 500 events); here each event type is looked up once per process, and
  only the ``data`` column is read;
* opt-in, ``states_cache_size: 512`` (checkpoints kept per process; default 0 = Rasa's own trackers): the
  trackers it hands out compute the policies' dialogue states from where the previous message left them
  instead of from the start of the conversation (tracker_states.py). It re-implements private parts of
  Rasa 3.6.21, so under any other Rasa version it stays off with a warning; an error inside it falls back
  to Rasa's computation for that message. Policies with a ``max_history`` then copy only the states they keep
  (states_window.py);
* ``tracker_cache_size`` (default 256 conversations per process, 0 = off): the trackers it saved last are kept,
  and the next message of such a conversation reads only the rows stored since, checked against the
  conversation's row count (tracker_cache.py); saving writes the new events without counting the stored ones.

Everything else (tables, queries, sessions, ``SQL_POOL_SIZE`` / ``SQL_MAX_OVERFLOW``, ``login_db``) is Rasa's.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Text, Tuple, Type, TypeVar

import rasa
import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore, create_engine_kwargs
from rasa.shared.core.events import Event, SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

from nlu_bert.states_window import install as install_states_window
from nlu_bert.tracker_cache import (
    Stored,
    TrackerCache,
    append_events,
    before_session,
    mark,
    session_start_of,
    stored_prefix,
    unchanged_since_saved,
)
from nlu_bert.tracker_states import IncrementalStatesTracker, StatesCache

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_RETRY_SECONDS = 30.0
DEFAULT_TRACKER_CACHE_SIZE = 256
STATES_RASA_VERSION = "3.6.21"  # the Rasa whose states computation tracker_states.py resumes


# OperationalErrors that are the query's or the schema's fault, not the connection's (SQLite raises these as
# OperationalError; PostgreSQL as ProgrammingError)
_NOT_CONNECTION = ("no such table", "no such column", "syntax error")


def is_unreachable(error: BaseException) -> bool:
    """True for errors that mean "the database cannot be reached now" (worth waiting for), not a bad query."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa.exc.OperationalError) and any(s in str(error) for s in _NOT_CONNECTION):
        return False
    return isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError))


_EVENT_CLASSES: Dict[str, Optional[Type[Event]]] = {}


def deserialise_events(serialized: List[Dict[str, Any]]) -> List[Event]:
    """Rasa's ``rasa.shared.core.events.deserialise_events``, with each event type resolved once per process
    (by Rasa's own ``Event.resolve_by_type``, which raises for an unknown type as before)."""
    out = []
    for parameters in serialized:
        if "event" not in parameters:
            continue
        name = parameters["event"]
        if name not in _EVENT_CLASSES:
            _EVENT_CLASSES[name] = Event.resolve_by_type(name) if name is not None else None
        cls = _EVENT_CLASSES[name]
        event = cls._from_parameters(parameters) if cls is not None else None
        if event:
            out.append(event)
        else:
            logger.warning(f"Unable to parse event '{parameters}' while deserialising. The event will be ignored.")
    return out


class ResilientSQLTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` with pre-pinged connections and bounded retries while the database is unreachable."""

    def __init__(
        self,
        *args: Any,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        states_cache_size: int = 0,
        tracker_cache_size: int = DEFAULT_TRACKER_CACHE_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.retry_seconds = float(retry_seconds)
        self.tracker_cache = TrackerCache(int(tracker_cache_size)) if int(tracker_cache_size) > 0 else None
        self.states_cache = StatesCache(int(states_cache_size)) if int(states_cache_size) > 0 else None
        if self.states_cache is not None and rasa.__version__ != STATES_RASA_VERSION:
            logger.warning(
                f"Tracker store: states_cache_size is ignored: the incremental dialogue states follow Rasa "
                f"{STATES_RASA_VERSION} and this is Rasa {rasa.__version__}; remove states_cache_size from "
                f"endpoints.yml to silence this."
            )
            self.states_cache = None
        if self.states_cache is not None:
            install_states_window()  # policies with a max_history copy only the states they keep
        # Rasa's engine (re-made without its pool settings when `login_db` is used), made again with them and
        # with every connection checked before use.
        url = self.engine.url
        self.engine.dispose()
        self.engine = sa.create_engine(url, pool_pre_ping=True, **create_engine_kwargs(url))
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)

    async def _with_retries(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.retry_seconds
        pause = 0.2
        while True:
            try:
                return await operation()
            except Exception as error:  # noqa: BLE001 - only unreachable-database errors are retried
                if not is_unreachable(error) or time.monotonic() + pause > deadline:
                    raise
                logger.warning(
                    f"Tracker store: {what} failed, the database is unreachable ({type(error).__name__}: "
                    f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}); trying again in "
                    f"{pause:.1f} s (for up to {self.retry_seconds:g} s in all)."
                )
                self.engine.dispose()  # drop every pooled connection: they all point at the old server
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a thread for a database server (the event loop serves other messages while it
        waits for the database); in the loop for SQLite (an in-memory database is one per thread)."""
        if self.engine.dialect.name == "sqlite":
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(function, *args))

    async def _retrieve(self, sender_id: Text, fetch_events_from_all_sessions: bool) -> Optional[DialogueStateTracker]:
        events = await self._with_retries(
            f"reading conversation '{sender_id}'",
            lambda: self._off_loop(self._read, sender_id, fetch_events_from_all_sessions),
        )
        if not self.domain or not events:
            return None
        return self._tracker(sender_id, events)

    def _read(self, sender_id: Text, fetch_events_from_all_sessions: bool) -> List[Event]:
        """Rasa's ``SQLTrackerStore._retrieve`` up to the tracker: the same query, only its ``data`` column,
        events resolved once."""
        with self.session_scope() as session:
            query = self._event_query(session, sender_id, fetch_events_from_all_sessions=fetch_events_from_all_sessions)
            serialised = [json.loads(data) for (data,) in query.with_entities(self.SQLEvent.data).all()]
        return deserialise_events(serialised) if serialised else []

    def init_tracker(self, sender_id: Text) -> DialogueStateTracker:
        """A new conversation's tracker (Rasa's ``TrackerStore.init_tracker``), computing its states incrementally
        (and, with the tracker cache, marked as one with nothing stored yet)."""
        tracker = self._tracker(sender_id, [])
        return mark(tracker, 0, 0, None) if self.tracker_cache is not None else tracker

    def _tracker(self, sender_id: Text, events: List[Event]) -> DialogueStateTracker:
        slots = self.domain.slots if self.domain else None
        if self.states_cache is None:
            return DialogueStateTracker.from_events(sender_id, events, slots)
        return IncrementalStatesTracker.from_events_with_cache(sender_id, events, slots, self.states_cache)

    async def save(self, tracker: DialogueStateTracker) -> None:
        await self.stream_events(tracker)  # once: a retried write must not publish its events again
        stored = stored_prefix(tracker) if self.tracker_cache is not None else None
        if self.tracker_cache is not None and stored is None:
            self.tracker_cache.forget(tracker.sender_id)
        length = len(tracker.events)
        # the first try writes the events after the stored ones; a retry counts what is stored, as Rasa does
        # (the failed try may have committed)
        known = itertools.chain([stored], itertools.repeat(None))
        ids = await self._with_retries(
            f"saving conversation '{tracker.sender_id}'", lambda: self._off_loop(self._write, tracker, next(known))
        )
        if self.tracker_cache is not None and stored is not None:
            self._remember(tracker, stored, length, ids)

    def _remember(self, tracker: DialogueStateTracker, stored: Stored, length: int, ids: Optional[List[int]]) -> None:
        """Mark a saved tracker as stored and cache it (unless its new events start a session)."""
        if ids is None or len(tracker.events) != length or length - stored.length != len(ids):
            self.tracker_cache.forget(tracker.sender_id)
            return
        new = list(itertools.islice(tracker.events, stored.length, None))
        start = session_start_of(new)
        mark(
            tracker,
            max(ids) if ids else stored.last_id,
            stored.rows + len(ids),
            start if start is not None else stored.session_start,
        )
        # Rasa's read keeps the events from the latest session start on (by timestamp)
        if start is None and not any(before_session(e.timestamp, stored.session_start) for e in new):
            self.tracker_cache.put(tracker.sender_id, tracker)
        else:
            self.tracker_cache.forget(tracker.sender_id)

    def _write(self, tracker: DialogueStateTracker, stored: Optional[Stored] = None) -> Optional[List[int]]:
        """Rasa's ``SQLTrackerStore.save`` without its streaming (done above): the events not stored yet, one
        transaction. The conversation's lock keeps the tracker still while this runs in a thread. With
        ``stored`` the new events are those after the stored ones, and the ids of their rows are returned."""
        with self.session_scope() as session:
            if stored is not None:
                events: Iterable[Event] = itertools.islice(tracker.events, stored.length, None)
            else:
                events = self._additional_events(session, tracker)
            rows = []
            for event in events:
                data = event.as_dict()
                row = self.SQLEvent(
                    sender_id=tracker.sender_id,
                    type_name=event.type_name,
                    timestamp=data.get("timestamp"),
                    intent_name=data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                    action_name=data.get("name"),
                    data=json.dumps(data),
                )
                session.add(row)
                rows.append(row)
            session.flush()
            ids = [row.id for row in rows]
            session.commit()
        return ids if stored is not None else None

    async def retrieve(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        """The conversation's latest session (Rasa's ``retrieve``): with the tracker cache, the tracker this
        process saved last plus the rows stored since, else rebuilt from the database."""
        if self.tracker_cache is None:
            return await self._retrieve(sender_id, fetch_events_from_all_sessions=False)
        cached = self.tracker_cache.take(sender_id)
        if cached is None:
            self.tracker_cache.misses += 1
        else:
            stored = unchanged_since_saved(cached)
            if stored is not None:
                count, rows = await self._with_retries(
                    f"reading conversation '{sender_id}'",
                    lambda: self._off_loop(self._read_new, sender_id, stored.last_id),
                )
                if self._continue(cached, stored, count, rows):
                    self.tracker_cache.hits += 1
                    return cached
            self.tracker_cache.stale += 1
            logger.debug(f"Tracker store: the cached tracker of '{sender_id}' is stale; reading it again.")
        events, last_id, count = await self._with_retries(
            f"reading conversation '{sender_id}'", lambda: self._off_loop(self._read_counted, sender_id)
        )
        if not self.domain or not events:
            return None
        return mark(self._tracker(sender_id, events), last_id, count, session_start_of(events))

    def _continue(self, tracker: DialogueStateTracker, stored: Stored, count: int, rows: List[Any]) -> bool:
        """Append the rows stored after the cached tracker's; False where a rebuild would give another tracker."""
        if count != stored.rows + len(rows):
            return False
        for _, timestamp, type_name, _ in rows:
            if type_name == SessionStarted.type_name:
                return False
            if before_session(timestamp, stored.session_start):
                return False
        events = deserialise_events([json.loads(data) for (_, _, _, data) in rows])
        if len(events) != len(rows):
            return False
        append_events(tracker, events)
        mark(tracker, rows[-1][0] if rows else stored.last_id, count, stored.session_start)
        return True

    def _read_new(self, sender_id: Text, last_id: int) -> Tuple[int, List[Any]]:
        """The conversation's row count and its rows (id, timestamp, type, data) after ``last_id``."""
        with self.session_scope() as session:
            event = self.SQLEvent
            count = session.query(sa.func.count(event.id)).filter(event.sender_id == sender_id).scalar()
            rows = (
                session.query(event.id, event.timestamp, event.type_name, event.data)
                .filter(event.sender_id == sender_id, event.id > last_id)
                .order_by(event.id)
                .all()
            )
        return int(count or 0), [tuple(row) for row in rows]

    def _read_counted(self, sender_id: Text) -> Tuple[List[Event], int, int]:
        """``_read`` of the latest session, with the conversation's highest row id and row count."""
        with self.session_scope() as session:
            event = self.SQLEvent
            count, last_id = (
                session.query(sa.func.count(event.id), sa.func.max(event.id)).filter(event.sender_id == sender_id).one()
            )
            query = self._event_query(session, sender_id, fetch_events_from_all_sessions=False)
            serialised = [json.loads(data) for (data,) in query.with_entities(event.data).all()]
        return (deserialise_events(serialised) if serialised else []), int(last_id or 0), int(count or 0)

    async def exists(self, conversation_id: Text) -> bool:
        """Rasa's ``exists``, without taking a cached tracker out of the cache. (Rasa's wrappers, FailSafe- and
        AwaitableTrackerStore, answer ``exists`` with their ``retrieve``: that takes the tracker out, and the
        conversation's next message reads it from the database again.)"""
        if self.tracker_cache is not None and conversation_id in self.tracker_cache:
            return True
        return await super().exists(conversation_id)

    async def keys(self) -> Iterable[Text]:
        parent = super().keys
        return await self._with_retries("listing conversations", parent)
