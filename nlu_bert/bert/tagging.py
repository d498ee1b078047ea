"""Rasa entity annotations <-> BIO / BILOU tags over a tokenizer's tokens, character-exact.

A tokenizer's offset mapping (``return_offsets_mapping=True``) gives each token its ``(start, end)`` characters in
the original text (``(0, 0)`` for special tokens and padding). Entities become tags over those tokens; tags become
entities whose ``start`` / ``end`` are the first token's start and the last token's end, so the offsets are those of
the original text whatever the tokenizer normalised (case, accents, full-width forms) and ``value`` is the original
substring.

An entity *label* is the triple (entity, role, group): a role or a group is part of what the tagger learns, so one
tag sequence carries all three (Rasa's ``[北京]{"entity": "city", "role": "from"}``). Tags are ``O`` and
``<prefix>-<label index>``; :meth:`TagSet.tag_names` gives readable names for reports.

No torch, no Rasa: used at train time and by every inference backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

OUTSIDE = "O"
BIO = ("B", "I")
BILOU = ("B", "I", "L", "U")

Offsets = Sequence[Tuple[int, int]]
_WHITESPACE = re.compile(r"\s")  # the characters of str.isspace()


class Label(NamedTuple):
    """What an entity is: its type, and its role and group where the data annotates them."""

    entity: str
    role: Optional[str] = None
    group: Optional[str] = None

    def describe(self) -> str:
        return self.entity + (f"#{self.role}" if self.role else "") + (f"@{self.group}" if self.group else "")


class Span(NamedTuple):
    """An entity as character offsets into a text: ``text[start:end]``."""

    start: int
    end: int
    label: Label


@dataclass
class Problem:
    """An annotation that could not be learnt as given (for a training warning that names the example)."""

    text: str
    entity: Mapping[str, Any]
    reason: str

    def describe(self) -> str:
        shown = {
            k: self.entity.get(k)
            for k in ("entity", "start", "end", "value", "role", "group")
            if self.entity.get(k) is not None
        }
        return f"{self.reason}: {shown} in '{self.text}'"


def trim_offsets(text: str, offsets: Offsets) -> List[Tuple[int, int]]:
    """Token offsets without the whitespace some tokenizers include (SentencePiece's ``▁Pro`` covers " Pro"); a
    token of whitespace alone gets empty offsets, like a special token. Used on both sides, training and serving."""
    if not _WHITESPACE.search(text):  # nothing to trim (most Chinese messages): only empty tokens become (0, 0)
        return [(int(s), int(e)) if e > s else (0, 0) for s, e in offsets]
    out = []
    for start, end in offsets:
        start, end = int(start), int(end)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        out.append((start, end) if end > start else (0, 0))
    return out


def label_of(entity: Mapping[str, Any]) -> Label:
    """The :class:`Label` of a Rasa entity dict."""
    role, group = entity.get("role"), entity.get("group")
    return Label(str(entity["entity"]), None if role is None else str(role), None if group is None else str(group))


def check_annotation(text: str, entity: Mapping[str, Any]) -> Tuple[Optional[Span], Optional[str]]:
    """The span of a Rasa entity dict, whitespace at its ends trimmed, or why it cannot be used."""
    name = entity.get("entity")
    if not isinstance(name, str) or not name.strip():
        return None, "the entity has no name"
    start, end = entity.get("start"), entity.get("end")
    if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
        return None, "the entity has no integer start and end"
    if not 0 <= start < end <= len(text):
        return None, f"the offsets {start}..{end} are empty or outside the text (length {len(text)})"
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        return None, "the entity covers only whitespace"
    return Span(start, end, label_of(entity)), None


def usable_spans(text: str, entities: Iterable[Mapping[str, Any]]) -> Tuple[List[Span], List[Problem]]:
    """The annotations of one example as spans, longest first kept where two overlap, plus the problems."""
    spans: List[Tuple[Span, Mapping[str, Any]]] = []
    problems: List[Problem] = []
    for entity in entities:
        span, reason = check_annotation(text, entity)
        if span is None:
            problems.append(Problem(text, entity, reason or "unusable"))
        else:
            spans.append((span, entity))
    kept: List[Span] = []
    for span, entity in sorted(spans, key=lambda s: (-(s[0].end - s[0].start), s[0].start)):
        clash = next((k for k in kept if span.start < k.end and k.start < span.end), None)
        if clash is None:
            kept.append(span)
        elif clash[:2] != span[:2] or clash.label != span.label:
            problems.append(
                Problem(
                    text,
                    entity,
                    f"it overlaps the entity '{clash.label.describe()}' at {clash.start}..{clash.end}, which was kept",
                )
            )
    return sorted(kept), problems


class TagSet:
    """The tags of one model: ``O`` and, for each label, ``B``/``I`` (BIO) or ``B``/``I``/``L``/``U`` (BILOU)."""

    def __init__(self, labels: Sequence[Label], bilou: bool = True) -> None:
        self.labels: List[Label] = [Label(*label) for label in labels]
        self.bilou = bool(bilou)
        self.prefixes = BILOU if self.bilou else BIO
        self.tags: List[str] = [OUTSIDE] + [f"{p}-{i}" for i in range(len(self.labels)) for p in self.prefixes]
        self._index = {t: i for i, t in enumerate(self.tags)}
        self._parts = [(OUTSIDE, -1)] + [(p, i) for i in range(len(self.labels)) for p in self.prefixes]

    @classmethod
    def from_spans(cls, spans: Iterable[Span], bilou: bool = True) -> "TagSet":
        """Labels sorted (deterministic: the same data gives the same tag ids)."""
        labels = sorted({s.label for s in spans}, key=lambda label: (label.entity, label.role or "", label.group or ""))
        return cls(labels, bilou)

    def __len__(self) -> int:
        return len(self.tags)

    def to_dict(self) -> Dict[str, Any]:
        return {"scheme": "BILOU" if self.bilou else "BIO", "labels": [list(label) for label in self.labels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TagSet":
        scheme = data.get("scheme")
        if scheme not in ("BIO", "BILOU"):
            raise ValueError(f"unknown tag scheme {scheme!r} (expected 'BIO' or 'BILOU')")
        return cls([Label(*label) for label in data["labels"]], bilou=scheme == "BILOU")

    def tag_id(self, prefix: str, label_index: int) -> int:
        return self._index[f"{prefix}-{label_index}"]

    def tag_names(self) -> List[str]:
        """``O``, ``B-city#from``, … (for reports)."""
        return [OUTSIDE] + [f"{p}-{label.describe()}" for label in self.labels for p in self.prefixes]

    def split(self, tag_id: int) -> Tuple[str, int]:
        """``(prefix, label index)``; ``("O", -1)`` for O."""
        return self._parts[tag_id]

    # ---------------------------------------------------------------------------- spans -> tags
    def encode(self, spans: Sequence[Span], offsets: Offsets) -> Tuple[List[int], List[Tuple[Span, str]]]:
        """Tag ids per token (special tokens and padding get ``O``) and the spans that did not fit as given.

        A span covers the tokens it overlaps. Where it starts or ends inside a token it is widened to whole tokens
        and reported (``misaligned``); a span on no token (cut off by ``max_length``) is reported and dropped."""
        tags = [0] * len(offsets)
        unfit: List[Tuple[Span, str]] = []
        label_ids = {label: i for i, label in enumerate(self.labels)}
        for span in spans:
            covered = [i for i, (s, e) in enumerate(offsets) if e > s and s < span.end and e > span.start]
            if not covered:
                unfit.append((span, "it lies beyond `max_length` tokens and was left out"))
                continue
            if any(tags[i] for i in covered):
                unfit.append((span, "it shares a token with another entity and was left out"))
                continue
            if offsets[covered[0]][0] != span.start or offsets[covered[-1]][1] != span.end:
                first, last = offsets[covered[0]][0], offsets[covered[-1]][1]
                unfit.append((span, f"it does not start and end on token boundaries; learnt as {first}..{last}"))
            index = label_ids[span.label]
            if len(covered) == 1:
                tags[covered[0]] = self.tag_id("U" if self.bilou else "B", index)
                continue
            tags[covered[0]] = self.tag_id("B", index)
            for i in covered[1:-1]:
                tags[i] = self.tag_id("I", index)
            tags[covered[-1]] = self.tag_id("L" if self.bilou else "I", index)
        return tags, unfit

    # ---------------------------------------------------------------------------- tags -> spans
    def decode(self, tag_ids: Sequence[int], offsets: Offsets) -> List[Tuple[int, int, int]]:
        """``(first token, last token, label index)`` of each entity in a tag sequence (tokens with empty offsets
        are skipped). Lenient with sequences a constrained decoder would not give: an ``I``/``L`` that continues no
        entity of its label starts one."""
        found: List[Tuple[int, int, int]] = []
        open_: Optional[List[int]] = None  # [first, last, label]
        for t, tag in enumerate(tag_ids):
            if t >= len(offsets) or offsets[t][1] <= offsets[t][0]:
                continue
            prefix, label = self.split(int(tag))
            continues = open_ is not None and open_[2] == label and prefix in ("I", "L")
            if open_ is not None and not continues:
                found.append((open_[0], open_[1], open_[2]))
                open_ = None
            if prefix == OUTSIDE:
                continue
            if continues:
                open_[1] = t  # type: ignore[index]
            else:
                open_ = [t, t, label]
            if prefix in ("L", "U"):
                found.append((open_[0], open_[1], open_[2]))  # type: ignore[index]
                open_ = None
        if open_ is not None:
            found.append((open_[0], open_[1], open_[2]))
        return found

    def entities(
        self,
        text: str,
        tag_ids: Sequence[int],
        offsets: Offsets,
        confidences: Optional[Sequence[float]] = None,
        extractor: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """Rasa entity dicts: ``entity``, ``start``, ``end``, ``value`` (the original substring),
        ``confidence_entity`` (the lowest of its tokens' confidences), ``role`` / ``group`` where the label has
        them, ``extractor``."""
        out: List[Dict[str, Any]] = []
        for first, last, index in self.decode(tag_ids, offsets):
            label = self.labels[index]
            start, end = int(offsets[first][0]), int(offsets[last][1])
            entity: Dict[str, Any] = {"entity": label.entity, "start": start, "end": end, "value": text[start:end]}
            if confidences is not None:
                entity["confidence_entity"] = float(min(confidences[first : last + 1]))
            if label.role is not None:
                entity["role"] = label.role
            if label.group is not None:
                entity["group"] = label.group
            if extractor is not None:
                entity["extractor"] = extractor
            out.append(entity)
        return out
