"""BertIntentClassifier's side of Rasa messages: the text the model reads, entity offsets between the text as
sent and that text, and the entities and tokens it sets on a message."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message

from nlu_bert.bert.tagging import trim_offsets


def set_entities(message: Message, text: str, found: List[Dict[str, Any]], encoder: Any) -> None:
    """Entities (offsets into the text as sent, leading whitespace included) after those of earlier
    extractors, and the model's tokens (from ``encoder``, the served tokenizer) as the message's tokens where no
    tokenizer set any (so that `rasa test nlu` can score the entities)."""
    shift = len(text) - len(text.lstrip())
    for entity in found:
        entity["start"] += shift
        entity["end"] += shift
    message.set(ENTITIES, (message.get(ENTITIES) or []) + found, add_to_output=True)
    if not message.get(TOKENS_NAMES[TEXT]):
        _, _, offsets = encoder.encode([strip(text)])
        offsets = trim_offsets(strip(text), offsets[0])
        tokens = [Token(text[s + shift : e + shift], s + shift, e + shift) for s, e in offsets if e > s]
        message.set(TOKENS_NAMES[TEXT], tokens)


def strip(text: str) -> str:
    """The text the model reads: without whitespace at its ends (entity offsets are shifted to match)."""
    return text.strip()


def shifted(message: Message, entities: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``entities`` with offsets into the stripped text (non-integer offsets are left for the checks to report)."""
    text = message.get(TEXT)
    shift = len(text) - len(text.lstrip())
    if not shift:
        return list(entities)
    out = []
    for entity in entities:
        moved = dict(entity)
        for key in ("start", "end"):
            if isinstance(moved.get(key), int) and not isinstance(moved.get(key), bool):
                moved[key] -= shift
        out.append(moved)
    return out
