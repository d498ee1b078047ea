"""The trackers a process saved last, kept so that the next message of the conversation reads only what is new.

Rasa's SQL tracker store rebuilds a conversation's tracker from every stored event of its session for every
message (a query, one JSON decode and one ``Event`` per event, then replaying them all), and its ``save`` counts
the session's stored events to know which ones are new. Both grow with the conversation.

``ResilientSQLTrackerStore`` (tracker_store.py) with ``tracker_cache_size`` > 0 keeps instead, per process, the
trackers it saved last (least recently saved dropped first). Each tracker it hands out carries a ``Stored``
mark: how many of its events are stored, the last of them (the object), the highest row id of the conversation
it has read or written, the conversation's row count then, and when its session started.

* ``retrieve`` takes the tracker OUT of the cache (a turn that fails before saving leaves nothing behind: the
  next message rebuilds from the database), reads only the rows with a higher id (another worker may have
  handled turns meanwhile: the lock store runs one message of a conversation at a time) and the conversation's
  row count, and appends the new events. It rebuilds from the database, as Rasa does, when anything does not
  add up: the tracker changed after it was saved, the row count is not the cached count plus the new rows
  (rows removed, or written out of order), or a new row starts a session or is older than the session start;
* ``save`` stores the events after the marked ones (no count query), then caches the tracker. A tracker the
  store did not hand out (a new one from the HTTP API's ``PUT .../tracker/events``, or one whose events were
  rewritten) is saved as Rasa saves it, and the conversation is dropped from the cache; so is a tracker whose
  new events start a session (it still holds the previous session, which Rasa's read would leave out).
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Text

from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert.lru import LruCache

MARK = "_nlu_bert_stored"


class Stored:
    """What of a tracker is in the database: its first ``length`` events (the last one is ``last_event``);
    the conversation's highest row id ``last_id`` and row count ``rows`` (all sessions) as this process last
    saw them; the timestamp of the session start its events begin with (None: none)."""

    __slots__ = ("length", "last_event", "last_id", "rows", "session_start")

    def __init__(self, length: int, last_event: Any, last_id: int, rows: int, session_start: Optional[float]) -> None:
        self.length, self.last_event, self.last_id, self.rows = length, last_event, last_id, rows
        self.session_start = session_start


def session_start_of(events: Iterable[Any]) -> Optional[float]:
    """The timestamp of the latest ``SessionStarted`` among ``events`` (Rasa's query keeps the events from it)."""
    starts = [e.timestamp for e in events if isinstance(e, SessionStarted)]
    return max(starts) if starts else None


def before_session(timestamp: Optional[float], session_start: Optional[float]) -> bool:
    """True for an event that Rasa's read of the session starting at ``session_start`` leaves out."""
    return session_start is not None and (timestamp is None or timestamp < session_start)


def mark(
    tracker: DialogueStateTracker, last_id: int, rows: int, session_start: Optional[float]
) -> DialogueStateTracker:
    """Record that all of ``tracker``'s events are stored."""
    events = tracker.events
    setattr(tracker, MARK, Stored(len(events), events[-1] if events else None, last_id, rows, session_start))
    return tracker


def stored_prefix(tracker: DialogueStateTracker) -> Optional[Stored]:
    """The tracker's mark if its marked events are still its first events (Rasa only appends), else None."""
    stored = getattr(tracker, MARK, None)
    if not isinstance(stored, Stored):
        return None
    events = tracker.events
    if len(events) < stored.length:
        return None
    if stored.length and events[stored.length - 1] is not stored.last_event:
        return None
    return stored


def unchanged_since_saved(tracker: DialogueStateTracker) -> Optional[Stored]:
    """The mark of a cached tracker that nobody changed after saving it, else None."""
    stored = stored_prefix(tracker)
    return stored if stored is not None and len(tracker.events) == stored.length else None


def append_events(tracker: DialogueStateTracker, events: List[Any]) -> None:
    """Apply ``events`` as a tracker rebuilt from the database would (``DialogueStateTracker.from_events`` runs
    without a model id, so the events' metadata is left as stored)."""
    model_id, assistant_id = tracker.model_id, tracker.assistant_id
    tracker.model_id = tracker.assistant_id = None
    try:
        for event in events:
            tracker.update(event)
    finally:
        tracker.model_id, tracker.assistant_id = model_id, assistant_id


class TrackerCache(LruCache):
    """The ``size`` trackers saved most recently by this process, at most one per conversation."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.stale = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        """The conversation's cached tracker, removed from the cache (the caller owns it now)."""
        return self.pop(sender_id)

    def forget(self, sender_id: Text) -> None:
        self.pop(sender_id)
