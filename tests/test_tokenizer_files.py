"""The torch-free tokenizers give the ids of the transformers tokenizer that saved them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlu_bert import tokenizer_files
from nlu_bert.vocab import build_char_vocab, make_tokenizer

from nlu_testing import TINY_BOT

TEXTS = [t for texts in TINY_BOT.values() for t in texts] + [
    "你好再见",
    "查一下退款",
    "订单到哪了再见",
    "我要查订单",
    "退货",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer(build_char_vocab(TEXTS, ["不知道", "text: intent:"]), folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def test_text_encoder_matches_the_transformers_tokenizer(tokenizer, tmp_path: Path) -> None:
    """The torch-free tokenizer gives the ids and masks of the transformers one (padding, truncation)."""
    tokenizer.save_pretrained(str(tmp_path))
    texts = TEXTS + ["你好" * 40, "Hello 订单 123", "  退款  ", "é"]
    encoder = tokenizer_files.TextEncoder(tmp_path, max_length=16)
    for start in range(0, len(texts), 7):
        chunk = texts[start : start + 7]
        expected = tokenizer(chunk, truncation=True, max_length=16, padding=True, return_tensors="np")
        ids, mask = encoder(chunk)
        np.testing.assert_array_equal(ids, expected["input_ids"])
        np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_text_encoder_without_tokenizer_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("tokenizer.json is missing")):
        tokenizer_files.TextEncoder(tmp_path, max_length=16)


def test_tokenizer_file_matches_transformers(tokenizer, tokenizer_dir: Path) -> None:
    light = tokenizer_files.TokenizerFile(tokenizer_dir)
    for name in ("cls_token_id", "sep_token_id", "pad_token_id", "unk_token_id", "bos_token_id", "eos_token_id"):
        assert getattr(light, name) == getattr(tokenizer, name), name
    for text in ["明天下雨吗", "Play 音乐 NOW!", "  空格  ", "未见过的字：龘", ""]:
        assert (
            light(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        tokenizer_files.TokenizerFile(tokenizer_dir / "nowhere")
