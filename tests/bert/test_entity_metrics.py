"""Exact-span entity scores (nlu_bert.bert.entity_metrics)."""

from __future__ import annotations

import pytest

from nlu_bert.bert.entity_metrics import entity_scores, report_lines


def e(start: int, end: int, entity: str, **extra: str) -> dict:
    return {"start": start, "end": end, "entity": entity, **extra}


def test_only_exact_spans_of_the_right_type_count() -> None:
    gold = [[e(0, 2, "city"), e(3, 5, "city")], [e(1, 4, "dish")], []]
    predicted = [
        [e(0, 2, "city"), e(3, 4, "city")],  # one exact, one too short
        [e(1, 4, "city")],  # right span, wrong type
        [e(0, 1, "dish")],  # nothing to find
    ]
    scores = entity_scores(gold, predicted)
    assert (scores["support"], scores["predicted"]) == (3, 4)
    assert scores["precision"] == pytest.approx(1 / 4)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert scores["per_entity"]["city"] == {"precision": 1 / 3, "recall": 1 / 2, "f1": pytest.approx(0.4), "support": 2}
    assert scores["per_entity"]["dish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_duplicates_count_once_and_other_extractors_can_be_left_out() -> None:
    gold = [[e(0, 2, "city")]]
    predicted = [[e(0, 2, "city", extractor="A"), e(0, 2, "city", extractor="B"), e(3, 4, "x", extractor="B")]]
    assert entity_scores(gold, predicted)["precision"] == pytest.approx(1 / 2)
    assert entity_scores(gold, predicted, extractor="A")["f1"] == 1.0


def test_roles_and_groups_count_when_asked() -> None:
    gold = [[e(0, 2, "city", role="from")]]
    predicted = [[e(0, 2, "city", role="to")]]
    assert entity_scores(gold, predicted)["f1"] == 1.0
    assert entity_scores(gold, predicted, with_role_group=True)["f1"] == 0.0


def test_no_entities_anywhere_scores_zero_without_dividing_by_zero() -> None:
    scores = entity_scores([[], []], [[], []])
    assert scores["f1"] == 0.0 and scores["per_entity"] == {}
    with pytest.raises(ValueError, match="gold has 1 examples but predicted has 2"):
        entity_scores([[]], [[], []])


def test_report_lists_entities_by_support() -> None:
    scores = entity_scores([[e(0, 1, "a"), e(1, 2, "b"), e(2, 3, "b")]], [[e(1, 2, "b")]])
    lines = report_lines(scores)
    assert lines[1].startswith("b ") and lines[2].startswith("a ") and lines[-1].startswith("micro")
