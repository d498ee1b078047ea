"""The scoring engine: every fast path equals the one-candidate-at-a-time definition."""

from __future__ import annotations

from typing import List

import pytest
from scipy.special import softmax

from nlu_bert.fewshot.prompts import ExampleBank, PromptEncoder
from nlu_bert.fewshot.scoring import MODES, CandidateScorer, PrefixCache

from gpt2_fixtures import (
    LABELS,
    NOT_APPLICABLE,
    one_thread,  # noqa: F401  (autouse: one torch thread)
)


def prompt_parts(encoder: PromptEncoder, bot, intents: List[str], n_shot: int = 2):
    bank = ExampleBank(bot[0])
    prefix, _ = encoder.fit_prefix([(LABELS[i], bank.prototypes(i, n_shot)) for i in intents])
    return prefix


def answers(encoder: PromptEncoder, labels: List[str]) -> List[List[int]]:
    return [encoder.answer_ids(lbl) for lbl in labels] + [encoder.answer_ids(NOT_APPLICABLE)]


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize(
    "labels",
    [
        ["天气", "音乐", "打车", "点餐", "闹钟"],  # same lengths
        ["weather", "音乐", "x", "alarm_clock"],  # different lengths, Latin word pieces
        ["天"],  # a single-token label (its answer is one token + [SEP])
    ],
)
def test_every_mode_equals_one_candidate_at_a_time(model, encoder, bot, labels, anchored) -> None:
    prefix = prompt_parts(encoder, bot, ["weather", "music", "taxi"])
    query = encoder.query_ids("明天下雨吗")
    opts = answers(encoder, labels)
    anchor = encoder.prefix_budget() if anchored else None
    reference = CandidateScorer(model, 0, anchor).score(prefix, query, opts, mode="naive").log_likelihoods
    scorer = CandidateScorer(model, cache_size=4, position_anchor=anchor)
    for mode in MODES:
        got = scorer.score(prefix, query, opts, mode=mode).log_likelihoods
        assert got == pytest.approx(reference, abs=1e-4), mode
    again = scorer.score(prefix, query, opts, mode="cached")  # now from the LRU
    assert again.cache_hit and again.log_likelihoods == pytest.approx(reference, abs=1e-4)


def test_scores_are_huggingface_loss_on_the_answer_tokens(model, encoder, bot) -> None:
    """The off-by-one check: against transformers' own shifted causal-LM loss."""
    import torch

    prefix = prompt_parts(encoder, bot, ["food", "alarm"])
    query = encoder.query_ids("闹钟定在早上七点")
    opts = answers(encoder, ["点餐", "闹钟"])
    got = CandidateScorer(model, cache_size=2).score(prefix, query, opts).log_likelihoods
    for answer, value in zip(opts, got):
        ids = torch.tensor([prefix + query + answer])
        labels = torch.tensor([[-100] * (len(prefix) + len(query)) + answer])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        assert value == pytest.approx(-float(loss), abs=1e-4)


def test_the_cache_is_reused_across_messages_and_never_changed(model, encoder, bot) -> None:
    scorer = CandidateScorer(model, cache_size=2)
    prefix = prompt_parts(encoder, bot, ["weather", "music"])
    opts = answers(encoder, ["天气", "音乐"])
    first = scorer.score(prefix, encoder.query_ids("下雪了"), opts)
    second = scorer.score(prefix, encoder.query_ids("放首歌"), opts)
    third = scorer.score(prefix, encoder.query_ids("下雪了"), opts)
    assert (first.cache_hit, second.cache_hit, third.cache_hit) == (False, True, True)
    assert third.log_likelihoods == first.log_likelihoods  # the cached tensors were not extended in place
    fresh = CandidateScorer(model, cache_size=0).score(prefix, encoder.query_ids("放首歌"), opts, mode="naive")
    assert second.log_likelihoods == pytest.approx(fresh.log_likelihoods, abs=1e-4)


def test_prefix_cache_is_a_bounded_lru() -> None:
    cache = PrefixCache(2)
    cache.put((1,), "a")
    cache.put((2,), "b")
    assert cache.get((1,)) == "a"  # (1,) is now the most recent
    cache.put((3,), "c")
    assert cache.get((2,)) is None and cache.get((1,)) == "a" and len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 1)
    off = PrefixCache(0)
    off.put((1,), "a")
    assert len(off) == 0


def test_bad_arguments_are_refused(model, encoder) -> None:
    scorer = CandidateScorer(model)
    with pytest.raises(ValueError, match="mode must be one of cached, packed, shared_kv, naive, got 'fast'"):
        scorer.score([1], [2], [[3]], mode="fast")
    with pytest.raises(ValueError, match="every answer needs at least one token"):
        scorer.score([1], [2], [[]])


def test_bf16_scores_stay_close_to_fp32(model, encoder, bot) -> None:
    import copy

    import torch

    prefix = prompt_parts(encoder, bot, ["weather", "music", "taxi", "food"])
    query = encoder.query_ids("今天刮风吗")
    opts = answers(encoder, list(LABELS.values()))
    fp32 = CandidateScorer(model).score(prefix, query, opts).log_likelihoods
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    bf16 = CandidateScorer(bf16_model).score(prefix, query, opts).log_likelihoods
    assert bf16 == pytest.approx(fp32, abs=0.05)
    assert softmax(bf16) == pytest.approx(softmax(fp32), abs=0.01)
