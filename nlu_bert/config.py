"""Config validation with messages that say what to change.

Every message names the component, the key, the value received and what is allowed, and ends
with where to change it, e.g.
``BertIntentClassifier: `epochs` must be an integer ≥ 1, got 0. Set `epochs` in config.yml.``
"""
from __future__ import annotations

import difflib
import json
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence

from rasa.shared.exceptions import InvalidConfigException

# Keys Rasa itself may add to a component's config (``rasa train --finetune``).
RASA_INJECTED_KEYS = frozenset({"finetuning_epoch_fraction"})


class DefaultsBlock(Mapping[str, Any]):
    """The defaults of a nested config block, e.g. ``inference: {backend: ..., precision: ...}``.

    Rasa 3.6 merges config.yml into every default that is a ``dict`` with ``dict.update``
    (``rasa.utils.common.override_defaults``), so ``inference: torch`` stopped ``rasa train`` inside
    Rasa with ``ValueError: dictionary update sequence element #0 has length 1``, before the
    component could say what to change. Rasa hands a block that is a Mapping but not a dict over as
    config.yml wrote it; the component then fills it in with :func:`merge_blocks` and validates it.
    """

    def __init__(self, **values: Any) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"DefaultsBlock({self._values!r})"

    def fingerprint(self) -> str:
        """Rasa's training cache key for this block (``deep_container_fingerprint`` calls it)."""
        return json.dumps(self._values, sort_keys=True, default=str)


def merge_blocks(defaults: Mapping[str, Any], config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` over ``defaults``; a :class:`DefaultsBlock` is filled in key by key where config.yml
    gives a mapping, and kept as written otherwise (for validation to report)."""
    merged = {**defaults, **config}
    for key, block in defaults.items():
        if isinstance(block, DefaultsBlock):
            given = config.get(key, {})
            merged[key] = {**block, **given} if isinstance(given, Mapping) else given
    return merged


class ConfigChecker:
    def __init__(self, component: str, config: Dict[str, Any]) -> None:
        self.component = component
        self.config = config

    def fail(self, key: str, requirement: str) -> None:
        value = self.config.get(key)
        raise InvalidConfigException(
            f"{self.component}: `{key}` {requirement}, got {value!r}. Set `{key}` in config.yml."
        )

    def known_keys(self, defaults: Iterable[str], prefix: str = "") -> None:
        """Unknown keys are errors with a did-you-mean; ``prefix`` names a nested block (``inference.``)."""
        allowed = set(defaults) | (set() if prefix else RASA_INJECTED_KEYS)
        unknown = sorted(str(k) for k in self.config if k not in allowed)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" Did you mean `{prefix}{close[0]}`?" if close else ""
            raise InvalidConfigException(
                f"{self.component}: unknown config key `{prefix}{key}`.{hint} "
                f"Allowed keys: {', '.join(prefix + k for k in sorted(set(defaults)))}."
            )

    def integer(self, key: str, minimum: int, maximum: Optional[int] = None) -> None:
        value = self.config.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        ok = ok and (maximum is None or value <= maximum)
        if not ok:
            bound = f"≥ {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            self.fail(key, f"must be an integer {bound}")

    def number(self, key: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
        value = self.config.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            left, right = ("(" if low_open else "["), (")" if high_open else "]")
            self.fail(key, f"must be a number in {left}{low:g}, {high:g}{right}")

    def positive_or_auto(self, key: str) -> None:
        value = self.config.get(key)
        if value == "auto":
            return
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            self.fail(key, "must be `auto` or a number > 0")

    def choice(self, key: str, allowed: Sequence[Any]) -> None:
        if self.config.get(key) not in allowed:
            self.fail(key, "must be one of " + ", ".join(str(a) for a in allowed))

    def text(self, key: str, *, optional: bool = False) -> None:
        value = self.config.get(key)
        if optional and value is None:
            return
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "must be a non-empty string" + (" or null" if optional else ""))

    def boolean(self, key: str) -> None:
        if not isinstance(self.config.get(key), bool):
            self.fail(key, "must be true or false")
