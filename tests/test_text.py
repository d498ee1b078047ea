"""The one text normalisation."""

from __future__ import annotations

import pytest

from nlu_bert.text import normalize_text


@pytest.mark.parametrize(
    "text, expected",
    [("  你好\n\n  吗 ", "你好 吗"), ("a\tb\u3000c", "a b c"), ("e\u0301", "\u00e9"), ("", ""), (None, "")],
)
def test_nfc_and_whitespace_collapsed(text: str, expected: str) -> None:
    assert normalize_text(text) == expected
