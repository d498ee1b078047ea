"""benchmarks/confidence.py's pure parts: the small-bot cut and the out-of-scope sets."""

from __future__ import annotations

from rasa.shared.nlu.training_data.message import Message

from benchmarks.confidence import baselines_table, small_bot
from benchmarks.oos_sets import CHITCHAT, SPEC

from nlu_testing import TINY_BOT


def test_small_bot_keeps_some_intents_and_makes_the_others_out_of_scope() -> None:
    train = [Message(data={"text": t, "intent": i}) for i, ts in TINY_BOT.items() for t in ts]
    test = [Message(data={"text": f"{t}吗", "intent": i}) for i, ts in TINY_BOT.items() for t in ts[:3]]
    small, kept_test, others = small_bot(train, test, intents=2, per_intent=5)
    kept = {m.get("intent") for m in small}
    assert len(kept) == 2 and len(small) == 10
    assert {m.get("intent") for m in kept_test} == kept and len(others) == 6
    assert small_bot(train, test, 2, 5)[0] == small  # seeded: the same cut each run


def test_chitchat_leaves_out_the_domains_a_set_covers() -> None:
    for spec in SPEC.values():
        assert set(spec["covers"]) <= set(CHITCHAT)  # type: ignore[arg-type]


def test_small_bot_seed_cuts_another_bot() -> None:
    train = [Message(data={"text": f"{t}{k}", "intent": i}) for i, ts in TINY_BOT.items() for t in ts for k in "ab"]
    cuts = {tuple(m.get("text") for m in small_bot(train, [], 2, 3, seed)[0]) for seed in range(4)}
    assert len(cuts) > 1
    assert small_bot(train, [], 2, 3, 1)[0] == small_bot(train, [], 2, 3, 1)[0]


def test_baselines_table_lists_only_rows_that_have_them() -> None:
    rows = {
        "a:10x15": {"accuracy": 0.9, "baselines": {"diet": {"accuracy": 0.8}, "logreg": {"accuracy": 0.85}}},
        "b": {"accuracy": 0.7},
    }
    table = baselines_table(rows)
    assert "| a:10x15 | 0.9 | 0.8 | 0.85 |" in table and "| b |" not in table
    assert baselines_table({"b": {"accuracy": 0.7}}) == ""
