"""The config vocabulary of both components, and validation with messages that say what to change.

* Defaults live in each component's ``get_default_config()``; a nested block (``inference:``) is a
  :class:`DefaultsBlock`, filled in key by key by :func:`merge_blocks`.
* Old key names are accepted for one release (:func:`rename_old_keys`): a deprecation warning names the new key.
* Unknown keys are refused with a "did you mean" that also knows the names Rasa's own components use for the same
  job (:data:`RASA_NAMES`).
* Every message names the component, the key, the value received and what is allowed, and ends with where to
  change it, e.g. ``BertIntentClassifier: `epochs` must be an integer ≥ 1, got 0. Set `epochs` in config.yml.``
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence

import rasa.shared.utils.io
from rasa.shared.exceptions import InvalidConfigException

# Keys Rasa itself may add to a component's config (``rasa train --finetune``).
RASA_INJECTED_KEYS = frozenset({"finetuning_epoch_fraction"})
# Old names are accepted until this release, with a warning.
OLD_NAMES_REMOVED_IN = "nlu-bert 0.4.0"
# What Rasa's own components call the settings nlu-bert has under another name: an unknown key from this table
# gets "did you mean" the nlu-bert key (where the component has it).
RASA_NAMES = {
    "transformer_size": ("scratch_hidden_size", "DIETClassifier"),
    "number_of_transformer_layers": ("scratch_num_layers", "DIETClassifier"),
    "number_of_attention_heads": ("scratch_num_heads", "DIETClassifier"),
    "use_masked_language_model": ("scratch_mlm_epochs", "DIETClassifier"),
    "evaluate_on_number_of_examples": ("validation_split", "DIETClassifier"),
    "model_weights": ("model", "LanguageModelFeaturizer"),
    "model_name": ("model", "LanguageModelFeaturizer"),
}
# Other common names too far from nlu-bert's for difflib to match.
OTHER_NAMES = {"seed": "random_seed"}


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


def rename_old_keys(
    component: str,
    config: Mapping[str, Any],
    defaults: Mapping[str, Any],
    old_names: Mapping[str, str],
    old_values: Optional[Mapping[str, Any]] = None,
    warn: bool = True,
) -> Dict[str, Any]:
    """``config`` with every old key of ``old_names`` (old -> new; ``block.key`` for a key of a nested block) moved to
    its new name, and every ``old_values`` entry (key -> (old value, new value)) replaced, each with a deprecation
    warning naming the new key or value. Rasa hands components their defaults merged with config.yml, so a new
    key that still holds its default counts as not given; both names with different values are an error."""
    config = dict(config)
    for old, new in old_names.items():
        if old not in config:
            continue
        value = config.pop(old)
        block, _, key = new.rpartition(".")
        if block:
            given = config.get(block)
            target = dict(given) if isinstance(given, Mapping) and not isinstance(given, DefaultsBlock) else {}
            default = defaults[block][key]
        else:
            target, key, default = config, new, defaults.get(new)
        if key in target and target[key] != default and target[key] != value:
            raise InvalidConfigException(
                f"{component}: both `{old}` and `{new}` are set (to {value!r} and {target[key]!r}); `{old}` is the "
                f"old name of `{new}`. Remove `{old}` from config.yml."
            )
        target[key] = value
        if block:
            config[block] = target
        if warn:
            rasa.shared.utils.io.raise_deprecation_warning(
                f"{component}: `{old}` is the old name of `{new}`; rename it in config.yml.",
                warn_until_version=OLD_NAMES_REMOVED_IN,
            )
    for key, (old_value, new_value) in (old_values or {}).items():
        if key in config and config[key] is old_value:
            config[key] = new_value
            if warn:
                rasa.shared.utils.io.raise_deprecation_warning(
                    f"{component}: `{key}: {_yaml(old_value)}` is the old spelling of `{key}: {_yaml(new_value)}`; "
                    "change it in config.yml.",
                    warn_until_version=OLD_NAMES_REMOVED_IN,
                )
    return config


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


INFERENCE_KEYS = ("backend", "precision", "threads", "spinning")


class ConfigChecker:
    """Checks of one component's config (or of a nested block: ``prefix`` is then e.g. ``inference.``)."""

    def __init__(self, component: str, config: Mapping[str, Any], prefix: str = "") -> None:
        self.component = component
        self.config = config
        self.prefix = prefix

    def fail(self, key: str, requirement: str) -> None:
        value = self.config.get(key)
        key = self.prefix + key
        raise InvalidConfigException(
            f"{self.component}: `{key}` {requirement}, got {value!r}. Set `{key}` in config.yml."
        )

    def known_keys(self, defaults: Iterable[str]) -> None:
        """Unknown keys are errors with a did-you-mean (that also knows Rasa's names for nlu-bert's keys)."""
        prefix = self.prefix
        allowed = set(defaults) | (set() if prefix else RASA_INJECTED_KEYS)
        unknown = sorted(str(k) for k in self.config if k not in allowed)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            rasa_name, rasa_component = RASA_NAMES.get(key, (None, None))
            if not prefix and rasa_name in allowed:
                hint = f" Did you mean `{rasa_name}` (Rasa's {rasa_component} calls it `{key}`)?"
            elif not prefix and OTHER_NAMES.get(key) in allowed:
                hint = f" Did you mean `{OTHER_NAMES[key]}`?"
            else:
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

    def scratch_sizes(self) -> None:
        """The ``scratch_*`` backbone sizes, the same rules for both components."""
        self.integer("scratch_hidden_size", 8)
        self.integer("scratch_num_layers", 1, 24)
        self.integer("scratch_num_heads", 1)
        heads = self.config["scratch_num_heads"]
        if self.config["scratch_hidden_size"] % heads:
            self.fail("scratch_hidden_size", f"must be a multiple of `scratch_num_heads` ({heads})")

    def inference_block(self) -> Mapping[str, Any]:
        """The ``inference:`` block: a mapping of the shared keys, ``threads`` and ``spinning`` checked (each
        component checks ``backend`` and ``precision``, which it knows)."""
        inference = self.config.get("inference")
        if not isinstance(inference, Mapping):
            keys = ", ".join(f"`{k}`" for k in INFERENCE_KEYS)
            self.fail("inference", f"must be a mapping of {keys}, e.g. `inference: {{backend: torch}}`")
        block = ConfigChecker(self.component, inference, prefix="inference.")
        block.known_keys(INFERENCE_KEYS)
        block.boolean("spinning")
        threads = inference["threads"]
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            block.fail("threads", "must be an integer >= 0 (0 = all cores)")
        return inference
