"""RulePolicy's debug listing of the dialogue states, written only when debug logging is on.

For every prediction RulePolicy (Rasa 3.6) formats all dialogue states of the session into a text for a debug
log line, and deep-copies that text, before the logger decides whether debug is on: at turn 100 of the
sample assistant, 0.6 ms per call and two calls per action predicted, for a line that a server at the INFO
level never writes. ``install()`` (the RequestGuard calls it when the server starts) makes
``RulePolicy.format_tracker_states`` return a ``StatesForLog`` instead: the same text, produced when the log
line is written (at once, while the states are as they were). Only RulePolicy is changed; it is the only
caller in Rasa.
"""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa.core.policies.policy import Policy

_format = Policy.format_tracker_states


class StatesForLog:
    """Rasa's ``Policy.format_tracker_states(states)``, formatted when it is printed."""

    __slots__ = ("states",)

    def __init__(self, states: List[Dict[Text, Any]]) -> None:
        self.states = states

    def __str__(self) -> Text:
        return _format(self.states)

    __repr__ = __str__

    def __deepcopy__(self, memo: Dict[int, Any]) -> "StatesForLog":
        return self  # RulePolicy deep-copies it for the log line; the line is written before the states change


def install() -> None:
    """RulePolicy formats its states for the debug log only when a line is written (idempotent)."""
    from rasa.core.policies.rule_policy import RulePolicy

    RulePolicy.format_tracker_states = staticmethod(StatesForLog)  # type: ignore[method-assign]
