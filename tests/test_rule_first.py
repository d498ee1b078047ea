"""nlu_bert/rule_first.py: TEDPolicy is not run where RulePolicy's prediction wins anyway, and the prediction the
ensemble picks is Rasa's.

MemoizationPolicy, RulePolicy and TEDPolicy trained on the sample assistant predict at every length of its
stories and rules and of random conversations (forms, rejected actions, follow-ups, reverts, restarts, sessions);
Rasa's ensemble picks one prediction, with and without the change.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Iterator, List

import pytest
from rasa.core.policies.ensemble import DefaultPolicyPredictionEnsemble
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, ActionExecutionRejected, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert import rule_first

from dialogue_fixtures import random_conversation, story_trackers


@pytest.fixture
def installed() -> Iterator[None]:
    rule_first.install()
    yield
    rule_first.uninstall()


def picked(policies: List[Any], tracker: DialogueStateTracker, domain: Domain) -> List[Any]:
    """The policies' predictions in the graph's order and what the ensemble picks of them."""
    rule_only = policies[1]._get_rule_only_data()
    predictions = [p.predict_action_probabilities(tracker, domain, rule_only_data=rule_only) for p in policies]
    best = DefaultPolicyPredictionEnsemble._best_policy_prediction(copy.deepcopy(predictions), tracker, domain)
    fields = (best.probabilities, best.policy_name, best.policy_priority, best.events, best.optional_events,
              best.is_end_to_end_prediction, best.is_no_user_prediction, best.hide_rule_turn, best.action_metadata)  # fmt: skip
    return [fields, predictions]


def trackers(domain: Domain, events: List[Any], sender: str) -> Iterator[DialogueStateTracker]:
    for length in range(1, len(events) + 1):
        if isinstance(events[length - 1], (ActionExecuted, UserUttered, ActionExecutionRejected)):
            yield DialogueStateTracker.from_events(sender, copy.deepcopy(events[:length]), domain.slots)


def conversations(domain: Domain) -> List[List[Any]]:
    rng = random.Random(3)
    return [list(t.events) for t in story_trackers(domain)] + [random_conversation(domain, rng, 30) for _ in range(4)]


def test_the_ensemble_picks_rasas_prediction(domain: Domain, policies: List[Any], installed: None) -> None:
    skipped = compared = 0
    for index, events in enumerate(conversations(domain)):
        for tracker in trackers(domain, events, f"rule-first-{index}"):
            rule_first.uninstall()
            try:
                expected, _ = picked(policies, copy.deepcopy(tracker), domain)
            finally:
                rule_first.install()
            got, predictions = picked(policies, tracker, domain)
            assert got == expected, f"conversation {index}, {len(tracker.events)} events"
            compared += 1
            skipped += not any(predictions[2].probabilities)
    assert compared > 500
    assert skipped > compared // 4  # TED is not run for a good share of the actions


def test_ted_runs_when_it_could_win(domain: Domain, policies: List[Any], installed: None) -> None:
    """After a greeting RulePolicy predicts at 1.0 and TED is not run; TED runs when it predicts first, when its
    priority is RulePolicy's and when the last action was rejected."""
    _, rule, ted = policies
    start = [ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")]
    greeting = start + [UserUttered("你好", {"name": "greet", "confidence": 1.0})]
    rule_only = rule._get_rule_only_data()

    def predict(policy: Any, events: List[Any], sender: str, rule_first_: bool = True) -> Any:
        tracker = DialogueStateTracker.from_events(sender, copy.deepcopy(events), domain.slots)
        if rule_first_:
            rule.predict_action_probabilities(tracker, domain, rule_only_data=rule_only)
        return policy.predict_action_probabilities(tracker, domain, rule_only_data=rule_only)

    assert predict(rule, greeting, "rule").max_confidence == 1.0
    assert not any(predict(ted, greeting, "after-rule").probabilities)
    assert any(predict(ted, greeting, "ted-first", rule_first_=False).probabilities)
    ted.priority, saved = rule.priority, ted.priority
    try:
        assert any(predict(ted, greeting, "same-priority").probabilities)
    finally:
        ted.priority = saved
    rejected = greeting + [ActionExecutionRejected("utter_greet")]
    assert any(predict(ted, rejected, "rejected").probabilities)


def test_ted_runs_where_no_rule_applies_or_it_may_read_text(
    domain: Domain, policies: List[Any], installed: None
) -> None:
    """Where RulePolicy only predicts its fallback, or TED was trained on story texts (so its prediction may be an
    end-to-end one that the ensemble prefers), TED is run."""
    _, rule, ted = policies
    rule_only = rule._get_rule_only_data()
    unsure = 0
    for index, events in enumerate(conversations(domain)[-4:]):
        for tracker in trackers(domain, events, f"unsure-{index}"):
            if rule.predict_action_probabilities(tracker, domain, rule_only_data=rule_only).max_confidence < 1.0:
                unsure += 1
                assert not rule_first.rule_wins(ted, tracker, domain)
    assert unsure > 10
    greeting = [ActionExecuted("action_listen"), UserUttered("你好", {"name": "greet", "confidence": 1.0})]
    tracker = DialogueStateTracker.from_events("text", greeting, domain.slots)
    assert rule.predict_action_probabilities(tracker, domain, rule_only_data=rule_only).max_confidence == 1.0
    assert rule_first.rule_wins(ted, tracker, domain)
    ted.fake_features["text"] = []
    try:
        assert not rule_first.rule_wins(ted, tracker, domain)
    finally:
        del ted.fake_features["text"]
