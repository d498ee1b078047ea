"""nlu_bert/states_window.py: policies with a max_history see exactly Rasa's states, copied only where kept.

For conversations that grow one event at a time (the sample assistant's stories and rules, and random ones with
forms, slots, rule-only turns, ``action_unlikely_intent``, reverts, restarts and new sessions), the featurizers'
prediction states and the predictions of MemoizationPolicy, RulePolicy (which reads only its window of states) and
TEDPolicy trained on the sample assistant are compared: Rasa's own computation on a plain tracker against the installed one on an
``IncrementalStatesTracker`` whose states cache lives across the whole conversation (as in a server process).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from rasa.core.featurizers.single_state_featurizer import SingleStateFeaturizer
from rasa.core.featurizers.tracker_featurizers import (
    FullDialogueTrackerFeaturizer,
    IntentMaxHistoryTrackerFeaturizer,
    MaxHistoryTrackerFeaturizer,
)
from rasa.core.policies.rule_policy import RulePolicy
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, Restarted, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert import states_window
from nlu_bert.tracker_states import IncrementalStatesTracker, StatesCache

from dialogue_fixtures import random_conversation, story_trackers

RULE_ONLY = {"rule_only_slots": ["requested_slot"], "rule_only_loops": ["return_form"]}
ARGUMENTS = [
    (text, ignore, rule_only, unlikely)
    for text in (False, True)
    for ignore in (False, True)
    for rule_only in (None, RULE_ONLY)
    for unlikely in (False, True)
]


@pytest.fixture
def installed() -> Iterator[None]:
    states_window.install()
    yield
    states_window.uninstall()


def with_unlikely_intents(events: List[Any], rng: random.Random) -> List[Any]:
    """``events`` with ``action_unlikely_intent`` after some user messages (UnexpecTED's action, which the
    policies that learn from stories leave out of their states)."""
    out: List[Any] = []
    for event in events:
        out.append(event)
        if isinstance(event, UserUttered) and rng.random() < 0.3:
            out.append(ActionExecuted("action_unlikely_intent", timestamp=event.timestamp + 0.05))
    return out


def conversations(domain: Domain, seed: int, turns: int) -> List[List[Any]]:
    rng = random.Random(seed)
    return [with_unlikely_intents(random_conversation(domain, rng, turns), rng) for _ in range(2)]


def rasas(featurizer: Any, tracker: DialogueStateTracker, domain: Domain, *arguments: Any) -> List[Any]:
    states_window.uninstall()
    try:
        return featurizer.prediction_states(
            [tracker], domain, *arguments[:3], ignore_action_unlikely_intent=arguments[3]
        )
    finally:
        states_window.install()


def served(featurizer: Any, tracker: DialogueStateTracker, domain: Domain, *arguments: Any) -> List[Any]:
    return featurizer.prediction_states([tracker], domain, *arguments[:3], ignore_action_unlikely_intent=arguments[3])


def trackers_while_growing(domain: Domain, events: List[Any], sender: str, cache: StatesCache) -> Iterator[Any]:
    """(Rasa's tracker, the served tracker) at every length of ``events``, rebuilt from copies each time (as the
    tracker store hands them out); the served ones share ``cache``."""
    for length in range(1, len(events) + 1):
        yield (
            DialogueStateTracker.from_events(sender, copy.deepcopy(events[:length]), domain.slots),
            IncrementalStatesTracker.from_events_with_cache(
                sender, copy.deepcopy(events[:length]), domain.slots, cache
            ),
        )


@pytest.mark.parametrize("seed", range(3))
def test_featurizer_states_are_rasas_at_every_length(domain: Domain, installed: None, seed: int) -> None:
    rng = random.Random(seed)
    featurizers = [MaxHistoryTrackerFeaturizer(SingleStateFeaturizer(), max_history=h) for h in (1, 2, 5, 8)]
    others = [
        MaxHistoryTrackerFeaturizer(SingleStateFeaturizer(), max_history=None),  # RulePolicy's: Rasa's own path
        FullDialogueTrackerFeaturizer(SingleStateFeaturizer()),
        IntentMaxHistoryTrackerFeaturizer(SingleStateFeaturizer(), max_history=5),
    ]
    cache = StatesCache()
    for index, events in enumerate(conversations(domain, seed, 25)):
        for reference, tracker in trackers_while_growing(domain, events, f"window-{seed}-{index}", cache):
            for arguments in ARGUMENTS:
                featurizer = rng.choice(featurizers + others[:1]) if rng.random() < 0.8 else rng.choice(others)
                expected = rasas(featurizer, reference, domain, *arguments)
                cached_before = copy.deepcopy(tracker.shared_past_states(domain, False, *arguments[1:3]))
                got = served(featurizer, tracker, domain, *arguments)
                assert got == expected, f"{len(events)} events, {type(featurizer).__name__}, {arguments}"
                # the policy owns what it got: changing it leaves the cached states as they were
                for states in got:
                    for state in states:
                        state.clear()
                assert tracker.shared_past_states(domain, False, *arguments[1:3]) == cached_before
    assert cache.hits > cache.misses


def test_only_the_kept_states_are_copied(domain: Domain, installed: None) -> None:
    """At 100 turns a max_history 5 prediction copies at most 5 states (Rasa's past_states copies them all)."""
    events = with_unlikely_intents(random_conversation(domain, random.Random(11), 100), random.Random(12))
    events = [e for e in events if not isinstance(e, (Restarted, SessionStarted))]
    tracker = IncrementalStatesTracker.from_events_with_cache("long", events, domain.slots, StatesCache())
    assert len(tracker.past_states(domain)) > 100
    copied: List[int] = []
    original = states_window.copy_states

    def counting_copy(states: Any) -> Any:
        states = list(states)
        copied.append(len(states))
        return original(states)

    states_window.copy_states = counting_copy
    try:
        featurizer = MaxHistoryTrackerFeaturizer(SingleStateFeaturizer(), max_history=5)
        for arguments in ARGUMENTS:
            copied.clear()
            states = served(featurizer, tracker, domain, *arguments)
            assert len(states[0]) == 5 and copied == [5]
    finally:
        states_window.copy_states = original


def test_last_kept_is_rasas_filter_then_slice() -> None:
    rng = random.Random(5)
    for _ in range(300):
        states = [
            {"prev_action": {"action_name": rng.choice(["action_listen", "action_unlikely_intent", "utter_x"])}}
            for _ in range(rng.randint(0, 12))
        ]
        for max_history in (1, 3, 5, 20):
            assert states_window.last_kept(states, max_history, False) == states[-max_history:]
            filtered = MaxHistoryTrackerFeaturizer._remove_action_unlikely_intent_from_states(states)
            assert states_window.last_kept(states, max_history, True) == filtered[-max_history:]


def test_other_trackers_get_rasas_computation(domain: Domain, installed: None) -> None:
    events = random_conversation(domain, random.Random(2), 8)
    featurizer = MaxHistoryTrackerFeaturizer(SingleStateFeaturizer(), max_history=3)
    for tracker in (
        DialogueStateTracker.from_events("plain", events, domain.slots),
        IncrementalStatesTracker.from_events("no-cache", events, domain.slots),  # its cache is off
    ):
        reference = DialogueStateTracker.from_events("plain", events, domain.slots)
        assert served(featurizer, tracker, domain, True, True, None, True) == rasas(
            featurizer, reference, domain, True, True, None, True
        )


def predictions(policies: List[Any], tracker: DialogueStateTracker, domain: Domain) -> List[Any]:
    rule_only = policies[1]._get_rule_only_data()
    out = []
    for policy in policies:
        prediction = policy.predict_action_probabilities(tracker, domain, rule_only_data=rule_only)
        out.append((prediction.policy_name, prediction.probabilities, prediction.events, prediction.hide_rule_turn))
    return out


@pytest.mark.parametrize("seed", range(2))
def test_policy_predictions_are_rasas_over_long_conversations(
    domain: Domain, policies: List[Any], installed: None, seed: int
) -> None:
    cache = StatesCache()
    long_ones = conversations(domain, 50 + seed, 40)
    stories = [list(t.events) for t in story_trackers(domain)[seed * 10 : seed * 10 + 6]]
    for index, events in enumerate(long_ones + stories):
        for length, (reference, tracker) in enumerate(
            trackers_while_growing(domain, events, f"policies-{seed}-{index}", cache), 1
        ):
            if not isinstance(events[length - 1], (ActionExecuted, UserUttered)) and length < len(events):
                continue  # a prediction follows an action or a user message
            states_window.uninstall()
            try:
                expected = predictions(policies, reference, domain)
            finally:
                states_window.install()
            assert predictions(policies, tracker, domain) == expected, f"conversation {index}, {length} events"


def test_rule_policy_reads_only_its_window(domain: Domain, policies: List[Any], installed: None) -> None:
    """On a long conversation RulePolicy gets its last ``rule_window`` states, which are Rasa's last states."""
    rule_policy = policies[1]
    window = states_window.rule_window(rule_policy)
    events = conversations(domain, 7, 40)[0]
    reference = DialogueStateTracker.from_events("rules-ref", copy.deepcopy(events), domain.slots)
    tracker = IncrementalStatesTracker.from_events_with_cache(
        "rules", copy.deepcopy(events), domain.slots, StatesCache()
    )
    rule_only = rule_policy._get_rule_only_data()
    for text in (False, True):
        got = rule_policy._prediction_states(tracker, domain, text, rule_only_data=rule_only)
        states_window.uninstall()
        try:
            full = rule_policy._prediction_states(reference, domain, text, rule_only_data=rule_only)
        finally:
            states_window.install()
        assert len(full) > 3 * window
        assert got == full[-window:]


def test_states_before_the_rule_window_change_nothing(policies: List[Any]) -> None:
    """For state sequences that end in each rule and each rule source not in stories of the sample assistant
    (exactly, or with the rule's first state swapped), after states that match nothing: the rules that apply and
    whether the states' key is a rule source not in stories are the same for the last ``rule_window`` states as for
    all of them."""
    rule_policy = policies[1]
    window = states_window.rule_window(rule_policy)
    lookup = rule_policy.lookup
    not_in_stories = [k for k in lookup["rules_not_in_stories"] if isinstance(k, str) and k.startswith("[")]
    endings = [json.loads(k) for k in [*lookup["rules"], *lookup["rules_for_loop_unhappy_path"], *not_in_stories]]
    pool = [state for ending in endings for state in ending if state.get("prev_action")]
    rng = random.Random(5)
    for ending in endings:
        for swapped in (False, True):
            tail = [rng.choice(pool)] + ending[1:] if swapped else ending
            states = copy.deepcopy([rng.choice(pool) for _ in range(2 * window)] + tail)
            for name in ("rules", "rules_for_loop_unhappy_path"):
                assert rule_policy._get_possible_keys(lookup[name], states[-window:]) == rule_policy._get_possible_keys(
                    lookup[name], states
                )
            key, windowed_key = (
                rule_policy._create_feature_key(states),
                rule_policy._create_feature_key(states[-window:]),
            )
            assert (windowed_key in not_in_stories) == (key in not_in_stories)


def rule_outcomes(policy: RulePolicy, tracker: DialogueStateTracker, domain: Domain, rule_only: Any) -> List[Any]:
    """RulePolicy's prediction and, from text and from intents, the action and the rule it matched (a key made of
    the states when none matched: only whether it is a rule source not in stories counts)."""
    prediction = policy.predict_action_probabilities(tracker, domain, rule_only_data=rule_only)
    out: List[Any] = [prediction.probabilities, prediction.events, prediction.hide_rule_turn]
    for text in (True, False):
        action, source, returning = policy._find_action_from_rules(tracker, domain, text)
        if source not in policy.lookup["rules"]:
            source = source in policy.lookup["rules_not_in_stories"]
        out.append((action, source, returning))
    return out


def test_rules_late_in_a_conversation_predict_as_rasas(domain: Domain, policies: List[Any], installed: None) -> None:
    """Every rule of the sample assistant (its conditions and what follows its ``...``) played after a long random
    conversation: at each step RulePolicy's prediction, with only its window of states, is Rasa's, ``hide_rule_turn`` included."""
    rule_policy, rule_only = policies[1], policies[1]._get_rule_only_data()
    rng, cache, compared = random.Random(11), StatesCache(), 0
    for index, rule in enumerate(t for t in story_trackers(domain) if t.is_rule_tracker):
        events = list(rule.events)
        snippet = [i for i, e in enumerate(events) if isinstance(e, ActionExecuted) and e.action_name == "..."]
        if not snippet:
            continue  # a rule for the start of a conversation
        prefix = random_conversation(domain, rng, 15)
        clock = max(e.timestamp for e in prefix) + 1.0
        played = copy.deepcopy(events[: snippet[0]] + events[snippet[0] + 1 :])  # its conditions, then its steps
        for offset, event in enumerate(played):
            event.timestamp = clock + offset
        whole = prefix + played
        for length, (reference, tracker) in enumerate(trackers_while_growing(domain, whole, f"rule-{index}", cache), 1):
            if length <= len(prefix) or not isinstance(whole[length - 1], (ActionExecuted, UserUttered)):
                continue
            states_window.uninstall()
            try:
                expected = rule_outcomes(rule_policy, reference, domain, rule_only)
            finally:
                states_window.install()
            assert rule_outcomes(rule_policy, tracker, domain, rule_only) == expected, f"rule {index}, {length} events"
            compared += 1
    assert compared > 50


def test_the_tracker_store_installs_it(tmp_path: Path) -> None:
    from nlu_bert.tracker_store import ResilientSQLTrackerStore

    states_window.uninstall()
    try:
        ResilientSQLTrackerStore(dialect="sqlite", db=str(tmp_path / "off.db"))
        assert MaxHistoryTrackerFeaturizer.prediction_states is states_window._rasas
        assert RulePolicy._prediction_states is states_window._rasas_rule_states
        ResilientSQLTrackerStore(dialect="sqlite", db=str(tmp_path / "on.db"), states_cache_size=8)
        assert MaxHistoryTrackerFeaturizer.prediction_states is states_window.prediction_states
        assert RulePolicy._prediction_states is states_window.rule_prediction_states
    finally:
        states_window.uninstall()
