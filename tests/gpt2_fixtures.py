"""Tiny GPT-2 models, character tokenizers and synthetic bots for the few-shot tests.

Nothing downloads: the models have random weights (GPT2Config with n_embd 32, 2 layers) and
the tokenizers a character vocabulary built from the texts the tests use.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from nlu_bert.fewshot.prompts import TEMPLATES
from nlu_bert.vocab import build_char_vocab, make_tokenizer

NOT_APPLICABLE = "不知道"
# the synthetic bot's intents and the labels its prompts show
LABELS = {"weather": "天气", "music": "音乐", "taxi": "打车", "food": "点餐", "alarm": "闹钟"}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Two cores shared by several processes: one torch thread is faster and steadier here. Imported by the
    few-shot test modules, where it applies to every test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_SIZES = {"scratch_hidden_size": 32, "scratch_num_layers": 2, "scratch_num_heads": 2}


def template_texts() -> List[str]:
    return [t.prompt for t in TEMPLATES.values()] + [NOT_APPLICABLE]


def tiny_tokenizer(texts: List[str], folder: Path) -> Any:
    return make_tokenizer(build_char_vocab(texts, template_texts()), folder)


def tiny_gpt2(vocab_size: int, seed: int = 0, n_positions: int = 512) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval()


# A synthetic bot: every intent has its own characters; texts mix 2-4 of them with filler.
_SYNTH_CHARS = {
    "weather": "晴雨风雪云雷",
    "music": "歌曲唱琴鼓笛",
    "taxi": "车打叫站路司",
    "food": "饭菜面汤饺粥",
    "alarm": "钟闹醒早点秒",
}
_FILLER = "我想要请帮的了吗"


def synthetic_bot(
    n_train: int = 16,
    n_test: int = 8,
    seed: int = 7,
    intent_chars: Tuple[int, int] = (2, 4),
    filler_chars: Tuple[int, int] = (1, 3),
) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """``(train, test)`` texts per intent; the test texts never occur in train."""
    rng = random.Random(seed)
    train: Dict[str, List[str]] = {}
    test: Dict[str, List[str]] = {}
    for intent, chars in _SYNTH_CHARS.items():
        seen: set = set()
        texts: List[str] = []
        while len(texts) < n_train + n_test:
            body = [rng.choice(chars) for _ in range(rng.randint(*intent_chars))]
            body += [rng.choice(_FILLER) for _ in range(rng.randint(*filler_chars))]
            rng.shuffle(body)
            text = "".join(body)
            if text not in seen:
                seen.add(text)
                texts.append(text)
        train[intent], test[intent] = texts[:n_train], texts[n_train:]
    return train, test
