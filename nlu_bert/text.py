"""The one text normalisation of nlu-bert: what the few-shot fallback does to a message and to the examples it
shows (BERT reads text as its tokenizer normalises it)."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC, whitespace (newlines included) collapsed to single spaces, trimmed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text or "")).strip()
