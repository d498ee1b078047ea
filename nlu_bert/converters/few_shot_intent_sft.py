"""few_shot_intent_sft prompt files (qgyd2021/few_shot_intent_sft): recover the user text.

Each jsonl row has a ``prompt`` such as::

    小样本意图识别。如果不确定，输出 “不知道”。

    Examples:
    ------------
    text: 打开客厅的灯
    intent: 开灯
    ------------
    text: <USER TEXT>
    intent:

a ``response`` (the label as the template writes it, or the not-applicable answer such as
``不知道`` when ``not_applicable`` is true) and an ``intent`` field (the row's true label).
The user text is the last ``text:`` line before the final, empty ``intent:`` line (``：`` works
too). The label is ``--label-field`` if given, else ``intent``, else ``response`` (rows whose
response is the not-applicable answer are then dropped). ``split`` is used when present.
The same user text recurs under many templates; the shared dedup keeps one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from nlu_bert.converters.base import (
    BadRows,
    ConversionError,
    Fields,
    ReadOptions,
    SourceData,
    record_example,
    resolve_fields,
)
from nlu_bert.converters.records import json_rows

_TEXT_LINE = re.compile(r"^\s*text\s*[:：]\s?", re.IGNORECASE)
_INTENT_LINE = re.compile(r"^\s*intent\s*[:：]\s*$", re.IGNORECASE)
_ANY_INTENT_LINE = re.compile(r"^\s*intent\s*[:：]", re.IGNORECASE)
_SEPARATOR = re.compile(r"^\s*-{3,}\s*$")


def user_text(prompt: str) -> Optional[str]:
    """The text after the last ``text:`` line of the prompt, up to its final empty ``intent:`` line."""
    lines = prompt.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2 or not _INTENT_LINE.match(lines[-1]):
        return None
    for index in range(len(lines) - 2, -1, -1):
        match = _TEXT_LINE.match(lines[index])
        if match:
            return " ".join([lines[index][match.end() :]] + lines[index + 1 : -1]).strip() or None
        if _ANY_INTENT_LINE.match(lines[index]) or _SEPARATOR.match(lines[index]):
            return None  # the last example block has no text of its own
    return None


def _label_field(row: Dict[str, Any], options: ReadOptions) -> str:
    if options.label_field:
        return options.label_field
    return "intent" if str(row.get("intent") or "").strip() else "response"


def read_few_shot_intent_sft(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    split_fields: Dict[Path, Optional[str]] = {}
    for path, where, row in json_rows(inputs, options, bad, lines=True):
        source.rows_read += 1
        prompt = row.get("prompt")
        text = user_text(prompt) if isinstance(prompt, str) else None
        if text is None:
            bad(where, "the 'prompt' should end with a 'text: …' line and an empty 'intent:' line", "no user text")
            continue
        label_field = _label_field(row, options)
        if label_field == "response" and row.get("not_applicable") in (True, "true", 1):
            source.dropped["not-applicable response and no intent field"] += 1
            continue
        if path not in split_fields:
            split_fields[path] = resolve_fields(list(row) + ["text"], options, where, ("text",), (label_field,)).split
        fields = Fields(text="text", label=label_field, split=split_fields[path])
        example = record_example({**row, "text": text}, fields, where, bad)
        if example is not None:
            source.examples.append(example)
    if not source.rows_read:
        raise ConversionError(f"{', '.join(map(str, inputs))}: no prompt rows found.")
    return source
