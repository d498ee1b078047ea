"""Round-trip check: every written file is loaded with Rasa's own loader and compared.

Same number of examples, same texts and intents, entity spans that cover exactly their
surface text with the expected canonical value, the same synonyms and lookup tables.
Any difference raises :class:`VerificationError`; it runs after every conversion.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from nlu_bert.converters.base import ConversionError, Example


class VerificationError(ConversionError):
    """What Rasa read back differs from what the converter wrote."""


_NOT_ABOUT_DATA = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_Key = Tuple[str, str, Tuple[Tuple[int, int, str, str, str], ...]]


def _key(text: str, intent: str, entities: Sequence[Tuple[int, int, str, str]]) -> _Key:
    return text, intent, tuple(sorted((s, e, name, value, text[s:e]) for s, e, name, value in entities))


def compare(expected: Sequence[Example], loaded: Sequence[Any]) -> List[str]:
    """Differences between our examples and Rasa ``Message`` objects (empty list: identical)."""
    problems: List[str] = []
    if len(loaded) != len(expected):
        problems.append(f"{len(expected)} examples written but {len(loaded)} read back")
    ours = Counter(_key(e.text, e.intent, e.entities) for e in expected)
    theirs: Counter = Counter()
    for message in loaded:
        text = message.get("text") or ""
        entities = [(x["start"], x["end"], x["entity"], x["value"]) for x in message.get("entities") or []]
        for start, end, name, _value in entities:
            if not text[start:end].strip():
                problems.append(f"entity {name} of {text!r} covers {text[start:end]!r}")
        theirs[_key(text, message.get("intent") or "", entities)] += 1
    for key in list((ours - theirs).keys())[:5]:
        problems.append(f"written but not read back: {key[0]!r} ({key[1]}) entities {list(key[2])}")
    for key in list((theirs - ours).keys())[:5]:
        problems.append(f"read back but not written: {key[0]!r} ({key[1]}) entities {list(key[2])}")
    return problems


def verify_files(
    paths: Mapping[str, Path],
    splits: Mapping[str, Sequence[Example]],
    synonyms: Mapping[str, str],
    lookups: Mapping[str, Sequence[str]],
) -> List[str]:
    """Load each written file with Rasa and compare; returns Rasa's warnings, raises on any difference."""
    import rasa.shared.nlu.training_data.formats  # noqa: F401  (import-time warnings are not about the data)
    from rasa.shared.nlu.training_data.loading import load_data

    rasa_warnings: List[str] = []
    first = next(iter(paths), None)
    for split, path in paths.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = load_data(str(path))
        rasa_warnings.extend(f"{path.name}: {w.message}" for w in caught if not issubclass(w.category, _NOT_ABOUT_DATA))
        problems = compare(splits[split], data.training_examples)
        if split == first:
            problems.extend(_compare_extras(data, synonyms, lookups))
        if problems:
            listed = "\n  ".join(problems)
            raise VerificationError(
                f"Rasa's loader read {path} differently from what was written:\n  {listed}\n"
                "This is a bug in the converter; please report it with the input row."
            )
    return rasa_warnings


def _compare_extras(data: Any, synonyms: Mapping[str, str], lookups: Mapping[str, Sequence[str]]) -> List[str]:
    problems: List[str] = []
    loaded_synonyms: Dict[str, str] = data.entity_synonyms
    wrong = [s for s, canonical in synonyms.items() if loaded_synonyms.get(s) != canonical]
    if wrong:
        problems.append(f"{len(wrong)} synonyms differ, e.g. {wrong[0]!r}")
    loaded_lookups = {table["name"]: table["elements"] for table in data.lookup_tables}
    for name, entries in lookups.items():
        if loaded_lookups.get(name) != list(entries):
            problems.append(
                f"lookup table {name!r}: {len(entries)} entries written, "
                f"{len(loaded_lookups.get(name) or [])} read back"
            )
    return problems
