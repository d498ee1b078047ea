"""The sample assistant's own NLU component: a message without words is not understood.

Emoji or punctuation alone (😀, ！！！, 。。。) carry no intent the shop could act on; classifiers trained on
short answers such as 好的 may still read them as ``affirm``, and a rule would then act on them as a yes
(claim the coupons just listed). Last in the pipeline (config.yml, config.offline.yml), this component sets
such messages to ``nlu_fallback`` with confidence 1.0, so the bot asks the customer to say it in words.
"""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message


def has_words(text: Text) -> bool:
    """True when the text has a letter, a digit or a CJK character (str.isalnum covers all three)."""
    return any(ch.isalnum() for ch in text)


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class WordlessMessageFallback(GraphComponent):
    """Sets ``nlu_fallback`` on messages with no letter, digit or CJK character."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {}

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "WordlessMessageFallback":
        return cls()

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            if not text.strip() or has_words(text):
                continue  # empty messages never reach the dialogue (RequestGuard); words go on as classified
            fallback = {INTENT_NAME_KEY: DEFAULT_NLU_FALLBACK_INTENT_NAME, PREDICTED_CONFIDENCE_KEY: 1.0}
            ranking = [
                r for r in message.get(INTENT_RANKING_KEY) or [] if r.get(INTENT_NAME_KEY) != fallback[INTENT_NAME_KEY]
            ]
            message.set(INTENT, fallback, add_to_output=True)
            message.set(INTENT_RANKING_KEY, [fallback, *ranking], add_to_output=True)
        return messages
