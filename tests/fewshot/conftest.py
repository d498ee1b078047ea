"""Tiny few-shot models and prompts shared by the tests of nlu_bert.fewshot (built once per test module)."""

from __future__ import annotations

from typing import Any

import pytest

from nlu_bert.fewshot.prompts import TEMPLATES, PromptEncoder

from gpt2_fixtures import LABELS, NOT_APPLICABLE, synthetic_bot, tiny_gpt2, tiny_tokenizer


@pytest.fixture(scope="module")
def bot():
    return synthetic_bot()


@pytest.fixture(scope="module")
def tokenizer(bot, tmp_path_factory: pytest.TempPathFactory):
    train, _ = bot
    texts = [t for ts in train.values() for t in ts] + list(train) + list(LABELS.values())
    return tiny_tokenizer(texts, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def encoder(tokenizer) -> PromptEncoder:
    return PromptEncoder(tokenizer, TEMPLATES["few_shot_zh"], NOT_APPLICABLE, 512, 32, labels=list(LABELS.values()))


@pytest.fixture(scope="module")
def model(tokenizer) -> Any:
    return tiny_gpt2(len(tokenizer), seed=1)
