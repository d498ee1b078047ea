"""Messages without content: no CJK character, no letter and no digit (emoji, punctuation, symbols only)."""

from __future__ import annotations

import unicodedata


def has_content(text: str) -> bool:
    """True when ``text`` holds a letter (CJK characters are letters: Unicode category Lo) or a digit."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text or "")
