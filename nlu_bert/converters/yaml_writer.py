"""Rasa 3.x NLU YAML (``version: "3.1"``) with inline entity annotations, synonyms and lookups.

Entities are written as ``[surface](entity)``, or ``[surface]{"entity": "e", "value": "canonical"}``
for a synonym. Rasa's YAML format has no escape for brackets, so a text whose own ``[ ]``
would be read as markup is written with full-width ``［ ］`` instead (``escape_for_rasa``);
every line is checked with Rasa's own entity parser before it is written.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from nlu_bert.converters.base import SPLITS, ConversionError, Dataset, Entity, Example

_FULL_WIDTH = str.maketrans("[]{}", "［］｛｝")


def annotate(example: Example) -> str:
    """The example's text with its entities in Rasa's inline syntax."""
    pieces: List[str] = []
    cursor = 0
    for entity in sorted(example.entities):
        surface = example.text[entity.start : entity.end]
        pieces.append(example.text[cursor : entity.start])
        if entity.value == surface:
            pieces.append(f"[{surface}]({entity.entity})")
        else:
            attributes = json.dumps({"entity": entity.entity, "value": entity.value}, ensure_ascii=False)
            pieces.append(f"[{surface}]{attributes}")
        cursor = entity.end
    pieces.append(example.text[cursor:])
    return "".join(pieces)


def reads_back(example: Example) -> bool:
    """True when Rasa's entity parser turns ``annotate(example)`` back into exactly this example."""
    from rasa.shared.nlu.training_data import entities_parser

    line = annotate(example)
    try:
        found = entities_parser.find_entities_in_training_example(line)
    except Exception:  # noqa: BLE001 - Rasa raises on a broken {...} dict; that means "does not read back"
        return False
    spans = sorted(Entity(e["start"], e["end"], e["entity"], e["value"]) for e in found)
    return entities_parser.replace_entities(line) == example.text and spans == sorted(example.entities)


def escape_for_rasa(example: Example) -> Example:
    """The example itself when Rasa reads it back as is; else with ``[]{}`` made full-width."""
    risky = (
        "[" in example.text or "]" in example.text or any("{" in e.value or "}" in e.value for e in example.entities)
    )
    if not risky or reads_back(example):
        return example
    escaped = replace(
        example,
        text=example.text.translate(_FULL_WIDTH),
        entities=tuple(e._replace(value=e.value.translate(_FULL_WIDTH)) for e in example.entities),
    )
    if not reads_back(escaped):
        raise ConversionError(
            f"{example.source}: Rasa cannot read {example.text!r} back from its inline entity syntax; edit that row."
        )
    return escaped


def _block(key: str, name: str, lines: Iterable[str]) -> str:
    body = "".join(f"    - {line}\n" for line in lines)
    return f"- {key}: {json.dumps(name, ensure_ascii=False)}\n  examples: |\n{body}"


def render_nlu(
    examples: Sequence[Example],
    synonyms: Optional[Mapping[str, str]] = None,
    lookups: Optional[Mapping[str, Sequence[str]]] = None,
) -> str:
    """One ``nlu:`` document: intents (sorted by name, examples in input order), then synonyms, then lookups."""
    synonyms = synonyms or {}
    lookups = lookups or {}
    by_intent: Dict[str, List[str]] = {}
    for example in examples:
        by_intent.setdefault(example.intent, []).append(annotate(example))
    parts = ['version: "3.1"\nnlu:\n']
    parts.extend(_block("intent", intent, by_intent[intent]) for intent in sorted(by_intent))
    by_canonical: Dict[str, List[str]] = {}
    for surface, canonical in synonyms.items():
        by_canonical.setdefault(canonical, []).append(surface)
    parts.extend(_block("synonym", canonical, by_canonical[canonical]) for canonical in sorted(by_canonical))
    parts.extend(_block("lookup", name, lookups[name]) for name in sorted(lookups))
    return "".join(parts)


def output_paths(out: Path, splits: Iterable[str]) -> Dict[str, Path]:
    """``OUT.yml`` → train in ``OUT.yml``, others in ``OUT.dev.yml`` / ``OUT.test.yml``;
    a folder ``OUT`` (no .yml/.yaml suffix) → ``OUT/train.yml``, ``OUT/dev.yml``, ``OUT/test.yml``."""
    if out.suffix.lower() in (".yml", ".yaml"):
        return {s: out if s == "train" else out.with_name(f"{out.stem}.{s}{out.suffix}") for s in splits}
    if out.exists() and not out.is_dir():
        raise ConversionError(f"-o {out}: is a file without a .yml suffix; name a .yml file or a folder.")
    return {s: out / f"{s}.yml" for s in splits}


def write_dataset(dataset: Dataset, out: Path) -> Dict[str, Path]:
    """Write one YAML file per split; synonyms and lookup tables go with the training file."""
    paths = output_paths(out, [s for s in SPLITS if s in dataset.splits])
    if not paths:
        raise ConversionError("no examples are left to write; see the dropped rows above.")
    first = next(iter(paths))
    for split, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = split == first
        path.write_text(
            render_nlu(dataset.splits[split], dataset.synonyms if extra else None, dataset.lookups if extra else None),
            encoding="utf-8",
        )
    return paths


def render_domain(dataset: Dataset) -> str:
    """A minimal domain.yml: the intents and entities of every split."""
    examples = [e for found in dataset.splits.values() for e in found]
    intents = sorted({e.intent for e in examples})
    entities = sorted({x.entity for e in examples for x in e.entities})
    lines = ['version: "3.1"', "intents:"] + [f"- {json.dumps(i, ensure_ascii=False)}" for i in intents]
    if entities:
        lines += ["entities:"] + [f"- {json.dumps(e, ensure_ascii=False)}" for e in entities]
    return "\n".join(lines) + "\n"
