"""Generic ``json`` and ``jsonl`` inputs: records with a text and a label field.

``json`` accepts a list of records, an object of records (``{"0": {...}, "1": {...}}``),
a single record, several such values written back to back, or an object of records with
a second one nested in it without a key (as in SMP2017's ``data.json``).
``jsonl`` is one record per line. Field names are auto-detected
(``text``/``sentence``/``query``…, ``label``/``intent``…, ``split``) or given with
``--text-field``, ``--label-field``, ``--split-field``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from nlu_bert.converters.base import (
    BadRows,
    ConversionError,
    Fields,
    LineIndex,
    ReadOptions,
    SourceData,
    expand_inputs,
    progress,
    read_text,
    record_example,
    resolve_fields,
)

_WHITESPACE = " \t\n\r"


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _items(text: str, pos: int, decoder: json.JSONDecoder) -> Tuple[List[Tuple[int, Any]], int]:
    """(offset, value) of each element of the array/object starting at ``text[pos]``, and the end offset."""
    closing = "}" if text[pos] == "{" else "]"
    items: List[Tuple[int, Any]] = []
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == closing:
        return items, pos + 1
    while True:
        if closing == "}":
            _, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos : pos + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
            pos = _skip(text, pos + 1)
        value, end = decoder.raw_decode(text, pos)
        items.append((pos, value))
        pos = _skip(text, end)
        if text[pos : pos + 1] == ",":
            pos = _skip(text, pos + 1)
        elif text[pos : pos + 1] == closing:
            return items, pos + 1
        else:
            raise json.JSONDecodeError(f"Expecting ',' or '{closing}'", text, pos)


def _keyless_parts(text: str, pos: int, decoder: json.JSONDecoder) -> Tuple[List[List[Tuple[int, Any]]], int]:
    """Lenient reading of ``{"0": {...}, {"0": {...}}}``: an object of entries with a second object of
    entries nested in it without a key (SMP2017's data.json: train, then develop). One list of
    (offset, value) per object, and the end offset; raises JSONDecodeError on anything else."""
    parts: List[List[Tuple[int, Any]]] = [[]]
    stack = [0]
    pos = _skip(text, pos + 1)
    while stack:
        char = text[pos : pos + 1]
        if char == "}":
            stack.pop()
            pos += 1
        elif char == "{":
            parts.append([])
            stack.append(len(parts) - 1)
            pos += 1
        elif char == '"':
            _, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos : pos + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
            pos = _skip(text, pos + 1)
            value, end = decoder.raw_decode(text, pos)
            parts[stack[-1]].append((pos, value))
            pos = end
        else:
            raise json.JSONDecodeError("Expecting '\"', '{' or '}'", text, pos)
        pos = _skip(text, pos)
        if stack and text[pos : pos + 1] == ",":
            pos = _skip(text, pos + 1)
    return [part for part in parts if part], pos


def iter_json_records(text: str, where: str) -> Iterator[Tuple[int, int, Any]]:
    """(part, line, record) for the records of each top-level value: a list, an id → record object
    or a single record. Several values may be written back to back; each is a part."""
    lines = LineIndex(text)
    decoder = json.JSONDecoder()
    pos, part = _skip(text, 0), 0
    while pos < len(text):
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as error:
            try:
                parts, end = _keyless_parts(text, pos, decoder) if text[pos] == "{" else ([], -1)
            except json.JSONDecodeError:
                end = -1
            if end < 0:
                raise ConversionError(
                    f"{where}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})."
                ) from None
            for items in parts:
                yield from ((part, lines.line(offset), item) for offset, item in items)
                part += 1
            pos = _skip(text, end)
            continue
        if isinstance(value, list) or (
            isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values())
        ):
            for item_offset, item in _items(text, pos, decoder)[0]:
                yield part, lines.line(item_offset), item
        else:
            yield part, lines.line(pos), value
        pos, part = _skip(text, end), part + 1


def iter_jsonl_records(text: str, where: str, bad: BadRows) -> Iterator[Tuple[int, Any]]:
    """(line, record) per non-blank line; a line that is not JSON is a malformed row."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            bad(f"{where}:{number}", f"not valid JSON ({error.msg}, column {error.colno})", "invalid JSON")


def json_rows(
    inputs: Sequence[Path], options: ReadOptions, bad: BadRows, lines: bool
) -> Iterator[Tuple[Path, str, Dict[str, Any]]]:
    """(file, "file:line", record) for every object record of the inputs (``*.json*`` in folders)."""
    for path in expand_inputs(inputs, "*.jsonl" if lines else "*.json"):
        text = read_text(path, options.encoding)
        if lines:
            found: Iterator[Tuple[int, Any]] = iter_jsonl_records(text, str(path), bad)
        else:
            found = ((line, record) for _, line, record in iter_json_records(text, str(path)))
        for line, record in progress(found, path.name, options.progress):
            where = f"{path}:{line}"
            if isinstance(record, dict):
                yield path, where, record
            else:
                bad(
                    where,
                    f"expected a JSON object with text and label fields, got {type(record).__name__}",
                    "not an object",
                )


def read_records(inputs: Sequence[Path], options: ReadOptions, lines: bool) -> SourceData:
    """The json/jsonl reader: fields resolved per file from its first record."""
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    fields: Dict[Path, Fields] = {}
    for path, where, record in json_rows(inputs, options, bad, lines):
        source.rows_read += 1
        if path not in fields:
            fields[path] = resolve_fields(list(record), options, where)
        example = record_example(record, fields[path], where, bad)
        if example is not None:
            source.examples.append(example)
    if not source.rows_read:
        raise ConversionError(f"{', '.join(map(str, inputs))}: no JSON records found. Check the inputs and the format.")
    return source


def read_json(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    return read_records(inputs, options, lines=False)


def read_jsonl(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    return read_records(inputs, options, lines=True)
