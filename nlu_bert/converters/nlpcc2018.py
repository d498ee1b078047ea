"""NLPCC 2018 task 4 (in-car assistant SLU): inline slot tags, synonyms, official dictionaries.

Input: ``corpus.train.txt`` (or a folder with ``corpus*.txt``): tab-separated
``session_id, utterance, intent, annotated utterance``, CRLF, blank lines between
sessions. Tags look like ``<singer>周华健</singer>``; ``<singer>菲菲||云菲菲</singer>``
is an ASR-corrected surface form with its canonical value, which becomes an entity
with a synonym. The annotated text without tags must equal the utterance column.
``slot-dictionaries/*.txt`` next to the corpus become lookup tables (song, singer, …).
There is no official test split: use ``--test-fraction``. Labels depend on the
session (``取消`` has four intents); see the conflict report or ``--drop-conflicts``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Sequence, Tuple

from nlu_bert.converters.base import (
    BadRows,
    Entity,
    Example,
    ReadOptions,
    SourceData,
    expand_inputs,
    numbered_lines,
    progress,
    read_lookup_files,
    read_text,
)

_TAG = re.compile(r"<(?P<name>[A-Za-z_][\w\-]*)>(?P<body>.*?)</(?P=name)>")
_LEFTOVER = re.compile(r"</?[A-Za-z_][\w\-]*>")


def parse_tagged(annotated: str) -> Tuple[str, List[Entity]]:
    """``来一首<singer>菲菲||云菲菲</singer>`` → (``来一首菲菲``, [Entity(3, 5, "singer", "云菲菲")])."""
    pieces: List[str] = []
    entities: List[Entity] = []
    length, cursor = 0, 0
    for match in _TAG.finditer(annotated):
        before = annotated[cursor : match.start()]
        pieces.append(before)
        length += len(before)
        parts = match.group("body").split("||")
        if len(parts) > 2 or not parts[0] or (len(parts) == 2 and not parts[1]):
            raise ValueError(
                f"tag <{match.group('name')}> should hold 'value' or 'surface||canonical', got {match.group('body')!r}"
            )
        surface, canonical = parts[0], parts[-1]
        entities.append(Entity(length, length + len(surface), match.group("name"), canonical))
        pieces.append(surface)
        length += len(surface)
        cursor = match.end()
    pieces.append(annotated[cursor:])
    text = "".join(pieces)
    leftover = _LEFTOVER.search(text)
    if leftover:
        raise ValueError(f"unbalanced tag {leftover.group(0)!r}")
    return text, entities


def read_nlpcc2018(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    dictionaries: List[Path] = []
    for path in expand_inputs(inputs, "corpus*.txt"):
        for number, line in progress(
            list(numbered_lines(read_text(path, options.encoding))), path.name, options.progress
        ):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            source.rows_read += 1
            columns = line.split("\t")
            if len(columns) != 4:
                bad(
                    where,
                    f"expected 4 tab-separated columns (session, utterance, intent, annotated), got {len(columns)}",
                    "wrong column count",
                )
                continue
            _, utterance, intent, annotated = columns
            try:
                text, entities = parse_tagged(annotated)
            except ValueError as problem:
                bad(where, str(problem), "bad slot tags")
                continue
            if text != utterance:
                bad(where, f"the annotated text {text!r} differs from the utterance {utterance!r}", "text mismatch")
                continue
            source.examples.append(Example(text=text, intent=intent, entities=tuple(entities), source=where))
        if (path.parent / "slot-dictionaries").is_dir():
            dictionaries.append(path.parent / "slot-dictionaries")
    if options.lookups and dictionaries:
        source.lookups = read_lookup_files(dictionaries, options.encoding)
    return source
