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
answers None (its cache is off or failed).

RulePolicy keeps every state (no ``max_history``), then matches its rules against the states from the end, formats
all of them for a debug log and, when no rule applies, makes a key of all of them: each action predicted costs
more as the conversation grows. Yet a rule is only compared with as many states as it has (``_is_rule_applicable``
is true further back), and that key only matters if it is one of the rule sources not in stories
(``hide_rule_turn``), which have a known number of states. ``install()`` therefore also gives RulePolicy (the class
itself, with Rasa's featurizer) only the last ``rule_window`` states: one more than its longest rule and its
longest such source, so that the rules matched, the action predicted and ``hide_rule_turn`` are Rasa's, and only
the debug log shows fewer states. tests/test_states_window.py compares the policies' states and predictions with
and without it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Text

from rasa.core.featurizers.tracker_featurizers import (
    MaxHistoryTrackerFeaturizer,
    _is_prev_action_unlikely_intent_in_state,
)
from rasa.core.policies.policy import SupportedData
from rasa.core.policies.rule_policy import (
    RULES,
    RULES_FOR_LOOP_UNHAPPY_PATH,
    RULES_NOT_IN_STORIES,
    RulePolicy,
)
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_bert.tracker_states import copy_states

_rasas = MaxHistoryTrackerFeaturizer.prediction_states
_rasas_rule_states = RulePolicy._prediction_states


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
    windowed = window_states(self, self.max_history, trackers, domain, *arguments)
    return _rasas(self, trackers, domain, *arguments) if windowed is None else windowed


def window_states(
    featurizer: MaxHistoryTrackerFeaturizer,
    max_history: int,
    trackers: List[DialogueStateTracker],
    domain: Domain,
    use_text_for_last_user_input: bool,
    ignore_rule_only_turns: bool,
    rule_only_data: Optional[Dict[Text, Any]],
    ignore_action_unlikely_intent: bool,
) -> Optional[List[List[State]]]:
    """The featurizer's prediction states with ``max_history``, copied from the trackers' shared states; None if
    a tracker does not share them."""
    trackers_as_states = []
    for tracker in trackers:
        shared_past_states = getattr(tracker, "shared_past_states", None)
        shared = (
            shared_past_states(domain, ignore_rule_only_turns=ignore_rule_only_turns, rule_only_data=rule_only_data)
            if shared_past_states is not None
            else None
        )
        if shared is None:
            return None
        kept = last_kept(shared, max_history, ignore_action_unlikely_intent)
        trackers_as_states.append(copy_states(kept))
    featurizer._choose_last_user_input(trackers_as_states, use_text_for_last_user_input)
    return trackers_as_states


def rule_window(policy: RulePolicy) -> int:
    """One more state than the longest rule (happy and unhappy loop paths) and the longest rule source not in
    stories of this RulePolicy: further back, no state changes what it predicts."""
    lookup = policy.lookup
    key = (
        id(lookup),
        *(len(lookup.get(name, ())) for name in (RULES, RULES_FOR_LOOP_UNHAPPY_PATH, RULES_NOT_IN_STORIES)),
    )
    cached = policy.__dict__.get("_nlu_bert_rule_window")
    if cached is not None and cached[0] == key:
        return cached[1]
    sources = [*lookup.get(RULES, ()), *lookup.get(RULES_FOR_LOOP_UNHAPPY_PATH, ())]
    # the sources not in stories that are states (the others name default actions and loops)
    sources += [s for s in lookup.get(RULES_NOT_IN_STORIES, ()) if isinstance(s, str) and s.startswith("[")]
    window = 1 + max((len(json.loads(source)) for source in sources), default=0)
    policy.__dict__["_nlu_bert_rule_window"] = (key, window)
    return window


def rule_prediction_states(
    self: RulePolicy,
    tracker: DialogueStateTracker,
    domain: Domain,
    use_text_for_last_user_input: bool = False,
    rule_only_data: Optional[Dict[Text, Any]] = None,
) -> List[State]:
    """Rasa's ``RulePolicy._prediction_states``, the last ``rule_window`` of them for RulePolicy itself."""
    featurizer = self.featurizer
    if (
        type(self) is RulePolicy
        and type(featurizer) is MaxHistoryTrackerFeaturizer
        and featurizer.max_history is None
        and hasattr(tracker, "shared_past_states")  # not the trackers of training
    ):
        ml_only = self.supported_data() == SupportedData.ML_DATA  # as Rasa's: False for RulePolicy
        windowed = window_states(
            featurizer,
            rule_window(self),
            [tracker],
            domain,
            use_text_for_last_user_input,
            ml_only,
            rule_only_data,
            ml_only,
        )
        if windowed is not None:
            return windowed[0]
    return _rasas_rule_states(self, tracker, domain, use_text_for_last_user_input, rule_only_data)


def install() -> None:
    """MaxHistoryTrackerFeaturizer copies only the states it keeps from trackers that share theirs, RulePolicy reads
    only its window of them (idempotent)."""
    MaxHistoryTrackerFeaturizer.prediction_states = prediction_states  # type: ignore[method-assign]
    RulePolicy._prediction_states = rule_prediction_states  # type: ignore[method-assign]


def uninstall() -> None:
    """Rasa's own ``prediction_states`` again (tests)."""
    MaxHistoryTrackerFeaturizer.prediction_states = _rasas  # type: ignore[method-assign]
    RulePolicy._prediction_states = _rasas_rule_states  # type: ignore[method-assign]
