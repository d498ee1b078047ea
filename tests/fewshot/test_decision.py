"""The fallback's decision, step by step: when it acts, the scores it turns into confidences, the ranking it gives."""

from __future__ import annotations

import math

import pytest

from nlu_bert.fewshot import decision


def _ranking(*pairs):
    return [{"name": n, "confidence": c} for n, c in pairs]


@pytest.mark.parametrize(
    "ranking, reason",
    [
        (_ranking(("a", 0.74), ("b", 0.1)), "low_confidence"),
        (_ranking(("a", 0.75), ("b", 0.55)), "small_margin"),
        (_ranking(("a", 0.75), ("b", 0.5)), None),  # exactly at a threshold does not count as below
        (_ranking(("a", 0.9)), None),
    ],
)
def test_consult(ranking, reason) -> None:
    got, facts = decision.consult(ranking, threshold=0.75, ambiguity_threshold=0.25)
    assert got == reason
    assert facts["previous"] == {"name": "a", "confidence": ranking[0]["confidence"]}
    second = ranking[1]["confidence"] if len(ranking) > 1 else 0.0
    assert facts["margin"] == pytest.approx(ranking[0]["confidence"] - second)


def test_ranking_of_a_classifier_without_a_ranking() -> None:
    assert decision.ranking_of({"name": "a", "confidence": 0.4}, None) == [{"name": "a", "confidence": 0.4}]
    assert decision.ranking_of({"name": None, "confidence": 0.0}, []) == []
    assert decision.ranking_of(None, _ranking(("b", 0.3))) == _ranking(("b", 0.3))


def test_scored_candidates_are_a_softmax_over_the_candidates_and_not_applicable() -> None:
    scored = decision.scored_candidates(["greet", "refund"], ["问候", "退款"], "不知道", [-1.0, -0.2, -3.0])
    assert [s["name"] for s in scored] == ["refund", "greet", "nlu_fallback"]
    assert [s["label"] for s in scored] == ["退款", "问候", "不知道"]
    assert sum(s["confidence"] for s in scored) == pytest.approx(1.0)
    assert scored[0]["confidence"] == pytest.approx(math.exp(-0.2) / sum(math.exp(v) for v in (-1.0, -0.2, -3.0)))
    assert all(type(s["confidence"]) is float for s in scored)


def test_nlu_fallback_is_in_the_ranking_only_when_it_is_the_answer() -> None:
    scored = decision.scored_candidates(["greet"], ["greet"], "不知道", [-0.1, -2.0])
    assert [r["name"] for r in decision.ranking_from(scored)] == ["greet"]
    scored = decision.scored_candidates(["greet"], ["greet"], "不知道", [-2.0, -0.1])
    assert [r["name"] for r in decision.ranking_from(scored)] == ["nlu_fallback", "greet"]
