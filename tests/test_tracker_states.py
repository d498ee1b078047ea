"""IncrementalStatesTracker (nlu_bert/tracker_states.py) gives exactly Rasa's dialogue states, turn by turn.

Each conversation grows one event at a time, as it does while it is served; at every length the tracker is
rebuilt from copies of the events (as the tracker store does for each message) and its states are compared
with ``Domain.states_for_tracker_history`` for every combination of the arguments the policies pass. The
conversations: every story and rule of the sample assistant, and random ones with forms, slots, follow-up
actions, rejected actions, rule-only turns, reverted utterances and actions, restarts and new sessions.
"""

from __future__ import annotations

import copy
import logging
import random
from typing import Any, List

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionReverted,
    Restarted,
    UserUtteranceReverted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert.tracker_states import IncrementalStatesTracker, StatesCache

from dialogue_fixtures import random_conversation, story_trackers
from nlu_testing import REPO_ROOT

ARGUMENTS = [
    (omit, ignore, rule_only)
    for omit in (False, True)
    for ignore in (False, True)
    for rule_only in (None, {"rule_only_slots": ["requested_slot"], "rule_only_loops": ["return_form"]})
]


def assert_same_states_while_growing(
    domain: Domain, events: List[Any], sender: str, cache: StatesCache, steps: List[int] = ()
) -> None:
    """At every length (or at the lengths ``steps`` give: several events at once, as a whole turn adds them)."""
    slots = domain.slots
    for length in steps or range(1, len(events) + 1):
        reference = DialogueStateTracker.from_events(sender, copy.deepcopy(events[:length]), slots)
        served = IncrementalStatesTracker.from_events_with_cache(sender, copy.deepcopy(events[:length]), slots, cache)
        for omit, ignore, rule_only in ARGUMENTS:
            expected = domain.states_for_tracker_history(reference, omit, ignore, rule_only)
            got = served.past_states(domain, omit, ignore, rule_only)
            assert got == expected, f"{sender}: {length} events, arguments {(omit, ignore, rule_only)}"


def test_the_sample_assistants_stories_and_rules(domain: Domain) -> None:
    trackers = story_trackers(domain)
    assert len(trackers) > 20
    cache = StatesCache()
    for index, tracker in enumerate(trackers):
        assert_same_states_while_growing(domain, list(tracker.events), f"story-{index}", cache)
    assert cache.hits > cache.misses  # most calls resumed


@pytest.mark.parametrize("seed", range(6))
def test_random_conversations_with_loops_reverts_and_restarts(domain: Domain, seed: int) -> None:
    rng = random.Random(seed)
    cache = StatesCache()
    for index in range(3):
        assert_same_states_while_growing(domain, random_conversation(domain, rng, 12), f"random-{seed}-{index}", cache)


def test_a_long_conversation_is_replayed_from_where_it_stopped(domain: Domain) -> None:
    """Turn after turn, each call replays only the new events (Rasa's replays them all, every time)."""
    rng = random.Random(7)
    events = random_conversation(domain, rng, 60)
    events = [e for e in events if not isinstance(e, (UserUtteranceReverted, Restarted, ActionReverted))]
    cache = StatesCache()
    replayed: List[int] = []
    original_update = DialogueStateTracker.update

    def counting_update(self: DialogueStateTracker, event: Any, domain: Any = None) -> None:
        replayed.append(1)
        original_update(self, event, domain)

    for length in range(10, len(events) + 1, 10):
        served = IncrementalStatesTracker.from_events_with_cache(
            "long", copy.deepcopy(events[:length]), domain.slots, cache
        )
        replayed.clear()
        DialogueStateTracker.update = counting_update
        try:
            served.past_states(domain, False, True, None)
        finally:
            DialogueStateTracker.update = original_update
        if length > 10:
            assert len(replayed) <= 10, f"{len(replayed)} events replayed at {length} events"


def test_without_a_cache_it_is_rasas_tracker(domain: Domain) -> None:
    events = random_conversation(domain, random.Random(3), 5)
    tracker = IncrementalStatesTracker.from_events("plain", events, domain.slots)
    assert tracker.past_states(domain) == domain.states_for_tracker_history(
        DialogueStateTracker.from_events("plain", events, domain.slots)
    )


@pytest.mark.parametrize("seed", range(4))
def test_whole_turns_at_once_and_conversations_sharing_an_id(domain: Domain, seed: int) -> None:
    """A turn adds several events at once (a revert and what follows it can arrive together), and conversations
    under one id, growing in turns (two stories, or a conversation rewritten), must never resume each other."""
    rng = random.Random(100 + seed)
    cache = StatesCache()
    conversations = [random_conversation(domain, rng, 10) for _ in range(2)] + [
        list(t.events) for t in story_trackers(domain)[:6]
    ]
    lengths = [0] * len(conversations)
    while any(length < len(events) for length, events in zip(lengths, conversations)):
        for index, events in enumerate(conversations):
            if lengths[index] < len(events):
                lengths[index] = min(len(events), lengths[index] + rng.randint(1, 8))
                assert_same_states_while_growing(domain, events, "shared-id", cache, [lengths[index]])


def test_an_intent_corrected_in_place_is_not_resumed(domain: Domain) -> None:
    """The HTTP API can replace a conversation's events with the same text and timestamp but another intent
    (annotation tools do): the states must follow the corrected intent, not the checkpoint."""
    intents = list(domain.intents)
    events = random_conversation(domain, random.Random(11), 6)
    cache = StatesCache()
    assert_same_states_while_growing(domain, events, "corrected", cache, [len(events)])
    corrected = copy.deepcopy(events)
    applied = DialogueStateTracker.from_events("corrected", corrected, domain.slots).applied_events()
    kept = [e for e in applied if isinstance(e, UserUttered)][-1]  # a user turn the states do read
    last_user = next(i for i, e in enumerate(corrected) if e is kept)
    old = corrected[last_user]
    other = next(i for i in intents if i != old.intent_name)
    fixed = copy.deepcopy(old)  # same text, timestamp and everything else
    fixed.intent = {"name": other, "confidence": 1.0}
    fixed.parse_data["intent"] = dict(fixed.intent)
    corrected[last_user] = fixed
    assert_same_states_while_growing(domain, corrected, "corrected", cache, [len(corrected)])


def test_a_domain_loaded_again_is_not_resumed_from_the_old_ones_states(domain: Domain) -> None:
    """A model loaded again brings a new Domain (possibly at the old one's address): its checkpoints are not used."""
    events = random_conversation(domain, random.Random(12), 6)
    cache = StatesCache()
    assert_same_states_while_growing(domain, events, "reloaded", cache, [len(events) - 3])
    misses = cache.misses
    again = Domain.load(str(REPO_ROOT / "domain.yml"))
    assert_same_states_while_growing(again, events, "reloaded", cache, [len(events)])
    assert cache.misses > misses


def test_an_error_inside_falls_back_to_rasas_computation(
    domain: Domain, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the incremental computation must never fail a message: Rasa's own states answer."""
    import nlu_bert.tracker_states as module

    events = random_conversation(domain, random.Random(13), 5)
    cache = StatesCache()
    assert_same_states_while_growing(domain, events, "failing", cache, [len(events) - 2])

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(module, "resumable_states", broken)
    monkeypatch.setattr(module, "resumable_applied_events", broken)
    served = IncrementalStatesTracker.from_events_with_cache("failing", copy.deepcopy(events), domain.slots, cache)
    reference = DialogueStateTracker.from_events("failing", copy.deepcopy(events), domain.slots)
    with caplog.at_level(logging.WARNING, logger="nlu_bert.tracker_states"):
        assert served.past_states(domain) == domain.states_for_tracker_history(reference)
        assert [e.as_dict() for e in served.applied_events()] == [e.as_dict() for e in reference.applied_events()]
    assert any("Rasa's own computation answers instead" in r.getMessage() for r in caplog.records)
    assert not [key for key in cache._entries if "failing" in key]  # the next message starts from scratch


@pytest.mark.parametrize("seed", range(3))
def test_applied_events_are_rasas(domain: Domain, seed: int) -> None:
    events = random_conversation(domain, random.Random(200 + seed), 12)
    cache = StatesCache()
    for length in range(1, len(events) + 1):
        reference = DialogueStateTracker.from_events("applied", copy.deepcopy(events[:length]), domain.slots)
        served = IncrementalStatesTracker.from_events_with_cache(
            "applied", copy.deepcopy(events[:length]), domain.slots, cache
        )
        assert [e.as_dict() for e in served.applied_events()] == [e.as_dict() for e in reference.applied_events()]


def _whole_state(tracker: DialogueStateTracker) -> Any:
    """Everything a tracker holds, comparable."""
    plain = {
        k: v for k, v in vars(tracker).items() if k not in ("events", "slots", "latest_message", "latest_bot_utterance")
    }
    return (
        type(tracker),
        plain,
        [e.as_dict() for e in tracker.events],
        tracker.events.maxlen,
        {name: (type(slot), vars(slot)) for name, slot in tracker.slots.items()},
        # (after a restart these are new empty events, each with the time it was made)
        {**tracker.latest_message.as_dict(), "timestamp": None} if tracker.latest_message else None,
        {**tracker.latest_bot_utterance.as_dict(), "timestamp": None} if tracker.latest_bot_utterance else None,
    )


@pytest.mark.parametrize("seed", range(4))
def test_copies_are_rasas_and_continue_the_previous_replay(domain: Domain, seed: int) -> None:
    """``copy()`` (one per action the processor runs) gives Rasa's copy at every length, also after the copies
    handed out were changed and after the processor cleared the follow-up action; only new events are replayed."""
    rng = random.Random(seed)
    events = random_conversation(domain, random.Random(100 + seed), 40)
    served = IncrementalStatesTracker.from_events_with_cache("c", [], domain.slots, StatesCache(16))
    replayed: List[int] = []
    original_update = DialogueStateTracker.update

    def counting_update(self: DialogueStateTracker, event: Any, domain: Any = None) -> None:
        replayed.append(1)
        original_update(self, event, domain)

    copies = last = 0
    for index, event in enumerate(events):
        served.update(event)
        if rng.random() < 0.3 and served.followup_action:
            served.clear_followup_action()  # as the processor does before running it
        if rng.random() < 0.5:
            continue
        replayed.clear()
        DialogueStateTracker.update = counting_update
        try:
            got = served.copy()
        finally:
            DialogueStateTracker.update = original_update
        if copies:
            assert len(replayed) <= index + 1 - last, "the replay started again"
        copies, last = copies + 1, index + 1
        assert _whole_state(got) == _whole_state(DialogueStateTracker.copy(served))
        # what an action does to its copy stays in that copy
        got.update(events[rng.randrange(len(events))])
        for slot in got.slots.values():
            slot.value = "changed"
        if got.active_loop is not None:
            got.active_loop.rejected = not got.active_loop.rejected
        assert _whole_state(served.copy()) == _whole_state(DialogueStateTracker.copy(served))
    assert copies > 10


def test_without_a_cache_copies_are_rasas_own(domain: Domain) -> None:
    events = random_conversation(domain, random.Random(3), 5)
    tracker = IncrementalStatesTracker.from_events("c", events, domain.slots)
    assert tracker._replayed is None and _whole_state(tracker.copy()) == _whole_state(
        DialogueStateTracker.copy(tracker)
    )
    assert tracker._replayed is None
