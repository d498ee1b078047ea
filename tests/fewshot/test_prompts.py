"""Prompts in the few_shot_intent_sft format: rendering, token ids, example selection, episodes."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from nlu_bert.fewshot.prompts import (
    MAX_SHOT,
    MAX_WAY,
    TEMPLATES,
    ExampleBank,
    PromptEncoder,
    encode_episode,
    resolve_template,
    sample_episode,
    template_problem,
)
from nlu_bert.text import normalize_text

from gpt2_fixtures import NOT_APPLICABLE, synthetic_bot, tiny_tokenizer
from nlu_testing import TINY_BOT, shared_dataset

SHOTS = [("你好", "greet"), ("再见", "goodbye")]

EXPECTED_FEW_SHOT_ZH = (
    "小样本意图识别。如果不确定，输出 “不知道”。\n"
    "\n"
    "Examples:\n"
    "------------\n"
    "text: 你好\n"
    "intent: greet\n"
    "------------\n"
    "text: 再见\n"
    "intent: goodbye\n"
    "------------\n"
    "text: 早上好\n"
    "intent:"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    texts = [t for ts in TINY_BOT.values() for t in ts] + list(TINY_BOT) + ["早上好", "你好吗"]
    return tiny_tokenizer(texts, tmp_path_factory.mktemp("tok"))


def encoder_for(tokenizer, template: str = "few_shot_zh", max_prompt_tokens: int = 512, max_text_tokens: int = 64):
    return PromptEncoder(tokenizer, TEMPLATES[template], NOT_APPLICABLE, max_prompt_tokens, max_text_tokens)


def test_prompt_equals_the_hand_written_few_shot_intent_sft_prompt() -> None:
    assert TEMPLATES["few_shot_zh"].render(SHOTS, "早上好", NOT_APPLICABLE) == EXPECTED_FEW_SHOT_ZH


def test_backtick_and_plain_templates_render_like_the_data_set() -> None:
    assert TEMPLATES["few_shot_zh_backticks"].render(SHOTS, "早上好", "未知") == (
        "小样本意图识别。如果不确定，输出 “未知”。\n\nExamples:\n```\n"
        "text: 你好\nintent: greet\n```\ntext: 再见\nintent: goodbye\n```\ntext: 早上好\nintent:"
    )
    assert TEMPLATES["intent_zh"].render(SHOTS, "早上好", "未知") == (
        "意图识别。如果不确定，输出 “未知”。\n\nExamples:\n"
        "text: 你好\nintent: greet\n\ntext: 再见\nintent: goodbye\n\ntext: 早上好\nintent:"
    )


def test_prefix_plus_query_is_the_tokenization_of_the_whole_prompt(tokenizer) -> None:
    encoder = encoder_for(tokenizer)
    whole = tokenizer(EXPECTED_FEW_SHOT_ZH)["input_ids"]  # [CLS] prompt [SEP]
    assert encoder.prefix_ids(SHOTS) + encoder.query_ids("早上好") == whole
    assert encoder.encode(SHOTS, "早上好") == whole
    assert whole[0] == tokenizer.cls_token_id and whole[-1] == tokenizer.sep_token_id
    assert encoder.answer_ids("greet") == tokenizer("greet", add_special_tokens=False)["input_ids"] + [
        tokenizer.sep_token_id
    ]


def test_parts_match_the_whole_prompt_with_the_real_chinese_bert_vocabulary(tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = shared_dataset("bert_chinese_vocab", "raw", "vocab.txt")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    encoder = PromptEncoder(tok, TEMPLATES["few_shot_zh"], NOT_APPLICABLE, 512, 64)
    shots = [("我的订单到哪了?", "check_order"), ("Refund please 退款", "refund")]
    text = "帮我查一下 order 12345 的物流"
    whole = tok(TEMPLATES["few_shot_zh"].render(shots, text, NOT_APPLICABLE))["input_ids"]
    assert encoder.prefix_ids(shots) + encoder.query_ids(text) == whole


def test_user_text_is_normalised_and_cut_to_max_text_tokens(tokenizer) -> None:
    encoder = encoder_for(tokenizer, max_text_tokens=4)
    assert normalize_text("  你好\n\n  吗 ") == "你好 吗"
    assert encoder.query_ids("你好你好你好你好") == encoder.query_ids("你好你好")
    assert len(encoder.query_ids("你好" * 500)) == len(encoder.query_ids("你好你好"))


def test_fit_prefix_keeps_the_whole_sequence_within_max_prompt_tokens(tokenizer) -> None:
    encoder = encoder_for(tokenizer, max_prompt_tokens=120, max_text_tokens=16)
    groups = [(intent, texts[:3]) for intent, texts in TINY_BOT.items()]
    prefix, shots = encoder.fit_prefix(groups, priority=["refund", "greet", "goodbye", "check_order"])
    longest_query = len(encoder.query_ids("你" * 100))
    longest_answer = max(len(encoder.answer_ids(x)) for x in list(TINY_BOT) + [NOT_APPLICABLE])
    assert len(prefix) + longest_query + longest_answer <= 120
    shown = Counter(label for _, label in shots)
    assert shown["refund"] >= 1  # the top-priority label survives; shots go before labels do
    roomy, all_shots = encoder_for(tokenizer, max_prompt_tokens=2048).fit_prefix(groups)
    assert len(all_shots) == 12 and len(roomy) > len(prefix)


def test_interleaved_shots_in_prompt_order(tokenizer) -> None:
    _, shots = encoder_for(tokenizer).fit_prefix([("a", ["1", "2"]), ("b", ["3"])])
    assert shots == [("1", "a"), ("3", "b"), ("2", "a")]


def test_nearest_picks_the_most_typical_examples_independent_of_the_message() -> None:
    bank = ExampleBank({"order": ["查订单", "查我的订单", "订单状态", "今天天气怎么样"], "bye": ["再见"]})
    protos = bank.prototypes("order", 2)
    assert "今天天气怎么样" not in protos and len(protos) == 2
    assert bank.select("order", 2, "nearest", text="天气") == protos == bank.select("order", 2, "nearest", "x")


def test_nearest_to_message_and_fixed_random_selection() -> None:
    bank = ExampleBank({"order": ["查订单", "订单状态", "今天天气怎么样"]}, seed=3)
    assert bank.select("order", 1, "nearest_to_message", text="天气如何") == ["今天天气怎么样"]
    first = bank.select("order", 2, "random", text="a")
    assert (
        first
        == bank.select("order", 2, "random", text="b")
        == ExampleBank(bank.examples, seed=3).fixed_random("order", 2)
    )


def test_similar_intents_ranks_by_best_matching_example() -> None:
    bank = ExampleBank({k: list(v) for k, v in TINY_BOT.items()})
    assert bank.similar_intents("我要退款", 1) == ["refund"]
    assert bank.similar_intents("", 3) == [] and bank.similar_intents("你好", 0) == []


def test_example_bank_round_trips_through_json_and_dedupes() -> None:
    bank = ExampleBank({"a": ["x", " x ", "y"], "b": []}, seed=5)
    assert bank.examples == {"a": ["x", "y"]} and bank.intents == ["a"]
    again = ExampleBank.from_json(bank.to_json())
    assert again.examples == bank.examples and again.seed == 5


def test_episodes_follow_the_data_set_recipe() -> None:
    train, _ = synthetic_bot(n_train=8)
    bank = ExampleBank({f"{name}_{k}": texts for name, texts in train.items() for k in range(2)})  # 10 intents
    rng = random.Random(0)
    pairs = [(t, i) for i in bank.intents for t in bank.examples[i]]
    episodes = [sample_episode(bank, *rng.choice(pairs), rng) for _ in range(2000)]
    not_applicable = 0
    for ep in episodes:
        per_intent = Counter(i for _, i in ep.shots)
        assert 2 <= len(ep.intents) <= MAX_WAY and set(per_intent) == set(ep.intents)
        assert len(set(per_intent.values())) == 1 and 1 <= max(per_intent.values()) <= MAX_SHOT
        assert ep.text not in [t for t, _ in ep.shots]
        not_applicable += ep.answer is None
        assert ep.answer is None or ep.answer in ep.intents
    assert 0.07 <= not_applicable / len(episodes) <= 0.13


def test_encode_episode_points_at_the_right_option(tokenizer) -> None:
    encoder = encoder_for(tokenizer)
    bank = ExampleBank({k: list(v) for k, v in TINY_BOT.items()})
    labels = {i: i for i in bank.intents}
    rng = random.Random(1)
    for _ in range(50):
        ep = sample_episode(bank, "我要退款", "refund", rng, not_applicable_rate=0.5)
        item = encode_episode(encoder, ep, labels)
        expected = labels[ep.answer] if ep.answer else NOT_APPLICABLE
        assert item.options[item.correct] == encoder.answer_ids(expected)
        assert len(item.options) == len(ep.intents) + 1


@pytest.mark.parametrize(
    "template, problem",
    [
        ("nope", "a template name (few_shot_zh, few_shot_zh_backticks, intent_zh, few_shot_en)"),
        ({"prompt": "text: {text}\nintent:"}, "a `prompt` holding {examples} exactly once"),
        (
            {"prompt": "{examples} text: {text}"},
            "a `prompt` whose {examples} comes on a line before the line holding {text}",
        ),
        (
            {"prompt": "{examples}\n{text}", "sep": "-"},
            "a mapping with keys prompt, example, example_sep only (unknown: sep)",
        ),
        (3, "a template name or a mapping with a `prompt` string"),
    ],
)
def test_bad_templates_are_explained(template, problem) -> None:
    assert template_problem(template) == problem


def test_custom_template_mapping() -> None:
    custom = {
        "prompt": "意图?\n{examples}\nq: {text}\na:",
        "example": "\nq: {text}\na: {intent}\n",
        "example_sep": "##",
    }
    assert template_problem(custom) is None
    assert (
        resolve_template(custom).render(SHOTS, "早", "未知")
        == "意图?\nq: 你好\na: greet\n##\nq: 再见\na: goodbye\nq: 早\na:"
    )
