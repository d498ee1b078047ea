"""The last ``max_history`` dialogue states copied for a policy, instead of every state of the conversation.

Rasa 3.6.21's ``MaxHistoryTrackerFeaturizer.prediction_states`` (MemoizationPolicy and TEDPolicy, each
``max_history: 5`` in config.yml) asks the tracker for all its states (``past_states``), drops those after
``action_unlikely_intent`` (policies that learn from stories), keeps the last ``max_history`` and then changes the
kept ones in place (``_choose_last_user_input``). ``IncrementalStatesTracker`` (tracker_states.py) has all states
at hand already, but ``past_states`` must hand out copies of them, since callers change them: a copy of every
state of the conversation, for every policy, for every action predicted.

``install()`` (ResilientSQLTrackerStore calls it when its ``states_cache_size`` is set) makes the featurizer ask
such a tracker for its cached states themselves (``shared_past_states``, read only), drop and keep exactly what
Rasa drops and keeps (the ``action_unlikely_intent`` filter is read from the end until ``max_history`` states are
kept) and copy only those (sharing sub-states where Rasa's states share them), before Rasa's own ``_choose_last_user_input`` changes them. Everything else is
Rasa's: other trackers, other featurizers (subclasses included: FullDialogueTrackerFeaturizer,
IntentMaxHistoryTrackerFeaturizer), no ``max_history`` (RulePolicy keeps every state), and a tracker that
answers None (its cache is off or failed). tests/test_states_window.py compares the policies' states and
predictions with and without it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Text

from rasa.core.featurizers.tracker_featurizers import (
    MaxHistoryTrackerFeaturizer,
    _is_prev_action_unlikely_intent_in_state,
)
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert.tracker_states import copy_states

_rasas = MaxHistoryTrackerFeaturizer.prediction_states


def last_kept(states: Sequence[State], max_history: int, ignore_action_unlikely_intent: bool) -> List[State]:
    """``slice_state_history(remove_action_unlikely_intent(states), max_history)`` (the filter only when asked),
    reading only the states it keeps and those it drops after the first kept one."""
    if not ignore_action_unlikely_intent:
        return list(states[-max_history:])
    kept: List[State] = []
    for state in reversed(states):
        if not _is_prev_action_unlikely_intent_in_state(state):
            kept.append(state)
            if len(kept) == max_history:
                break
    kept.reverse()
    return kept


def prediction_states(
    self: MaxHistoryTrackerFeaturizer,
    trackers: List[DialogueStateTracker],
    domain: Domain,
    use_text_for_last_user_input: bool = False,
    ignore_rule_only_turns: bool = False,
    rule_only_data: Optional[Dict[Text, Any]] = None,
    ignore_action_unlikely_intent: bool = False,
) -> List[List[State]]:
    """Rasa's ``MaxHistoryTrackerFeaturizer.prediction_states``, copying only the states it keeps."""
    arguments = (use_text_for_last_user_input, ignore_rule_only_turns, rule_only_data, ignore_action_unlikely_intent)
    if type(self) is not MaxHistoryTrackerFeaturizer or not self.max_history:
        return _rasas(self, trackers, domain, *arguments)
    trackers_as_states = []
    for tracker in trackers:
        shared_past_states = getattr(tracker, "shared_past_states", None)
        shared = (
            shared_past_states(domain, ignore_rule_only_turns=ignore_rule_only_turns, rule_only_data=rule_only_data)
            if shared_past_states is not None
            else None
        )
        if shared is None:
            return _rasas(self, trackers, domain, *arguments)
        kept = last_kept(shared, self.max_history, ignore_action_unlikely_intent)
        trackers_as_states.append(copy_states(kept))
    self._choose_last_user_input(trackers_as_states, use_text_for_last_user_input)
    return trackers_as_states


def install() -> None:
    """MaxHistoryTrackerFeaturizer copies only the states it keeps from trackers that share theirs (idempotent)."""
    MaxHistoryTrackerFeaturizer.prediction_states = prediction_states  # type: ignore[method-assign]


def uninstall() -> None:
    """Rasa's own ``prediction_states`` again (tests)."""
    MaxHistoryTrackerFeaturizer.prediction_states = _rasas  # type: ignore[method-assign]
