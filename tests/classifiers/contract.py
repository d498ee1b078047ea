"""Contract checks every intent classifier of this package must pass (STYLE.md, anchor 11)."""

from __future__ import annotations

from typing import Iterable, Optional

from rasa.shared.nlu.training_data.message import Message


def assert_intent_contract(message: Message, ranking_length: int, allowed: Optional[Iterable[str]] = None) -> None:
    intent = message.get("intent")
    ranking = message.get("intent_ranking")
    assert isinstance(intent, dict) and set(intent) >= {"name", "confidence"}, intent
    assert isinstance(ranking, list) and 0 < len(ranking) <= ranking_length, ranking
    confidences = [r["confidence"] for r in ranking]
    assert all(type(c) is float for c in confidences), "confidences must be Python floats"
    assert all(0.0 <= c <= 1.0 for c in confidences), confidences
    assert confidences == sorted(confidences, reverse=True), "ranking must be sorted"
    assert sum(confidences) <= 1.0 + 1e-6
    assert len({r["name"] for r in ranking}) == len(ranking), "ranking names must be unique"
    assert intent["name"] == ranking[0]["name"] and abs(intent["confidence"] - ranking[0]["confidence"]) < 1e-12
    if allowed is not None:
        allowed = set(allowed)
        assert {r["name"] for r in ranking} <= allowed, ranking
    # the message's output (what /model/parse returns) carries both keys
    out = message.as_dict(only_output_properties=True)
    assert "intent" in out and "intent_ranking" in out
