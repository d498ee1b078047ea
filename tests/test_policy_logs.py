"""nlu_bert/policy_logs.py: RulePolicy's debug listing of the states is Rasa's text, produced only when printed."""

from __future__ import annotations

import copy

from rasa.core.policies.policy import Policy
from rasa.core.policies.rule_policy import RulePolicy

from nlu_bert.policy_logs import StatesForLog, install

STATES = [
    {},
    {"user": {"intent": "greet"}, "prev_action": {"action_name": "action_listen"}},
    {"user": {"text": "你好", "entities": ("product",)}, "prev_action": {"action_name": "utter_greet"}},
    {"prev_action": {"action_text": "hi"}, "active_loop": {"name": "order_form"}},
]


def test_rule_policy_formats_its_states_only_when_the_line_is_written() -> None:
    expected = Policy.format_tracker_states(STATES)
    assert "user intent: greet" in expected and "active loop" in expected
    had_own = "format_tracker_states" in RulePolicy.__dict__
    try:
        install()
        install()
        got = RulePolicy.format_tracker_states(STATES)
        assert isinstance(got, StatesForLog)
        assert copy.deepcopy(got) is got  # what RulePolicy does before the logger looks at the level
        assert str(got) == repr(got) == expected
        assert Policy.format_tracker_states(STATES) == expected  # other policies keep Rasa's text
        assert str(RulePolicy.format_tracker_states([])) == Policy.format_tracker_states([])
    finally:
        if not had_own:
            del RulePolicy.format_tracker_states
