"""TEDPolicy is not run for an action that RulePolicy's prediction wins whatever TED would say.

Rasa 3.6 runs every policy for every action it predicts and then picks one prediction
(``DefaultPolicyPredictionEnsemble``): "no user" predictions first, then end-to-end ones, then the highest
confidence, ties going to the higher priority. When a rule applies, RulePolicy predicts its action at confidence
1.0 with priority 6; TEDPolicy's confidences (``softmax``, or cosine similarities for ``auto``) are at most 1.0 and
its priority is 1, so its prediction cannot be picked, yet it costs the most of all policies (``docs/deploy.md``).

``install()`` (the RequestGuard calls it before Rasa loads the model, whose graph nodes keep the methods they
find) makes RulePolicy leave its prediction on the tracker it predicted for, and TEDPolicy, when it runs after
RulePolicy on the same tracker in the same state (the graph runs RulePolicy first), answer with its "no
prediction" (all confidences 0, as an untrained TED answers) if all of these hold:

- RulePolicy's prediction has a confidence of 1.0 and a higher priority than TED's;
- TED cannot make an end-to-end prediction (it was not trained on story texts), or RulePolicy's prediction is an
  end-to-end or a "no user" one (either way TED's would be left out before confidences are compared);
- TED's ``model_confidence`` is ``softmax`` or ``auto`` (at most 1.0);
- the last action was not rejected (Rasa then sets the rejected action's confidence to 0 in every prediction, and
  TED's could win).

Then the ensemble picks RulePolicy's prediction, as it would have, with the same events. In any other case, and
when TED runs before RulePolicy, TED runs as Rasa has it; subclasses (UnexpecTEDIntentPolicy) are Rasa's.
``tests/test_rule_first.py`` compares the predictions the ensemble picks with and without it on the sample
assistant's stories, rules and random conversations.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from rasa.core.policies.policy import PolicyPrediction
from rasa.core.policies.rule_policy import RulePolicy
from rasa.core.policies.ted_policy import TEDPolicy
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, ActionExecutionRejected
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import TEXT
from rasa.utils.tensorflow.constants import AUTO, MODEL_CONFIDENCE, SOFTMAX

_rasas_rule = RulePolicy.predict_action_probabilities
_rasas_ted = TEDPolicy.predict_action_probabilities
_LEFT = "_nlu_bert_rule_prediction"


def _state_key(tracker: DialogueStateTracker, domain: Domain) -> Tuple[int, int, int]:
    events = tracker.events
    return len(events), id(events[-1]) if events else 0, id(domain)


def rule_predict(self: RulePolicy, tracker: DialogueStateTracker, domain: Domain, **kwargs: Any) -> PolicyPrediction:
    """Rasa's ``RulePolicy.predict_action_probabilities``, its prediction left on the tracker."""
    prediction = _rasas_rule(self, tracker, domain, **kwargs)
    if type(self) is RulePolicy:
        tracker.__dict__[_LEFT] = (_state_key(tracker, domain), prediction)
    return prediction


def rule_wins(ted: TEDPolicy, tracker: DialogueStateTracker, domain: Domain) -> bool:
    """Whether the prediction RulePolicy left on ``tracker`` (in its present state) is picked whatever TED says."""
    left: Optional[Tuple[Any, PolicyPrediction]] = tracker.__dict__.get(_LEFT)
    if left is None or left[0] != _state_key(tracker, domain):
        return False
    rule = left[1]
    if rule.max_confidence < 1.0 or rule.policy_priority <= ted.priority:
        return False
    ted_may_be_e2e = ted.only_e2e or TEXT in ted.fake_features
    if ted_may_be_e2e and not (rule.is_end_to_end_prediction or rule.is_no_user_prediction):
        return False
    if ted.config.get(MODEL_CONFIDENCE) not in (SOFTMAX, AUTO):  # AUTO: cosine similarities (margin loss)
        return False
    last_action = next(
        (e for e in reversed(tracker.events) if isinstance(e, (ActionExecutionRejected, ActionExecuted))), None
    )
    return not isinstance(last_action, ActionExecutionRejected)


def ted_predict(self: TEDPolicy, tracker: DialogueStateTracker, domain: Domain, **kwargs: Any) -> PolicyPrediction:
    """Rasa's ``TEDPolicy.predict_action_probabilities``, or its "no prediction" when RulePolicy's wins anyway."""
    if type(self) is TEDPolicy and self.model is not None and rule_wins(self, tracker, domain):
        return self._prediction(self._default_predictions(domain))
    return _rasas_ted(self, tracker, domain, **kwargs)


def install() -> None:
    """TEDPolicy is not run where RulePolicy's prediction wins anyway (idempotent)."""
    RulePolicy.predict_action_probabilities = rule_predict  # type: ignore[method-assign]
    TEDPolicy.predict_action_probabilities = ted_predict  # type: ignore[method-assign]


def uninstall() -> None:
    """Rasa's own predictions again (tests)."""
    RulePolicy.predict_action_probabilities = _rasas_rule  # type: ignore[method-assign]
    TEDPolicy.predict_action_probabilities = _rasas_ted  # type: ignore[method-assign]
