"""The shared steps: renaming, label maps, dedup, conflicts, stratified split, per-intent floors and caps."""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional

import pytest

from nlu_bert.converters import BuildOptions, ConversionError, Example, SourceData, build_dataset
from nlu_bert.converters.pipeline import stratified_split


def source(*rows: tuple) -> SourceData:
    """rows of (text, intent) or (text, intent, split)."""
    return SourceData(
        examples=[Example(r[0], r[1], split=r[2] if len(r) > 2 else "train") for r in rows], rows_read=len(rows)
    )


def sizes(dataset) -> Dict[str, Dict[str, int]]:
    return {split: dict(Counter(e.intent for e in found)) for split, found in dataset.splits.items()}


def test_duplicates_dropped_within_a_split_but_kept_across_official_splits() -> None:
    dataset = build_dataset(
        source(("你好", "greet"), ("你好", "greet"), ("  你好 ", "greet"), ("你好", "greet", "test"))
    )

    assert sizes(dataset) == {"train": {"greet": 1}, "test": {"greet": 1}}
    assert dataset.report.dropped == Counter({"duplicate (same text and intent in one split)": 2})
    assert dataset.report.train_test_overlap == 1


def test_conflicting_texts_are_reported_and_optionally_dropped() -> None:
    rows = (("取消", "music.pause"), ("取消", "navigation.cancel"), ("播放音乐", "music.play"))

    kept = build_dataset(source(*rows))
    dropped = build_dataset(source(*rows), BuildOptions(drop_conflicts=True))

    assert kept.report.conflicts == {"取消": ["music.pause", "navigation.cancel"]}
    assert sizes(kept) == {"train": {"music.pause": 1, "navigation.cancel": 1, "music.play": 1}}
    assert sizes(dropped) == {"train": {"music.play": 1}}
    assert dropped.report.dropped["text under more than one intent (--drop-conflicts)"] == 2


@pytest.mark.parametrize(
    "label_map, expected, dropped",
    [
        ({"好评": "positive"}, {"positive": 1, "差评": 1}, 0),
        ({"好评": "positive", "差评": None}, {"positive": 1}, 1),
        ({"差评": ""}, {"好评": 1}, 1),
    ],
)
def test_label_map(label_map: Dict[str, Optional[str]], expected: Dict[str, int], dropped: int) -> None:
    dataset = build_dataset(source(("很好", "好评"), ("很差", "差评")), BuildOptions(label_map=label_map))

    assert sizes(dataset) == {"train": expected}
    assert dataset.report.dropped["label mapped to nothing by --label-map"] == dropped


def test_labels_that_collide_after_renaming_are_an_error_naming_both() -> None:
    with pytest.raises(ConversionError, match=r"intents 'a b', 'a/b' would all become 'a_b'; give them distinct names"):
        build_dataset(source(("x", "a b"), ("y", "a/b")))


def test_renamed_intents_are_reported() -> None:
    dataset = build_dataset(source(("x", "肯定(好的)"), ("y", "greet")))

    assert dataset.report.renamed_intents == {"肯定(好的)": "肯定_好的"}
    assert sizes(dataset) == {"train": {"肯定_好的": 1, "greet": 1}}


def _pool(counts: Dict[str, int]) -> List[Example]:
    return [Example(f"{intent}{i}", intent) for intent, n in counts.items() for i in range(n)]


@pytest.mark.parametrize(
    "counts, fraction, test_sizes",
    [
        ({"a": 10, "b": 20, "c": 3}, 0.2, {"a": 2, "b": 4, "c": 1}),
        ({"a": 10, "b": 1, "c": 2}, 0.5, {"a": 5}),  # intents of fewer than 3 examples stay whole in train
        ({"a": 4}, 0.9, {"a": 2}),  # two examples of each intent stay in train
    ],
)
def test_stratified_split_sizes(counts: Dict[str, int], fraction: float, test_sizes: Dict[str, int]) -> None:
    split = stratified_split(_pool(counts), fraction, seed=1)

    assert dict(Counter(e.intent for e in split if e.split == "test")) == test_sizes


def test_stratified_split_is_seeded() -> None:
    pool = _pool({"a": 30, "b": 30})
    test_texts = lambda seed: {e.text for e in stratified_split(pool, 0.3, seed) if e.split == "test"}  # noqa: E731

    assert test_texts(7) == test_texts(7)
    assert test_texts(7) != test_texts(8)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_stratified_split_rejects_fractions_outside_0_1(fraction: float) -> None:
    with pytest.raises(ConversionError, match="--test-fraction must be between 0 and 1"):
        stratified_split(_pool({"a": 3}), fraction, seed=1)


def test_test_fraction_pools_official_splits_after_dedup() -> None:
    rows = [(f"a{i}", "a", "train") for i in range(8)] + [("a0", "a", "test"), ("a8", "a", "dev"), ("a9", "a", "test")]

    dataset = build_dataset(source(*rows), BuildOptions(test_fraction=0.2))

    assert sizes(dataset) == {"train": {"a": 8}, "test": {"a": 2}}
    assert dataset.report.dropped["duplicate (same text and intent in one split)"] == 1


@pytest.mark.parametrize(
    "options, expected, reason, dropped",
    [
        (
            BuildOptions(min_per_intent=3),
            {"train": {"a": 5, "b": 3}, "test": {"a": 1}},
            "intent has fewer than 3 training examples (--min-per-intent)",
            2,
        ),
        (
            BuildOptions(max_per_intent=2),
            {"train": {"a": 2, "b": 2, "c": 1}, "test": {"a": 1, "c": 1}},
            "over 2 training examples per intent (--max-per-intent)",
            4,
        ),
    ],
)
def test_min_and_max_per_intent_count_training_examples(
    options: BuildOptions, expected: Dict[str, Dict[str, int]], reason: str, dropped: int
) -> None:
    rows = (
        [(f"a{i}", "a") for i in range(5)]
        + [(f"b{i}", "b") for i in range(3)]
        + [("c0", "c")]
        + [("a-test", "a", "test"), ("c-test", "c", "test")]
    )

    dataset = build_dataset(source(*rows), options)

    assert sizes(dataset) == expected
    assert dataset.report.dropped == Counter({reason: dropped})
