"""CAIS (CM-Net, EMNLP 2019): one character per line with a BIOES tag, intents in a sibling file.

Inputs: ``ch.<split>`` files (their labels are read from ``ch.<split>.intent``) or a
folder holding them. A line is ``<char><space><tag>``; the character itself may be a
space (``"  O"``), so the line is read as ``char = line[0]``, ``tag = line[2:]``, never
split on spaces. A blank line ends an utterance. ``valid`` → dev.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from nlu_bert.converters.base import (
    BadRows,
    ConversionError,
    Entity,
    Example,
    ReadOptions,
    SourceData,
    canonical_split,
    expand_inputs,
    numbered_lines,
    progress,
    read_text,
)

Token = Tuple[int, str, Optional[str]]  # (line, character, tag)


def bioes_entities(tags: Sequence[str]) -> List[Entity]:
    """Spans of a BIOES tag sequence (values are filled in by the caller); raises ValueError on a broken sequence."""
    spans: List[Entity] = []
    open_at, open_type = -1, ""
    for index, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        if tag == "O" or prefix == "S" or prefix == "B":
            if open_type:
                raise ValueError(f"entity {open_type} opened at character {open_at + 1} is not closed with E-")
            if prefix == "S" and kind:
                spans.append(Entity(index, index + 1, kind, ""))
            elif prefix == "B" and kind:
                open_at, open_type = index, kind
            elif tag != "O":
                raise ValueError(f"tag {tag!r} at character {index + 1} has no entity type")
        elif prefix in ("I", "E") and kind:
            if not open_type:
                raise ValueError(f"tag {tag!r} at character {index + 1} has no B-{kind} before it")
            if open_type != kind:
                raise ValueError(f"tag {tag!r} at character {index + 1} does not continue B-{open_type}")
            if prefix == "E":
                spans.append(Entity(open_at, index + 1, kind, ""))
                open_at, open_type = -1, ""
        else:
            raise ValueError(f"unknown tag {tag!r} at character {index + 1}; expected O, B-x, I-x, E-x or S-x")
    if open_type:
        raise ValueError(f"entity {open_type} opened at character {open_at + 1} is not closed with E-")
    return spans


def parse_conll(text: str, where: str) -> List[Tuple[str, List[Token]]]:
    """Utterances as (``file:line`` of their first character, [(line, char, tag)]); tag None: malformed line."""
    utterances: List[Tuple[str, List[Token]]] = []
    current: List[Token] = []
    for number, line in numbered_lines(text):
        if line == "":
            if current:
                utterances.append((f"{where}:{current[0][0]}", current))
                current = []
            continue
        current.append((number, line[0], line[2:] if len(line) > 2 and line[1] == " " else None))
    if current:
        utterances.append((f"{where}:{current[0][0]}", current))
    return utterances


def split_of(path: Path) -> str:
    """``ch.valid`` → dev; otherwise the parent folder's name; otherwise train."""
    return canonical_split(path.suffix.lstrip(".")) or canonical_split(path.parent.name) or "train"


def read_cais(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    files = [p for p in expand_inputs(inputs, "ch.*") if p.suffix != ".intent"]
    for path in files:
        intent_path = path.with_name(path.name + ".intent")
        if not intent_path.is_file():
            raise ConversionError(f"{path}: its intent labels should be in {intent_path}, which does not exist.")
        utterances = parse_conll(read_text(path, options.encoding), str(path))
        intents = [line.strip() for line in read_text(intent_path, options.encoding).split("\n") if line.strip()]
        if len(intents) != len(utterances):
            raise ConversionError(
                f"{path} has {len(utterances)} utterances but {intent_path} has {len(intents)} labels; "
                "they must be aligned one label per utterance."
            )
        split = split_of(path)
        for (where, tokens), intent in progress(list(zip(utterances, intents)), path.name, options.progress):
            source.rows_read += 1
            broken = next((f"{path}:{n}" for n, _, tag in tokens if tag is None), None)
            if broken:
                bad(broken, "expected '<character> <tag>' (one character, a space, a BIOES tag)", "bad line")
                continue
            text = "".join(char for _, char, _ in tokens)
            try:
                spans = bioes_entities([tag or "" for _, _, tag in tokens])
            except ValueError as problem:
                bad(where, str(problem), "broken BIOES sequence")
                continue
            entities = tuple(e._replace(value=text[e.start : e.end]) for e in spans)
            source.examples.append(Example(text=text, intent=intent, entities=entities, split=split, source=where))
    return source
