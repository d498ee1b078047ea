"""benchmarks/warm_start.py's pure parts: the per-intent cap and the choice of the intent to add."""

from __future__ import annotations

from collections import Counter

from rasa.shared.nlu.training_data.message import Message

from benchmarks.warm_start import cap_per_intent, markdown, pick_new_intent

from nlu_testing import TINY_BOT


def _messages(bot: dict) -> list:
    return [Message(data={"text": t, "intent": i}) for i, ts in bot.items() for t in ts]


def test_cap_keeps_at_most_cap_examples_of_each_intent_the_same_way_each_run() -> None:
    capped = cap_per_intent(_messages(TINY_BOT), 5, seed=1)
    assert Counter(m.get("intent") for m in capped) == {i: 5 for i in TINY_BOT}
    assert [m.get("text") for m in capped] == [m.get("text") for m in cap_per_intent(_messages(TINY_BOT), 5, seed=1)]
    assert len(cap_per_intent(_messages(TINY_BOT), 0, seed=1)) == sum(len(v) for v in TINY_BOT.values())


def test_the_intent_to_add_has_the_most_held_out_phrasings_but_is_not_the_largest() -> None:
    bot = {**TINY_BOT, "chat": [f"闲聊{i}" for i in range(40)]}
    test = _messages({"refund": ["退款吗", "退货吗"], "greet": ["你好吗"]})
    assert pick_new_intent(_messages(bot), test, shots=5) == "refund"


def test_the_table_names_every_model() -> None:
    rows = [
        {"model": "base", "new_recall": 0.0, "old_accuracy": 0.9, "old_taken_by_new": 0, "epochs_run": 9, "train_seconds": 60},
        {"model": "warm", "new_recall": 0.8, "old_accuracy": 0.9, "old_taken_by_new": 2, "epochs_run": 4, "train_seconds": 20},
    ]  # fmt: skip
    payload = {"new_intent": "refund", "dataset": "x", "shots": 5, "old_train_examples": 40, "cap_per_intent": 10,
               "held_out_phrasings": 7, "old_test_examples": 30, "rows": rows}  # fmt: skip
    table = markdown(payload)
    assert "| base | 0.000 | 0.9000 | 0 | 9 | 60 |" in table and "| warm | 0.800 |" in table
