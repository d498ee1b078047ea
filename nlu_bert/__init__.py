"""nlu-bert: Chinese NLU components for Rasa 3.6.

``config.yml`` names the components as ``nlu_bert.BertIntentClassifier`` and
``nlu_bert.GPT2FewShotIntentClassifier``. Rasa resolves those names with ``getattr`` on this
package, which imports the component module (and so registers it with Rasa's recipe) on first
use. torch and transformers are imported only when a component trains or loads.
"""

from __future__ import annotations

import importlib
from typing import Any

from nlu_bert.version import __version__

_COMPONENTS = {
    "BertIntentClassifier": "nlu_bert.classifiers.bert_intent_classifier",
    "GPT2FewShotIntentClassifier": "nlu_bert.classifiers.gpt2_fewshot_classifier",
}

__all__ = ["__version__", *_COMPONENTS]


def __getattr__(name: str) -> Any:
    if name in _COMPONENTS:
        return getattr(importlib.import_module(_COMPONENTS[name]), name)
    raise AttributeError(f"module 'nlu_bert' has no attribute '{name}'")
