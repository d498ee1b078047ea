"""Shared record types and input helpers for every dataset format.

A format module turns its input files into a :class:`SourceData` (examples, lookup
tables, counts of what it dropped). Everything after that (label clean-up, dedup,
splitting, YAML, verification) is shared and lives in ``pipeline``, ``yaml_writer``
and ``verify``; the pipeline's result is a :class:`Dataset` with its :class:`Report`.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

SPLITS: Tuple[str, ...] = ("train", "dev", "test")
_SPLIT_ALIASES: Dict[str, str] = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "develop": "dev",
    "development": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
    "testing": "test",
}

T = TypeVar("T")


class ConversionError(Exception):
    """Bad input or options: the message names the file, line and what to change."""


class Entity(NamedTuple):
    """An entity span: ``text[start:end]`` is the surface form, ``value`` the canonical value."""

    start: int
    end: int
    entity: str
    value: str


@dataclass(frozen=True)
class Example:
    """One training example. ``source`` is ``file:line``, used in messages only."""

    text: str
    intent: str
    entities: Tuple[Entity, ...] = ()
    split: str = "train"
    source: str = ""


@dataclass
class SourceData:
    """What a format reader returns, before the shared pipeline runs."""

    examples: List[Example] = field(default_factory=list)
    lookups: Dict[str, List[str]] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    dropped_entities: Counter = field(default_factory=Counter)
    notes: List[str] = field(default_factory=list)
    rows_read: int = 0


@dataclass
class Report:
    """What happened to the data on its way to YAML (counts, renames, conflicts, files)."""

    format: str = ""
    inputs: List[str] = field(default_factory=list)
    rows_read: int = 0
    dropped: Counter = field(default_factory=Counter)
    dropped_entities: Counter = field(default_factory=Counter)
    renamed_intents: Dict[str, str] = field(default_factory=dict)
    renamed_entities: Dict[str, str] = field(default_factory=dict)
    conflicts: Dict[str, List[str]] = field(default_factory=dict)
    train_test_overlap: int = 0
    notes: List[str] = field(default_factory=list)
    files: Dict[str, str] = field(default_factory=dict)
    verified: bool = False


@dataclass
class Dataset:
    """The converted data: examples per split, synonyms, lookup tables, and the report."""

    splits: Dict[str, List[Example]]
    synonyms: Dict[str, str]  # surface form → canonical value
    lookups: Dict[str, List[str]]
    report: Report


@dataclass(frozen=True)
class ReadOptions:
    """Options the format readers understand (each uses the ones that apply to it)."""

    text_field: Optional[str] = None  # column/key of the text (generic formats)
    label_field: Optional[str] = None  # column/key of the label
    split_field: Optional[str] = None  # column/key of the split; "none" ignores an auto-detected one
    encoding: Optional[str] = None  # force a text encoding instead of UTF-8 / GBK detection
    no_header: bool = False  # csv/tsv/xlsx without a header row: fields are 1-based column numbers
    sheet: Optional[str] = None  # xlsx sheet name (default: the first sheet)
    label_rule: str = "primary"  # crosswoz: "primary" (one act+domain) or "multi" (all, joined by "+")
    lookups: bool = True  # load the dictionaries a format ships next to its data as lookup tables
    skip_bad: bool = False  # skip and count malformed rows instead of failing
    progress: bool = True  # show a progress bar on a TTY


class BadRows:
    """Fails on the first malformed row, or counts it under ``reason`` with ``--skip-bad``."""

    def __init__(self, skip_bad: bool, dropped: Counter) -> None:
        self.skip_bad = skip_bad
        self.dropped = dropped

    def __call__(self, where: str, problem: str, reason: str) -> None:
        if not self.skip_bad:
            raise ConversionError(f"{where}: {problem}. Fix that row, or pass --skip-bad to skip and count such rows.")
        self.dropped[f"malformed: {reason}"] += 1


def canonical_split(name: str) -> Optional[str]:
    """``validation`` → ``dev`` and so on; None for names that are not a split."""
    return _SPLIT_ALIASES.get(name.strip().lower())


def decode_bytes(raw: bytes, where: str, encoding: Optional[str] = None) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, or GBK/GB18030; CRLF and CR become LF."""
    if encoding:
        candidates = [encoding]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8-sig", "gb18030"]
    first_error: Optional[UnicodeDecodeError] = None
    for candidate in candidates:
        try:
            text = raw.decode(candidate)
            break
        except UnicodeDecodeError as error:
            first_error = first_error or error
        except LookupError:
            raise ConversionError(
                f"{where}: unknown encoding {candidate!r}; pass a Python codec name to --encoding."
            ) from None
    else:
        assert first_error is not None
        line = raw.count(b"\n", 0, first_error.start) + 1
        tried = " or ".join(candidates)
        raise ConversionError(
            f"{where}:{line}: cannot decode byte {raw[first_error.start : first_error.start + 1]!r} as {tried}. "
            "Re-save the file as UTF-8, or pass its encoding with --encoding."
        )
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path, encoding: Optional[str] = None) -> str:
    """Read a text input; an empty (or whitespace-only) file is an error that says so."""
    if not path.is_file():
        raise ConversionError(f"{path}: no such file. Check the input path.")
    text = decode_bytes(path.read_bytes(), str(path), encoding)
    if not text.strip():
        raise empty_input(path)
    return text


def empty_input(path: Path) -> ConversionError:
    return ConversionError(f"{path} is empty: there is nothing to convert. Check the path or drop it from the inputs.")


def numbered_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(1-based line number, line). Splits on ``\\n`` only: U+2028 inside a line stays in it."""
    return enumerate(text.split("\n"), start=1)


class LineIndex:
    """Maps character offsets of a text to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._starts = [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset) + 1


def progress(items: Iterable[T], desc: str, enabled: bool = True, total: Optional[int] = None) -> Iterable[T]:
    """A tqdm bar on stderr when it is a terminal; the bare iterable otherwise."""
    if not enabled or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=" rows", leave=False, mininterval=0.5, file=sys.stderr)


def expand_inputs(inputs: Sequence[Path], pattern: str) -> List[Path]:
    """Files as given, folders expanded to their files matching ``pattern`` (recursive, sorted)."""
    files: List[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob(pattern) if p.is_file())
            if not found:
                raise ConversionError(f"{path}: no files matching {pattern!r} in this folder. Check the input path.")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConversionError(f"{path}: no such file or folder. Check the input path.")
    return files


def locate_entities(text: str, slots: Sequence[Tuple[str, str]]) -> Tuple[List[Entity], List[Tuple[str, str, str]]]:
    """Find slot values in ``text`` by string search.

    Longer values are placed first, each at its first occurrence that does not overlap an
    entity already placed. Returns the entities (sorted) and the ``(entity, value, reason)``
    of the slots that could not be placed (``not in text`` or ``overlaps another entity``).
    """
    placed: List[Entity] = []
    missed: List[Tuple[str, str, str]] = []
    for entity, value in sorted(slots, key=lambda slot: -len(slot[1])):
        if not value:
            missed.append((entity, value, "empty value"))
            continue
        start = text.find(value)
        if start < 0:
            missed.append((entity, value, "value not in text"))
            continue
        while start >= 0 and any(start < e.end and e.start < start + len(value) for e in placed):
            start = text.find(value, start + 1)
        if start < 0:
            missed.append((entity, value, "overlaps another entity"))
            continue
        placed.append(Entity(start, start + len(value), entity, value))
    return sorted(placed), missed


def read_lookup_files(paths: Iterable[Path], encoding: Optional[str] = None) -> Dict[str, List[str]]:
    """Lookup tables from one-entry-per-line ``.txt`` files (a folder means its ``*.txt``); name = file stem."""
    tables: Dict[str, List[str]] = {}
    for path in expand_inputs(list(paths), "*.txt"):
        entries = [line.strip() for _, line in numbered_lines(read_text(path, encoding))]
        tables.setdefault(path.stem, []).extend(entry for entry in entries if entry)
    return tables


_NAME_UNSAFE = re.compile(r"[^\w.+\-]+")


def normalise_name(label: str) -> str:
    """A Rasa-safe intent/entity name: spaces, slashes, brackets and the like become ``_``.

    Letters of any script, digits, ``_``, ``.``, ``-`` and ``+`` (Rasa's multi-intent
    separator) are kept: ``肯定(好的)`` → ``肯定_好的``, ``audio/volume up`` → ``audio_volume_up``.
    """
    return _NAME_UNSAFE.sub("_", label.strip()).strip("_")


# ---------------------------------------------------------------- records with named fields (csv, json, …)

TEXT_FIELDS: Tuple[str, ...] = ("text", "sentence", "query", "utterance", "utt", "review", "content", "question")
LABEL_FIELDS: Tuple[str, ...] = ("label", "intent", "category", "class", "label_text")
SPLIT_FIELDS: Tuple[str, ...] = ("split", "partition")


class Fields(NamedTuple):
    text: str
    label: str
    split: Optional[str]


def resolve_fields(
    keys: Sequence[str],
    options: ReadOptions,
    where: str,
    text_candidates: Sequence[str] = TEXT_FIELDS,
    label_candidates: Sequence[str] = LABEL_FIELDS,
) -> Fields:
    """Which keys hold text, label and split: as requested, else the first known name (any case)."""
    by_lower = {str(key).strip().lower(): key for key in keys}
    shown = ", ".join(repr(k) for k in keys)

    def pick(requested: Optional[str], candidates: Sequence[str], what: str, flag: str) -> Optional[str]:
        if requested:
            if requested in keys:
                return requested
            if requested.strip().lower() in by_lower:
                return by_lower[requested.strip().lower()]
            raise ConversionError(
                f"{where}: there is no {what} field {requested!r}; the fields are {shown}. Check {flag}."
            )
        return next((by_lower[c] for c in candidates if c in by_lower), None)

    text = pick(options.text_field, text_candidates, "text", "--text-field")
    label = pick(options.label_field, label_candidates, "label", "--label-field")
    for found, what, flag, candidates in (
        (text, "text", "--text-field", text_candidates),
        (label, "label", "--label-field", label_candidates),
    ):
        if found is None:
            raise ConversionError(
                f"{where}: cannot tell which field holds the {what} (looked for {', '.join(candidates)}); "
                f"the fields are {shown}. Pass {flag} NAME."
            )
    split = (
        None
        if (options.split_field or "").lower() == "none"
        else pick(options.split_field, SPLIT_FIELDS, "split", "--split-field")
    )
    assert text is not None and label is not None
    return Fields(text, label, split)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def record_example(
    record: Dict[str, object], fields: Fields, where: str, bad: BadRows, split: str = "train"
) -> Optional[Example]:
    """An example from a record (dict); a missing text/label or an unknown split is a malformed row."""
    text, label = _cell(record.get(fields.text)), _cell(record.get(fields.label)).strip()
    if isinstance(record.get(fields.text), (dict, list)) or not text.strip():
        bad(where, f"the text field {fields.text!r} is missing or empty", "no text")
        return None
    if isinstance(record.get(fields.label), (dict, list)) or not label:
        bad(where, f"the label field {fields.label!r} is missing or empty", "no label")
        return None
    if fields.split is not None:
        raw_split = _cell(record.get(fields.split))
        found = canonical_split(raw_split)
        if found is None:
            bad(
                where,
                f"unknown split {raw_split!r} in field {fields.split!r}; expected train, dev/validation or test",
                "unknown split",
            )
            return None
        split = found
    return Example(text=text, intent=label, split=split, source=where)
