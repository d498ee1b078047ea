"""MASSIVE zh-CN (Amazon, CC BY 4.0).

Two shapes of jsonl are read, row by row:
  * the intent-only copy in few_shot_intent_sft (``{"text", "label", "split"}``, labels are
    machine-translated Chinese names; ``--label-map label_map_zh_to_massive_intent.json``
    gives the English MASSIVE names);
  * the official MASSIVE 1.x release (``{"locale", "partition", "intent", "utt",
    "annot_utt"}``): rows of other locales are skipped, ``annot_utt`` slots
    (``[time : 九点]``) become entities, found in ``utt`` by string search.
``validation`` → dev.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from nlu_bert.converters.base import (
    BadRows,
    ConversionError,
    Example,
    Fields,
    ReadOptions,
    SourceData,
    canonical_split,
    locate_entities,
    record_example,
    resolve_fields,
)
from nlu_bert.converters.records import json_rows

LOCALE = "zh-CN"
_SLOT = re.compile(r"\[\s*(?P<slot>[^\[\]:]+?)\s*:\s*(?P<value>[^\[\]]*?)\s*\]")


def official_example(row: Dict[str, Any], where: str, source: SourceData) -> Optional[Example]:
    """A row of the official release; None for another locale. Raises ValueError when malformed."""
    if row.get("locale", LOCALE) != LOCALE:
        source.dropped[f"locale is not {LOCALE}"] += 1
        return None
    text, intent = row.get("utt"), row.get("intent")
    split = canonical_split(str(row.get("partition", "train")))
    if not isinstance(text, str) or not isinstance(intent, str) or split is None:
        raise ValueError("expected 'utt' and 'intent' strings and a 'partition' of train, dev or test")
    slots = [(m.group("slot"), m.group("value")) for m in _SLOT.finditer(str(row.get("annot_utt") or ""))]
    entities, missed = locate_entities(text, slots)
    for _, _, reason in missed:
        source.dropped_entities[f"slot {reason}"] += 1
    return Example(text=text, intent=intent, entities=tuple(entities), split=split, source=where)


def read_massive(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    fields: Dict[Path, Fields] = {}
    for path, where, row in json_rows(inputs, options, bad, lines=True):
        source.rows_read += 1
        if "utt" in row:
            try:
                example = official_example(row, where, source)
            except ValueError as problem:
                bad(where, str(problem), "missing fields")
                continue
        else:
            if path not in fields:
                fields[path] = resolve_fields(list(row), options, where)
            example = record_example(row, fields[path], where, bad)
        if example is not None:
            source.examples.append(example)
    if not source.rows_read:
        raise ConversionError(f"{', '.join(map(str, inputs))}: no MASSIVE rows found.")
    return source
