"""What of a message a Chinese bot can read. Messages without content (no CJK character, letter or digit: emoji,
punctuation, symbols only) and messages of unknown words only (no CJK character or digit, and no word of letters
that the training examples have: keyboard mash, a language the bot was not trained in) get no confident intent."""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, List, Optional, Set

# CJK ideographs: the unified blocks with extension A, compatibility ideographs, extensions B and later
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_DIGIT = re.compile(r"\d")
# runs of letters that are not CJK ideographs (Latin, Cyrillic, kana, Hangul, ...)
_WORD = re.compile("[^\\W\\d_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")


def has_content(text: str) -> bool:
    """True when ``text`` holds a letter (CJK characters are letters: Unicode category Lo) or a digit."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text or "")


def words(text: str) -> Set[str]:
    """The words of letters other than CJK ideographs in ``text``, NFKC-normalised and case-folded (ＯＫ, OK -> ok)."""
    return set(_WORD.findall(unicodedata.normalize("NFKC", text or "").casefold()))


def vocabulary(texts: Iterable[str]) -> List[str]:
    """The sorted words of letters (other than CJK ideographs) of ``texts``: what a bot trained on them knows."""
    known: Set[str] = set()
    for text in texts:
        known |= words(text)
    return sorted(known)


def readable(text: str, known_words: Optional[Set[str]]) -> bool:
    """True when ``text`` has content the bot can read: a CJK character, a digit, or a word of ``known_words``
    (``None``: any letter counts, as for archives without a stored vocabulary)."""
    if not has_content(text):
        return False
    normalised = unicodedata.normalize("NFKC", text)
    if known_words is None or _CJK.search(normalised) or _DIGIT.search(normalised):
        return True
    return not words(text).isdisjoint(known_words)
