"""The dialogue states of a conversation, computed once per turn instead of once per policy and message.

Every policy of a Rasa 3.6 prediction turns the whole conversation (since its session started) into
dialogue states (``DialogueStateTracker.past_states`` -> ``Domain.states_for_tracker_history``): it replays
every event into a fresh tracker and builds a state before each action, to keep the last ``max_history`` of
them. MemoizationPolicy, RulePolicy (twice) and TEDPolicy each do it, for each action predicted, so the cost
of a message grows with the length of the conversation (benchmarks/results/message_profile.md).

``IncrementalStatesTracker`` computes the same states, and keeps per conversation where it stopped (the
replayed tracker, the states so far, and the signature of the events they came from) in a ``StatesCache``;
likewise the conversation's ``applied_events`` (its events without the reverted ones), which every policy
asks for again, and ``copy()``, which the processor makes for every action it runs (Rasa replays every event
into a new tracker; here the replay is kept on the tracker and continued, and a copy of it handed out).
The next call, for the same conversation one turn later, checks that the events it was computed from are
still the first events of the conversation and goes on from there: only the new events are replayed. The
check compares a chain of hashes (each event's type, timestamp and content, hashed with the hash before
it), built once per event, so a turn costs the same at the hundredth turn as at the first. Anything else (another conversation, an event reverted or rewritten, a restart)
computes from the start, as Rasa does. ``past_states`` returns copies (callers may change them);
``shared_past_states`` the cached states themselves, for a caller that copies only those it keeps (states_window.py).

ResilientSQLTrackerStore (tracker_store.py) hands out these trackers when ``states_cache_size`` is set (it
is off by default: it re-implements private parts of Rasa 3.6.21, and the store refuses it under another Rasa).
An error inside it never fails a message: that tracker falls back to Rasa's own computation, and the
conversation's checkpoints are dropped. The loop below is Rasa 3.6.21's
``Domain.states_for_tracker_history``, made resumable. tests/test_tracker_states.py checks both give the
same states, turn by turn, on the sample assistant's stories and on conversations with forms, reverts,
restarts and rule-only turns.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections import deque
from typing import Any, Dict, Hashable, List, Optional, Text, Tuple

import rasa.shared.core.constants
from rasa.shared.constants import DEFAULT_SENDER_ID
from rasa.shared.core.constants import USER
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.events import (
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    Restarted,
    SessionStarted,
    UserUtteranceReverted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert.lru import LruCache

logger = logging.getLogger(__name__)


def _link(previous: int, event: Any) -> int:
    """The next hash of a chain: ``previous`` and what identifies ``event`` at its place in the conversation
    (type, timestamp, and everything of it that the states read: an intent corrected through the HTTP API, with
    the same text and timestamp, breaks the chain)."""
    return hash(
        (
            previous,
            event.type_name,
            event.timestamp,
            getattr(event, "text", None),
            getattr(event, "action_name", None),
            getattr(event, "action_text", None),
            getattr(event, "key", None),
            repr(getattr(event, "value", None)),
            getattr(event, "name", None),
            repr(getattr(event, "intent", None)),
            repr(getattr(event, "entities", None)),
            getattr(event, "hide_rule_turn", None),
            getattr(event, "is_interrupted", None),
            getattr(event, "use_text_for_featurization", None),
        )
    )


def _chain(events: Any, start: int = 0, previous: int = 0) -> List[int]:
    out = []
    for event in list(events)[start:] if start else events:
        previous = _link(previous, event)
        out.append(previous)
    return out


class _Checkpoint:
    """Where a states computation stopped: after ``length`` applied events (whose chain ends in ``link``),
    before the final (current) state."""

    __slots__ = ("domain", "length", "link", "replay", "states", "last_ml_action_sub_state", "turn_was_hidden")

    def __init__(
        self,
        domain: Domain,
        length: int,
        link: int,
        replay: DialogueStateTracker,
        states: List[State],
        last_ml_action_sub_state: Any,
        turn_was_hidden: bool,
    ) -> None:
        self.domain, self.length, self.link, self.replay, self.states = domain, length, link, replay, states
        self.last_ml_action_sub_state, self.turn_was_hidden = last_ml_action_sub_state, turn_was_hidden


class _AppliedCheckpoint:
    """What a conversation's first ``length`` events (chain ending in ``link``) fold to (``applied_events``)."""

    __slots__ = ("length", "link", "applied", "applied_chain", "loop_names")

    def __init__(
        self, length: int, link: int, applied: List[Any], applied_chain: List[int], loop_names: frozenset
    ) -> None:
        self.length, self.link, self.applied, self.applied_chain, self.loop_names = (
            length,
            link,
            applied,
            applied_chain,
            loop_names,
        )


class StatesCache(LruCache):
    """The checkpoints of the most recent ``size`` (conversation, kind) pairs of one process."""

    def __init__(self, size: int = 2048) -> None:
        super().__init__(size)

    def forget(self, sender_id: Text) -> None:
        """Drop every checkpoint of one conversation."""
        with self._lock:
            for key in [k for k in self._entries if isinstance(k, tuple) and sender_id in k[1:3]]:
                del self._entries[key]


def copy_states(states: Any) -> List[State]:
    """Copies of ``states`` (callers change them). Rasa's state of a rule-only turn takes the user sub-state of the
    state before it (``Domain._substitute_rule_only_user_input``; every other user sub-state is a new dict), and
    the featurizer's change to the last state's (``_choose_last_user_input``) shows in every state that shares it:
    the copies share a user sub-state with the state before them where the originals do. Nothing in Rasa
    changes the other sub-states of a prediction's states."""
    out: List[State] = []
    user: Any = None
    for state in states:
        copied = {key: dict(sub) for key, sub in state.items()}
        if user is not None and state.get(USER) is user:
            copied[USER] = out[-1][USER]
        user = state.get(USER)
        out.append(copied)
    return out


def _freeze(value: Any) -> Hashable:
    """A hashable fingerprint of ``rule_only_data`` (slots and loops that occur only in rules)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_freeze(v) for v in value)
    return value


class IncrementalStatesTracker(DialogueStateTracker):
    """A ``DialogueStateTracker`` whose ``past_states`` and ``applied_events`` resume from the previous call."""

    states_cache: Optional[StatesCache] = None
    _event_chain: Optional[Tuple[int, int, List[int]]] = (
        None  # (id of the events deque, id of the last event chained, chain)
    )
    _applied_memo: Optional[Tuple[Tuple[int, int, Optional[int]], List[Any], List[int]]] = None
    # Rasa's copy() so far: (the events deque, how many of its events, the last of them, the replayed tracker)
    _replayed: Optional[Tuple[Any, int, Any, DialogueStateTracker]] = None

    @classmethod
    def from_events_with_cache(
        cls, sender_id: Text, events: List[Any], slots: Any, cache: StatesCache
    ) -> "IncrementalStatesTracker":
        tracker = cls.from_events(sender_id, events, slots)
        tracker.states_cache = cache
        return tracker

    def past_states(
        self,
        domain: Domain,
        omit_unset_slots: bool = False,
        ignore_rule_only_turns: bool = False,
        rule_only_data: Optional[Dict[Text, Any]] = None,
    ) -> List[State]:
        shared = self.shared_past_states(domain, omit_unset_slots, ignore_rule_only_turns, rule_only_data)
        if shared is not None:
            return copy_states(shared)
        return super().past_states(domain, omit_unset_slots, ignore_rule_only_turns, rule_only_data)

    def shared_past_states(
        self,
        domain: Domain,
        omit_unset_slots: bool = False,
        ignore_rule_only_turns: bool = False,
        rule_only_data: Optional[Dict[Text, Any]] = None,
    ) -> Optional[List[State]]:
        """``past_states`` without copying the states: they are the cached ones, for reading only (a caller copies
        those it keeps, states_window.py). None where this tracker computes like Rasa's (no cache, or an error)."""
        if self.states_cache is not None:
            try:
                key = (
                    "states",
                    id(domain),
                    self.sender_id,
                    omit_unset_slots,
                    ignore_rule_only_turns,
                    _freeze(rule_only_data),
                )
                applied, chain = self._applied()
                return resumable_states(
                    self,
                    applied,
                    chain,
                    domain,
                    self.states_cache,
                    key,
                    omit_unset_slots,
                    ignore_rule_only_turns,
                    rule_only_data,
                )
            except Exception:  # noqa: BLE001 - never fail a message: Rasa's own computation answers instead
                self._give_up("past_states")
        return None

    def applied_events(self) -> List[Any]:
        """Rasa's ``applied_events``: once per state of this tracker (every policy asks), and for a conversation
        one turn longer than last time, folding only its new events."""
        if self.states_cache is not None:
            try:
                return list(self._applied()[0])
            except Exception:  # noqa: BLE001 - never fail a message: Rasa's own computation answers instead
                self._give_up("applied_events")
        return super().applied_events()

    def copy(self) -> DialogueStateTracker:
        """Rasa's ``copy()``: a plain tracker that replays every event from the start (the processor makes one for
        every action it runs). The replay is kept on this tracker and goes on with the events added since; what is
        handed out is a copy of it (its own events deque, slots, active loop and latest action)."""
        if self.states_cache is not None:
            try:
                replay = self._replay_to_end()
                if replay is not None:
                    return _clone(replay)
            except Exception:  # noqa: BLE001 - never fail a message: Rasa's own copy answers instead
                logger.warning(f"IncrementalStatesTracker: copy of '{self.sender_id}' failed", exc_info=True)
            self._replayed = None
        return super().copy()

    def _replay_to_end(self) -> Optional[DialogueStateTracker]:
        events = self.events
        memo = self._replayed
        if (
            memo is not None
            and memo[0] is events
            and memo[1] <= len(events)
            and (memo[1] == 0 or events[memo[1] - 1] is memo[2])
        ):
            done, replay = memo[1], memo[3]
        else:
            done, replay = 0, self.init_copy()
        for event in itertools.islice(events, done, None) if done else events:
            if not event.timestamp <= float("inf"):  # Rasa's travel_back_in_time stops there
                return None
            replay.update(event)
        self._replayed = (events, len(events), events[-1] if events else None, replay)
        return replay

    def _give_up(self, what: str) -> None:
        """After an error: this tracker computes like Rasa's from now on, and the conversation's checkpoints are
        forgotten (the next message starts from scratch)."""
        logger.warning(
            f"IncrementalStatesTracker: {what} of conversation '{self.sender_id}' failed; Rasa's own computation "
            f"answers instead.",
            exc_info=True,
        )
        cache, self.states_cache = self.states_cache, None
        if cache is not None:
            cache.forget(self.sender_id)

    def events_chain(self) -> List[int]:
        """The hash chain of this tracker's events, extended as events are added (Rasa only appends them)."""
        events = self.events
        memo = self._event_chain
        if (
            memo is not None
            and memo[0] == id(events)
            and len(memo[2]) <= len(events)
            and (not memo[2] or id(events[len(memo[2]) - 1]) == memo[1])
        ):
            chain = memo[2]
            if len(chain) < len(events):
                chain = chain + _chain(events, len(chain), chain[-1] if chain else 0)
        else:
            chain = _chain(events)
        self._event_chain = (id(events), id(events[-1]) if events else 0, chain)
        return chain

    def _applied(self) -> Tuple[List[Any], List[int]]:
        events = self.events
        memo_key = (id(events), len(events), id(events[-1]) if events else None)
        if self._applied_memo is None or self._applied_memo[0] != memo_key:
            applied, chain = resumable_applied_events(self, self.states_cache)
            self._applied_memo = (memo_key, applied, chain)
        return self._applied_memo[1], self._applied_memo[2]


def _clone(replayed: DialogueStateTracker) -> DialogueStateTracker:
    """A tracker in the state of ``replayed`` that shares none of what ``update`` changes in place with it."""
    clone = copy.copy(replayed)
    clone.events = deque(replayed.events, replayed.events.maxlen)
    slots = type(replayed.slots)()
    slots.update((name, copy.copy(slot)) for name, slot in replayed.slots.items())
    clone.slots = slots
    clone.active_loop = copy.copy(replayed.active_loop)  # a dataclass that update() changes in place
    clone.latest_action = dict(replayed.latest_action) if replayed.latest_action is not None else None
    return clone


def _loop_names(events: List[Any]) -> frozenset:
    return frozenset(event.name for event in events if isinstance(event, ActiveLoop) and event.name)


def resumable_applied_events(tracker: IncrementalStatesTracker, cache: StatesCache) -> Tuple[List[Any], List[int]]:
    """Rasa 3.6.21's ``DialogueStateTracker.applied_events`` (and the hash chain of its result), resumed from the
    checkpoint of the same conversation when its events start with the checkpoint's events and name no loop
    the checkpoint did not know."""
    events = tracker.events
    chain = tracker.events_chain()
    key = ("applied", tracker.sender_id)
    checkpoint = cache.get(key)
    start = 0
    if (
        checkpoint is not None
        and 0 < checkpoint.length <= len(events)
        and chain[checkpoint.length - 1] == checkpoint.link
    ):
        new = list(itertools.islice(events, checkpoint.length, None))
        if _loop_names(new) <= checkpoint.loop_names:  # the first events are the checkpoint's: so are their loops
            start, loop_names = checkpoint.length, checkpoint.loop_names
            applied, applied_chain = list(checkpoint.applied), list(checkpoint.applied_chain)
    if not start:
        new = list(events)
        loop_names, applied, applied_chain = _loop_names(new), [], []

    def undo_till_previous(event_type: Any) -> None:
        """Rasa's ``_undo_till_previous`` on both lists."""
        while applied:
            removed = applied.pop()
            applied_chain.pop()
            if isinstance(removed, event_type):
                break

    for event in new:
        if isinstance(event, (Restarted, SessionStarted)):
            applied.clear()
            applied_chain.clear()
        elif isinstance(event, ActionReverted):
            undo_till_previous(ActionExecuted)
        elif isinstance(event, UserUtteranceReverted):
            undo_till_previous(UserUttered)
            undo_till_previous(ActionExecuted)
        elif (
            isinstance(event, ActionExecuted)
            and event.action_name in loop_names
            and not tracker._first_loop_execution_or_unhappy_path(event.action_name, applied)
        ):
            # Rasa drops the featurized events after the loop's previous execution: re-chain from there
            first = next(
                (
                    i + 1
                    for i in range(len(applied) - 1, -1, -1)
                    if isinstance(applied[i], ActionExecuted) and applied[i].action_name == event.action_name
                ),
                0,
            )
            tracker._undo_till_previous_loop_execution(event.action_name, applied)
            del applied_chain[first:]
            for kept in applied[first:]:
                applied_chain.append(_link(applied_chain[-1] if applied_chain else 0, kept))
        else:
            applied.append(event)
            applied_chain.append(_link(applied_chain[-1] if applied_chain else 0, event))
    if events:
        cache.put(key, _AppliedCheckpoint(len(events), chain[-1], list(applied), list(applied_chain), loop_names))
    return applied, applied_chain


def resumable_states(
    tracker: DialogueStateTracker,
    applied: List[Any],
    chain: List[int],
    domain: Domain,
    cache: StatesCache,
    key: Hashable,
    omit_unset_slots: bool,
    ignore_rule_only_turns: bool,
    rule_only_data: Optional[Dict[Text, Any]],
) -> List[State]:
    """``domain.states_for_tracker_history(tracker, ...)`` for the tracker's ``applied`` events (hash ``chain``),
    resumed from ``cache[key]`` where it still applies. A new list, but its states (all except the current one)
    are the checkpoint's: callers copy before they change one."""
    checkpoint = cache.get(key)
    resumed = (
        checkpoint is not None
        and checkpoint.domain is domain  # a model loaded again may get the old domain's id
        and checkpoint.length <= len(applied)
        and (checkpoint.length == 0 or chain[checkpoint.length - 1] == checkpoint.link)
    )
    if resumed:
        cache.hits += 1
        start = checkpoint.length
        # nothing new: the checkpoint's replayed tracker is only read; else a copy of it goes on
        replay = checkpoint.replay if start == len(applied) else _clone(checkpoint.replay)
        states = list(checkpoint.states)
        last_ml_action_sub_state, turn_was_hidden = checkpoint.last_ml_action_sub_state, checkpoint.turn_was_hidden
    else:
        cache.misses += 1
        start, states, last_ml_action_sub_state, turn_was_hidden = 0, [], None, False
        # the tracker init_copy() makes, keeping only its latest event: the states read the tracker's
        # slots, latest message, latest action and active loop, never its list of events
        replay = DialogueStateTracker(
            tracker.sender_id or DEFAULT_SENDER_ID, tracker.slots.values(), 1, is_rule_tracker=tracker.is_rule_tracker
        )

    def visit(tr: DialogueStateTracker, hide_rule_turn: bool) -> None:
        """One step of Rasa's loop (Domain.states_for_tracker_history)."""
        nonlocal last_ml_action_sub_state, turn_was_hidden
        if ignore_rule_only_turns:
            if not turn_was_hidden:
                last_ml_action_sub_state = domain._get_prev_action_sub_state(tr)
            if not tr.followup_action and not tr.latest_action_name == tr.active_loop_name:
                turn_was_hidden = hide_rule_turn
            if turn_was_hidden:
                return
        state = domain.get_active_state(tr, omit_unset_slots=omit_unset_slots)
        if ignore_rule_only_turns:
            domain._remove_rule_only_features(state, rule_only_data)
            if states:
                domain._substitute_rule_only_user_input(state, states[-1])
            if last_ml_action_sub_state:
                state[rasa.shared.core.constants.PREVIOUS_ACTION] = last_ml_action_sub_state
        states.append(domain._clean_state(state))

    for event in applied[start:]:
        if isinstance(event, ActionExecuted):
            visit(replay, event.hide_rule_turn)
        replay.update(event)
    if not resumed or start < len(applied):
        # the replayed tracker itself is the checkpoint: nothing changes it from here on, and the next call that
        # has new events to replay goes on from a copy of it
        cache.put(
            key,
            _Checkpoint(
                domain,
                len(applied),
                chain[-1] if applied else 0,
                replay,
                list(states),
                last_ml_action_sub_state,
                turn_was_hidden,
            ),
        )
    visit(replay, False)  # the current state (Rasa's generator yields the replayed tracker once more at the end)
    return states  # all but the last are the checkpoint's own: for reading only
