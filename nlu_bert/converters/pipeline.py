"""The steps every format shares: clean, rename, dedup, split, cap, and count what happened.

``build_dataset(source, options)`` is a pure function of the reader's output and the
options; the order of its steps is the order of the sections below.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from nlu_bert import splits
from nlu_bert.converters.base import (
    SPLITS,
    ConversionError,
    Dataset,
    Entity,
    Example,
    Report,
    SourceData,
    decode_bytes,
    normalise_name,
)
from nlu_bert.converters.yaml_writer import escape_for_rasa


@dataclass(frozen=True)
class BuildOptions:
    test_fraction: Optional[float] = None  # re-split everything, stratified by intent (ignores official splits)
    seed: int = 42  # seed of the split and of --max-per-intent sampling
    min_per_intent: int = 0  # drop intents with fewer training examples than this
    max_per_intent: Optional[int] = None  # keep at most this many training examples per intent
    label_map: Mapping[str, Optional[str]] = field(default_factory=dict)  # raw label → new label (None/"" drops)
    drop_conflicts: bool = False  # drop texts that appear under more than one intent


# ---------------------------------------------------------------- text clean-up

_NEEDS_CLEANING = re.compile(r"^\s|\s$|[^\S ]| {2}|[\x00-\x1f\x7f-\x9f\ufeff\ud800-\udfff\ufffe\uffff]")


def clean_text(text: str) -> Tuple[str, List[int]]:
    """Whitespace runs (tabs, U+2028, U+3000, …) → one space, control characters and BOMs
    removed, ends stripped. Returns the new text and, per old index, the new index (-1: gone)."""
    out: List[str] = []
    where: List[int] = []
    for char in text:
        if char.isspace():
            if out and out[-1] != " ":
                out.append(" ")
                where.append(len(out) - 1)
            else:
                where.append(-1)
        elif char < " " or "\x7f" <= char <= "\x9f" or char in "\ufeff\ufffe\uffff" or "\ud800" <= char <= "\udfff":
            where.append(-1)
        else:
            out.append(char)
            where.append(len(out) - 1)
    if out and out[-1] == " ":
        out.pop()
    where = [i if i < len(out) else -1 for i in where]
    return "".join(out), where


def clean_example(example: Example) -> Tuple[Example, int]:
    """The example with a clean text and entities moved along; also how many entities vanished."""
    if not _NEEDS_CLEANING.search(example.text) and not any(_NEEDS_CLEANING.search(e.value) for e in example.entities):
        return example, 0
    text, where = clean_text(example.text)
    entities: List[Entity] = []
    for entity in example.entities:
        kept = [where[i] for i in range(entity.start, entity.end) if where[i] >= 0 and text[where[i]] != " "]
        if not kept:
            continue
        start, end = kept[0], kept[-1] + 1
        surface = example.text[entity.start : entity.end]
        value = text[start:end] if entity.value == surface else clean_text(entity.value)[0]
        entities.append(Entity(start, end, entity.entity, value or text[start:end]))
    return replace(example, text=text, entities=tuple(entities)), len(example.entities) - len(entities)


def _valid_entities(example: Example, dropped: Counter) -> Example:
    kept: List[Entity] = []
    for entity in sorted(example.entities):
        if not 0 <= entity.start < entity.end <= len(example.text):
            dropped["span outside the text"] += 1
        elif kept and entity.start < kept[-1].end:
            dropped["overlaps another entity"] += 1
        else:
            kept.append(entity)
    return example if len(kept) == len(example.entities) else replace(example, entities=tuple(kept))


# ---------------------------------------------------------------- names


def load_label_map(path: Path) -> Dict[str, Optional[str]]:
    """A JSON object ``{"raw": "new"}`` or a two-column csv/tsv (no header); an empty/null target drops the label."""
    text = decode_bytes(path.read_bytes(), str(path)) if path.is_file() else None
    if text is None:
        raise ConversionError(f"--label-map {path}: no such file.")
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConversionError(
                f"{path}:{error.lineno}: not valid JSON ({error.msg}); --label-map wants an object."
            ) from None
        if not isinstance(mapping, dict) or not all(isinstance(v, (str, type(None))) for v in mapping.values()):
            raise ConversionError(f"{path}: --label-map wants a JSON object of label → new label (string or null).")
        return mapping
    result: Dict[str, Optional[str]] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split(",")
        if len(parts) != 2:
            raise ConversionError(f"{path}:{number}: expected two columns 'label,new_label', got {line!r}.")
        result[parts[0].strip()] = parts[1].strip() or None
    return result


def _rename(names: Sequence[str], kind: str) -> Dict[str, str]:
    """raw → Rasa-safe name; two raw names that collide are an error."""
    mapping = {name: normalise_name(name) for name in dict.fromkeys(names)}
    by_new: Dict[str, List[str]] = defaultdict(list)
    for raw, new in mapping.items():
        by_new[new].append(raw)
    for new, raws in by_new.items():
        if not new:
            raise ConversionError(f"{kind} {raws[0]!r} has no letters or digits; give it a name with --label-map.")
        if len(raws) > 1:
            raise ConversionError(
                f"{kind}s {', '.join(repr(r) for r in raws)} would all become {new!r}; "
                "give them distinct names with --label-map."
            )
    return mapping


# ---------------------------------------------------------------- splitting


def stratified_split(examples: Sequence[Example], test_fraction: float, seed: int) -> List[Example]:
    """Every example with its split: the test examples by :func:`nlu_bert.splits.stratified_split` (per intent,
    round(n × fraction), at most n - 2; intents with fewer than 3 examples stay in train)."""
    if not 0 < test_fraction < 1:
        raise ConversionError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}.")
    _, held_out = splits.stratified_split([e.intent for e in examples], test_fraction, seed)
    test = set(held_out)
    return [replace(e, split="test" if i in test else "train") for i, e in enumerate(examples)]


def _cap_and_floor(examples: List[Example], options: BuildOptions, dropped: Counter) -> List[Example]:
    train_counts = Counter(e.intent for e in examples if e.split == "train")
    if options.min_per_intent > 0:
        too_small = {i for i in {e.intent for e in examples} if train_counts[i] < options.min_per_intent}
        for example in examples:
            if example.intent in too_small:
                dropped[f"intent has fewer than {options.min_per_intent} training examples (--min-per-intent)"] += 1
        examples = [e for e in examples if e.intent not in too_small]
    if options.max_per_intent is not None:
        rng = random.Random(options.seed)
        keep: set = set()
        by_intent: Dict[str, List[int]] = defaultdict(list)
        for index, example in enumerate(examples):
            if example.split == "train":
                by_intent[example.intent].append(index)
        for intent in sorted(by_intent):
            indices = by_intent[intent]
            keep.update(rng.sample(indices, min(len(indices), options.max_per_intent)))
        over = sum(1 for i, e in enumerate(examples) if e.split == "train" and i not in keep)
        if over:
            dropped[f"over {options.max_per_intent} training examples per intent (--max-per-intent)"] += over
        examples = [e for i, e in enumerate(examples) if e.split != "train" or i in keep]
    return examples


# ---------------------------------------------------------------- the whole thing


def _relabel_and_clean(examples: Sequence[Example], options: BuildOptions, report: Report) -> List[Example]:
    """--label-map, then valid entity spans and clean text; empty texts and labels are dropped."""
    kept: List[Example] = []
    cleaned = 0
    for example in examples:
        label: Optional[str] = example.intent
        if label in options.label_map:
            label = options.label_map[label]
            if not label:
                report.dropped["label mapped to nothing by --label-map"] += 1
                continue
        relabelled = _valid_entities(
            example if label == example.intent else replace(example, intent=label), report.dropped_entities
        )
        new, lost = clean_example(relabelled)
        cleaned += new is not relabelled
        if lost:
            report.dropped_entities["entity empty after whitespace clean-up"] += lost
        if not new.text:
            report.dropped["empty text"] += 1
        elif not new.intent.strip():
            report.dropped["empty label"] += 1
        else:
            kept.append(new)
    if cleaned:
        report.notes.append(f"{cleaned} texts had whitespace or control characters normalised")
    return kept


def _safe_names(examples: Sequence[Example], report: Report) -> List[Example]:
    """Rasa-safe intent and entity names, and texts whose brackets Rasa reads back."""
    intents = _rename([e.intent for e in examples], "intent")
    entities = _rename([x.entity for e in examples for x in e.entities], "entity")
    report.renamed_intents = {raw: new for raw, new in intents.items() if raw != new}
    report.renamed_entities = {raw: new for raw, new in entities.items() if raw != new}
    escaped = 0
    renamed: List[Example] = []
    for example in examples:
        example = replace(
            example,
            intent=intents[example.intent],
            entities=tuple(Entity(x.start, x.end, entities[x.entity], x.value) for x in example.entities),
        )
        safe = escape_for_rasa(example)
        escaped += safe is not example
        renamed.append(safe)
    if escaped:
        report.notes.append(
            f"{escaped} texts had ASCII brackets that Rasa would read as entity markup: written as ［］｛｝"
        )
    return renamed


def _dedup(examples: Sequence[Example], report: Report) -> List[Example]:
    """One example per (split, text, intent): Rasa's loader would drop exact repeats anyway."""
    seen: set = set()
    kept: List[Example] = []
    for example in examples:
        key = (example.split, example.text, example.intent)
        if key in seen:
            report.dropped["duplicate (same text and intent in one split)"] += 1
        else:
            seen.add(key)
            kept.append(example)
    return kept


def _conflicts(examples: List[Example], options: BuildOptions, report: Report) -> List[Example]:
    """Report texts under several intents (over all splits); drop them with --drop-conflicts."""
    by_text: Dict[str, set] = defaultdict(set)
    for example in examples:
        by_text[example.text].add(example.intent)
    report.conflicts = {text: sorted(found) for text, found in by_text.items() if len(found) > 1}
    if not (options.drop_conflicts and report.conflicts):
        return examples
    kept = [e for e in examples if e.text not in report.conflicts]
    report.dropped["text under more than one intent (--drop-conflicts)"] += len(examples) - len(kept)
    return kept


def build_dataset(source: SourceData, options: BuildOptions = BuildOptions()) -> Dataset:
    """The reader's examples → cleaned, renamed, deduplicated, split and capped splits, with a report."""
    report = Report(
        rows_read=source.rows_read,
        dropped=Counter(source.dropped),
        dropped_entities=Counter(source.dropped_entities),
        notes=list(source.notes),
    )
    examples = _safe_names(_relabel_and_clean(source.examples, options, report), report)
    if options.test_fraction is not None:
        examples = [replace(e, split="train") for e in examples]  # official splits are pooled
    examples = _conflicts(_dedup(examples, report), options, report)
    if options.test_fraction is not None:
        examples = stratified_split(examples, options.test_fraction, options.seed)
    examples = _cap_and_floor(examples, options, report.dropped)

    splits = {name: [e for e in examples if e.split == name] for name in SPLITS}
    splits = {name: found for name, found in splits.items() if found}
    train_texts = {e.text for e in splits.get("train", [])}
    report.train_test_overlap = len({e.text for e in splits.get("test", []) if e.text in train_texts})
    return Dataset(
        splits=splits,
        synonyms=_synonyms(splits.get("train", []), report),
        lookups=_clean_lookups(source.lookups, report),
        report=report,
    )


def _synonyms(train: Sequence[Example], report: Report) -> Dict[str, str]:
    """surface → canonical from the training entities; a surface with two canonicals keeps the commoner one."""
    seen: Dict[str, Counter] = defaultdict(Counter)
    for example in train:
        for entity in example.entities:
            surface = example.text[entity.start : entity.end]
            if surface != entity.value:
                seen[surface][entity.value] += 1
    inconsistent = sum(1 for counts in seen.values() if len(counts) > 1)
    if inconsistent:
        report.notes.append(f"{inconsistent} surface forms map to several canonical values; the commonest is kept")
    return {surface: counts.most_common(1)[0][0] for surface, counts in sorted(seen.items())}


def _clean_lookups(lookups: Mapping[str, Sequence[str]], report: Report) -> Dict[str, List[str]]:
    tables: Dict[str, List[str]] = {}
    for name, entries in lookups.items():
        cleaned = [clean_text(entry)[0] for entry in entries]
        unique = list(dict.fromkeys(entry for entry in cleaned if entry))
        if len(unique) < len(entries):
            report.notes.append(f"lookup {name}: {len(entries) - len(unique)} empty or repeated entries dropped")
        if unique:
            tables[normalise_name(name)] = unique
    return tables
