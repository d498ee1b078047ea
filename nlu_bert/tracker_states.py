"""The dialogue states of a conversation, computed once per turn instead of once per policy and message.

Every policy of a Rasa 3.6 prediction turns the whole conversation (since its session started) into
dialogue states (``DialogueStateTracker.past_states`` -> ``Domain.states_for_tracker_history``): it replays
every event into a fresh tracker and builds a state before each action, to keep the last ``max_history`` of
them. MemoizationPolicy, RulePolicy (twice) and TEDPolicy each do it, for each action predicted, so the cost
of a message grows with the length of the conversation (benchmarks/results/message_profile.md).

``IncrementalStatesTracker`` computes the same states, and keeps per conversation where it stopped (the
replayed tracker, the states so far, and the signature of the events they came from) in a ``StatesCache``;
likewise the conversation's ``applied_events`` (its events without the reverted ones), which every policy
asks for again.
The next call, for the same conversation one turn later, checks that the events it was computed from are
still the first events of the conversation (type, timestamp and content of each) and goes on from there:
only the new events are replayed. Anything else (another conversation, an event reverted or rewritten, a restart)
computes from the start, as Rasa does. The states returned are copies: callers may change them.

ResilientSQLTrackerStore (tracker_store.py) hands out these trackers; the loop below is Rasa 3.6.21's
``Domain.states_for_tracker_history``, made resumable. tests/test_tracker_states.py checks both give the
same states, turn by turn, on the sample assistant's stories and on conversations with forms, reverts,
restarts and rule-only turns.
"""
from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any, Dict, Hashable, List, Optional, Text, Tuple

import rasa.shared.core.constants
from rasa.shared.constants import DEFAULT_SENDER_ID
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.events import ActionExecuted, ActionReverted, ActiveLoop, Restarted, SessionStarted, UserUttered, UserUtteranceReverted
from rasa.shared.core.trackers import DialogueStateTracker

Signature = List[Tuple[Any, ...]]


def _mark(event: Any) -> Tuple[Any, ...]:
    """What identifies an event at its place in a conversation: its type and timestamp, and what it says."""
    return (event.type_name, event.timestamp, getattr(event, "text", None), getattr(event, "action_name", None),
            getattr(event, "key", None), getattr(event, "value", None), getattr(event, "name", None))


class _Checkpoint:
    """Where a computation stopped: after ``signature``'s events, before the final (current) state."""

    __slots__ = ("signature", "replay", "states", "last_ml_action_sub_state", "turn_was_hidden")

    def __init__(self, signature: Signature, replay: DialogueStateTracker, states: List[State],
                 last_ml_action_sub_state: Any, turn_was_hidden: bool) -> None:
        self.signature, self.replay, self.states = signature, replay, states
        self.last_ml_action_sub_state, self.turn_was_hidden = last_ml_action_sub_state, turn_was_hidden


class _AppliedCheckpoint:
    """The events a conversation's events fold to (``applied_events``), after the events ``marks`` stand for."""

    __slots__ = ("marks", "applied", "loop_names")

    def __init__(self, marks: Signature, applied: List[Any], loop_names: frozenset) -> None:
        self.marks, self.applied, self.loop_names = marks, applied, loop_names


class StatesCache:
    """The checkpoints of the most recent ``size`` (conversation, arguments) pairs of one process."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._entries: "OrderedDict[Hashable, _Checkpoint]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Optional[_Checkpoint]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, checkpoint: _Checkpoint) -> None:
        with self._lock:
            self._entries[key] = checkpoint
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _copy_state(state: State) -> State:
    return {key: dict(sub) for key, sub in state.items()}


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
    _applied_memo: Optional[Tuple[Tuple[int, int, Optional[int]], List[Any]]] = None

    @classmethod
    def from_events_with_cache(cls, sender_id: Text, events: List[Any], slots: Any, cache: StatesCache) -> "IncrementalStatesTracker":
        tracker = cls.from_events(sender_id, events, slots)
        tracker.states_cache = cache
        return tracker

    def past_states(self, domain: Domain, omit_unset_slots: bool = False, ignore_rule_only_turns: bool = False,
                    rule_only_data: Optional[Dict[Text, Any]] = None) -> List[State]:
        if self.states_cache is None:
            return super().past_states(domain, omit_unset_slots, ignore_rule_only_turns, rule_only_data)
        key = ("states", id(domain), self.sender_id, omit_unset_slots, ignore_rule_only_turns, _freeze(rule_only_data))
        return resumable_states(self, domain, self.states_cache, key, omit_unset_slots, ignore_rule_only_turns, rule_only_data)

    def applied_events(self) -> List[Any]:
        """Rasa's ``applied_events``: once per state of this tracker (every policy asks), and for a conversation
        one turn longer than last time, folding only its new events."""
        if self.states_cache is None:
            return super().applied_events()
        events = self.events
        memo_key = (id(events), len(events), id(events[-1]) if events else None)
        if self._applied_memo is None or self._applied_memo[0] != memo_key:
            self._applied_memo = (memo_key, resumable_applied_events(self, self.states_cache))
        return list(self._applied_memo[1])


def resumable_applied_events(tracker: DialogueStateTracker, cache: StatesCache) -> List[Any]:
    """Rasa 3.6.21's ``DialogueStateTracker.applied_events``, resumed from the checkpoint of the same conversation
    when its events start with the checkpoint's events and name no loop the checkpoint did not know."""
    events = list(tracker.events)
    marks: Signature = [_mark(event) for event in events]
    loop_names = frozenset(event.name for event in events if isinstance(event, ActiveLoop) and event.name)
    key = ("applied", tracker.sender_id)
    checkpoint = cache.get(key)
    if (checkpoint is not None and checkpoint.loop_names == loop_names and len(checkpoint.marks) <= len(marks)
            and marks[: len(checkpoint.marks)] == checkpoint.marks):
        start, applied = len(checkpoint.marks), list(checkpoint.applied)
    else:
        start, applied = 0, []
    for event in events[start:]:
        if isinstance(event, (Restarted, SessionStarted)):
            applied = []
        elif isinstance(event, ActionReverted):
            tracker._undo_till_previous(ActionExecuted, applied)
        elif isinstance(event, UserUtteranceReverted):
            tracker._undo_till_previous(UserUttered, applied)
            tracker._undo_till_previous(ActionExecuted, applied)
        elif (isinstance(event, ActionExecuted) and event.action_name in loop_names
              and not tracker._first_loop_execution_or_unhappy_path(event.action_name, applied)):
            tracker._undo_till_previous_loop_execution(event.action_name, applied)
        else:
            applied.append(event)
    cache.put(key, _AppliedCheckpoint(marks, list(applied), loop_names))
    return applied


def resumable_states(tracker: DialogueStateTracker, domain: Domain, cache: StatesCache, key: Hashable,
                     omit_unset_slots: bool, ignore_rule_only_turns: bool, rule_only_data: Optional[Dict[Text, Any]]) -> List[State]:
    """``domain.states_for_tracker_history(tracker, ...)``, resumed from ``cache[key]`` where it still applies."""
    applied = tracker.applied_events()
    signature: Signature = [_mark(event) for event in applied]
    checkpoint = cache.get(key)
    if checkpoint is not None and len(checkpoint.signature) <= len(signature) and signature[: len(checkpoint.signature)] == checkpoint.signature:
        cache.hits += 1
        start = len(checkpoint.signature)
        replay = copy.deepcopy(checkpoint.replay)
        states = list(checkpoint.states)
        last_ml_action_sub_state, turn_was_hidden = checkpoint.last_ml_action_sub_state, checkpoint.turn_was_hidden
    else:
        cache.misses += 1
        start, states, last_ml_action_sub_state, turn_was_hidden = 0, [], None, False
        # the tracker init_copy() makes, keeping only its latest event: the states read the tracker's
        # slots, latest message, latest action and active loop, never its list of events
        replay = DialogueStateTracker(tracker.sender_id or DEFAULT_SENDER_ID, tracker.slots.values(), 1,
                                      is_rule_tracker=tracker.is_rule_tracker)

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
    # the replayed tracker itself is the checkpoint (nothing changes it from here on: the next call resumes from
    # a copy of it)
    cache.put(key, _Checkpoint(signature, replay, list(states), last_ml_action_sub_state, turn_was_hidden))
    visit(replay, False)  # the current state (Rasa's generator yields the replayed tracker once more at the end)
    return [_copy_state(state) for state in states]
