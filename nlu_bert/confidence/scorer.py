"""What the intent classifier does with its logits at predict time, whichever backend computed them: the stored
temperature, the out-of-scope factor and the no-content rule. Archives without these settings (trained before
them, or by a bot too small to fit them) are served as before: temperature 1, no factor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy.special import softmax

from nlu_bert.confidence import content, out_of_scope

META_KEY = "confidence"  # the settings' key in the component's meta.json


@dataclass
class Confidences:
    probabilities: np.ndarray  # calibrated softmax over the intents, each row sums to 1
    in_scope: np.ndarray  # per message, in [0, 1]: the out-of-scope factor (0 for a message without content)

    @property
    def scaled(self) -> np.ndarray:
        """What the intents' confidences are: probability × in-scope factor."""
        return self.probabilities * self.in_scope[:, None]


@dataclass
class ConfidenceModel:
    temperature: float = 1.0
    energy_reference: List[float] = field(default_factory=list)  # empty: no out-of-scope factor
    no_content_rule: bool = True

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], no_content_rule: bool = True) -> "ConfidenceModel":
        stored: Optional[Mapping[str, Any]] = meta.get(META_KEY)
        if not isinstance(stored, Mapping):
            return cls(no_content_rule=no_content_rule)
        return cls(
            temperature=float(stored.get("temperature") or 1.0),
            energy_reference=[float(x) for x in stored.get("energy_reference") or []],
            no_content_rule=no_content_rule,
        )

    def to_meta(self) -> Dict[str, Any]:
        return {
            "temperature": round(self.temperature, 6),
            "energy_reference": [round(x, 6) for x in self.energy_reference],
        }

    def __call__(self, logits: np.ndarray, texts: Sequence[str]) -> Confidences:
        logits = np.asarray(logits, dtype=np.float64)
        probabilities = softmax(logits / self.temperature, axis=-1)
        factor = out_of_scope.in_scope_factor(out_of_scope.energy(logits, self.temperature), self.energy_reference)
        if self.no_content_rule:
            factor = np.where([content.has_content(t) for t in texts], factor, 0.0)
        return Confidences(probabilities, factor)
