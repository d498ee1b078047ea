"""SMP2019-ECDT task 1: ``domain.intent`` labels, slots → entities, ``dic/`` → lookup tables.

Inputs: the official ``train.json`` (a list of ``{"text", "domain", "intent", "slots"}``),
optionally with split files in the CAISandSMP shape (``{"text", "entities", "intent"}``,
named ``train/dev/test.json``), or a folder holding both. Given split files only, the
official ``train.json`` one folder up is used (as in the shared copy's ``raw/``). Intent = ``domain.intent``.
Slot values have no offsets: each is placed at its first occurrence that does not
overlap a longer value. When split files are given they only decide which split each
official example goes to (their own spans are off for a few rows); entities always
come from the official slots. Dictionaries in a ``dic/`` folder next to ``train.json``
become lookup tables (not official: compiled by a participant).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nlu_bert.converters.base import (
    BadRows,
    ConversionError,
    Example,
    ReadOptions,
    SourceData,
    canonical_split,
    expand_inputs,
    locate_entities,
    read_lookup_files,
    read_text,
)
from nlu_bert.converters.records import iter_json_records


def slots_of(record: Dict[str, object]) -> List[Tuple[str, str]]:
    """``{"name": "uc"}`` → ``[("name", "uc")]``; a list value gives one slot per item."""
    slots = record.get("slots") or {}
    if not isinstance(slots, dict):
        raise ValueError(f"'slots' should be an object of slot → value, got {type(slots).__name__}")
    pairs: List[Tuple[str, str]] = []
    for name, value in slots.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((str(name), str(item)))
    return pairs


def official_example(record: Dict[str, object], where: str, source: SourceData) -> Example:
    """One official record → example; a slot value missing from the text is a malformed row."""
    text = record.get("text")
    if not isinstance(text, str) or not record.get("domain") or not record.get("intent"):
        raise ValueError("expected 'text', 'domain' and 'intent' strings")
    entities, missed = locate_entities(text, slots_of(record))
    for entity, value, reason in missed:
        if reason == "value not in text":
            raise ValueError(f"slot {entity!r} = {value!r} does not occur in the text {text!r}")
        source.dropped_entities[reason] += 1
    return Example(text=text, intent=f"{record['domain']}.{record['intent']}", entities=tuple(entities), source=where)


def _official_beside(split_files: Sequence[Path]) -> Optional[Path]:
    """The official train.json one folder up from the CAISandSMP split files (``raw/`` in the shared copy)."""
    for path in split_files:
        candidate = path.parent.parent / "train.json"
        if candidate.is_file() and candidate not in split_files:
            return candidate
    return None


def read_smp2019(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    official: List[Example] = []
    split_of: Dict[str, str] = {}
    split_files: List[Path] = []
    lookup_dirs: List[Path] = []
    pending = expand_inputs(inputs, "*.json")
    while pending:
        path = pending.pop(0)
        records = list(iter_json_records(read_text(path, options.encoding), str(path)))
        is_official = bool(records) and isinstance(records[0][2], dict) and "domain" in records[0][2]
        split = canonical_split(path.stem)
        if not is_official and split is None:
            raise ConversionError(f"{path}: a split file must be named train.json, dev.json or test.json.")
        for _, number, record in records:
            where = f"{path}:{number}"
            if not isinstance(record, dict):
                bad(where, f"expected a JSON object, got {type(record).__name__}", "not an object")
            elif not is_official:
                split_of[str(record.get("text", ""))] = split or "train"
            else:
                source.rows_read += 1
                try:
                    official.append(official_example(record, where, source))
                except ValueError as problem:
                    bad(where, str(problem), "bad slots" if "slot" in str(problem) else "missing fields")
        if is_official and (path.parent / "dic").is_dir():
            lookup_dirs.append(path.parent / "dic")
        if not is_official:
            split_files.append(path)
        beside = None if pending or official else _official_beside(split_files)
        if beside is not None:
            source.notes.append(f"domains and slots read from {beside} (the split files have neither)")
            pending.append(beside)
    if not official:
        raise ConversionError(
            "smp2019: no official records (with 'domain') among the inputs; the CAISandSMP split files have no "
            "domain, so pass the official train.json too."
        )
    if split_of:
        missing = [e for e in official if e.text not in split_of]
        if missing:
            source.dropped["not in any of the split files"] += len(missing)
        official = [replace(e, split=split_of[e.text]) for e in official if e.text in split_of]
        unknown = len(set(split_of) - {e.text for e in official})
        if unknown:
            source.notes.append(f"{unknown} texts of the split files are not in the official data and were ignored")
    source.examples = official
    if options.lookups and lookup_dirs:
        source.lookups = read_lookup_files(lookup_dirs, options.encoding)
        source.notes.append("lookup tables from dic/ (compiled by a participant, not official)")
    return source
