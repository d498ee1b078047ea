"""CrossWOZ: user turns of multi-domain dialogues, one intent per turn from its dialogue acts.

Inputs: ``*_messages.json`` / ``val.json``-style files (``{dialogue_id: {"messages": [{"role",
"content", "dialog_act"}]}}``) or a folder holding them (``*_da_voc.json`` files are
skipped). Split from the file name: ``train`` → train, ``test`` → test, ``val`` → dev,
or → train when no train file is among the inputs (the public train zip is missing,
so the protocol is: train on val, test on test).

Label rule (``--label-rule primary``, the default). A user turn carries several
``[act, domain, slot, value]`` acts; its intent is one ``act_domain``:
  1. the act is the first of Request > Select > Inform > General present in the turn
     (what the user asks for outranks what they choose, state, or say in passing);
  2. the domain is the one with the most acts of that kind (ties: the first mentioned);
  3. names are English: ``request_restaurant``, ``inform_hotel``, ``select_attraction``,
     ``inform_taxi``, ``request_metro``; General acts give ``greet``, ``thank``, ``bye``.
``--label-rule multi`` joins every distinct act_domain of the turn, sorted, with ``+``
(Rasa's multi-intent syntax). Turns without acts are dropped.

Entities: Inform values that occur verbatim in the turn, named ``<domain>-<slot>``
(``餐馆-推荐菜``); yes/no facility flags (``是``/``否``) and paraphrased values are skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from nlu_bert.converters.base import (
    ConversionError,
    Example,
    ReadOptions,
    SourceData,
    expand_inputs,
    locate_entities,
    progress,
    read_text,
)

DOMAINS = {"餐馆": "restaurant", "景点": "attraction", "酒店": "hotel", "出租": "taxi", "地铁": "metro"}
ACT_PRIORITY = ("Request", "Select", "Inform", "General")
_NOT_SPANS = {"", "none", "是", "否"}
Act = Tuple[str, str, str, str]


def _name(act: str, domain: str) -> str:
    return domain.lower() if act == "General" else f"{act.lower()}_{DOMAINS.get(domain, domain)}"


def intent_of(acts: Sequence[Act], rule: str = "primary") -> Optional[str]:
    """The intent of a user turn from its dialogue acts (None when it has none)."""
    pairs = [(act, domain) for act, domain, _, _ in acts]
    if not pairs:
        return None
    if rule == "multi":
        return "+".join(sorted({_name(act, domain) for act, domain in pairs}))
    if rule != "primary":
        raise ConversionError(f"--label-rule must be 'primary' or 'multi', got {rule!r}.")
    top = min(pairs, key=lambda pair: ACT_PRIORITY.index(pair[0]) if pair[0] in ACT_PRIORITY else len(ACT_PRIORITY))
    counts = Counter(domain for act, domain in pairs if act == top[0])
    best = max(counts.values())
    domain = next(domain for act, domain in pairs if act == top[0] and counts[domain] == best)
    return _name(top[0], domain)


def inform_slots(acts: Sequence[Act]) -> List[Tuple[str, str]]:
    """(``domain-slot``, value) of the Inform acts whose value can be a span."""
    return [
        (f"{domain}-{slot}", value)
        for act, domain, slot, value in acts
        if act == "Inform" and value.strip() not in _NOT_SPANS
    ]


def split_of(path: Path, has_train: bool) -> str:
    stem = path.stem.lower()
    if stem.startswith("train"):
        return "train"
    if stem.startswith("test"):
        return "test"
    if stem.startswith("val") or stem.startswith("dev"):
        return "dev" if has_train else "train"
    raise ConversionError(f"{path}: cannot tell the split from the name; name it train*, val* or test*.json.")


def _dialogues(path: Path, options: ReadOptions) -> List[Tuple[str, Any]]:
    try:
        data = json.loads(read_text(path, options.encoding))
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}:{error.lineno}: not valid JSON ({error.msg}).") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected an object of dialogue id → dialogue, got {type(data).__name__}.")
    return list(data.items())


def read_crosswoz(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    source = SourceData()
    files = [p for p in expand_inputs(inputs, "*.json") if not p.stem.endswith("da_voc")]
    has_train = any(p.stem.lower().startswith("train") for p in files)
    for path in files:
        split = split_of(path, has_train)
        for dialogue_id, dialogue in progress(_dialogues(path, options), path.name, options.progress):
            messages = dialogue.get("messages") if isinstance(dialogue, dict) else None
            if not isinstance(messages, list):
                raise ConversionError(f"{path}: dialogue {dialogue_id} has no 'messages' list; is this CrossWOZ data?")
            for turn, message in enumerate(messages, start=1):
                if message.get("role") != "usr":
                    continue
                source.rows_read += 1
                acts = [tuple(str(x) for x in act) for act in message.get("dialog_act") or [] if len(act) == 4]
                intent = intent_of(acts, options.label_rule)
                if intent is None:
                    source.dropped["user turn without dialogue acts"] += 1
                    continue
                text = str(message.get("content") or "")
                entities, missed = locate_entities(text, inform_slots(acts))
                for _, _, reason in missed:
                    source.dropped_entities[f"Inform {reason}"] += 1
                source.examples.append(
                    Example(
                        text=text,
                        intent=intent,
                        entities=tuple(entities),
                        split=split,
                        source=f"{path}: dialogue {dialogue_id}, turn {turn}",
                    )
                )
    if not has_train and files:
        source.notes.append("no train file among the inputs: val dialogues are the train split")
    return source
