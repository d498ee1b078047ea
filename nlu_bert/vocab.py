"""Character vocabularies and BERT-style tokenizers for ``scratch`` backbones.

Both components use a BERT-style (WordPiece) tokenizer, like ``hfl/chinese-bert-wwm-ext`` and
``uer/gpt2-chinese-cluecorpussmall``: Chinese characters become single tokens, Latin words are
split into pieces. In ``scratch`` mode the vocabulary is every character of the bot's training
data (plus ASCII letters and digits as word pieces, so English and numbers never become
``[UNK]``), which keeps the embedding matrix small.

BERT's scratch tokenizer is ``char_level``: text is NFKC-folded (full-width ``ＡＢＣ１２３`` reads as ``abc123``)
and every character other than an ASCII letter or digit is a token of its own, so a character the vocabulary lacks
(an emoji, a rare symbol) becomes one ``[UNK]`` of one character instead of swallowing the word it touches. Every
token then maps back to exact character offsets of the original text, which the entity tagger relies on.
"""

from __future__ import annotations

import string
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ASCII = string.ascii_lowercase + string.digits


def build_char_vocab(texts: Iterable[str], extra_texts: Iterable[str] = (), fold: bool = False) -> List[str]:
    """Special tokens, then every character seen (lower-cased, NFC; with ``fold`` NFKC, as a ``char_level``
    tokenizer reads text), then ASCII word pieces.

    Deterministic: the same texts give the same vocabulary in the same order.
    """
    chars = set()
    for text in list(texts) + list(extra_texts):
        for ch in unicodedata.normalize("NFKC" if fold else "NFC", text).lower():
            if ch.isspace() or unicodedata.category(ch).startswith("C"):
                continue
            chars.add(ch)
    chars.update(_ASCII)
    body = sorted(chars - set(SPECIAL_TOKENS))
    return SPECIAL_TOKENS + body + [f"##{c}" for c in _ASCII]


def write_vocab(vocab: List[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    # one token per line; never use splitlines() to read it back (U+2028 is a token in the real vocab)
    path.write_text("".join(f"{tok}\n" for tok in vocab), encoding="utf-8")
    return path


def make_tokenizer(vocab: List[str], folder: Path, char_level: bool = False) -> "PreTrainedTokenizerBase":
    """A fast BERT tokenizer over ``vocab``, saved in ``folder`` (so it can be persisted as is); ``char_level``: NFKC
    first, and every character but ASCII letters and digits a token of its own (see the module's docstring)."""
    from transformers import BertTokenizerFast

    write_vocab(vocab, folder)
    tokenizer = BertTokenizerFast(
        vocab_file=str(folder / "vocab.txt"),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        strip_accents=None,
    )
    if char_level:
        from tokenizers import Regex, normalizers, pre_tokenizers

        backend = tokenizer.backend_tokenizer
        backend.normalizer = normalizers.Sequence([normalizers.NFKC(), backend.normalizer])
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("[^a-zA-Z0-9]"), behavior="isolated")]
        )
    tokenizer.save_pretrained(str(folder))
    return tokenizer
