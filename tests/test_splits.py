"""The one stratified split (BERT's validation split, the fallback's fine-tuning split, the converters' test split)."""

from __future__ import annotations

from collections import Counter
from typing import Dict, List

import pytest

from nlu_bert.splits import stratified_split


def _labels(counts: Dict[str, int]) -> List[str]:
    return [label for label, n in counts.items() for _ in range(n)]


@pytest.mark.parametrize(
    "counts, fraction, held_out",
    [
        ({"a": 10, "b": 20, "c": 3}, 0.2, {"a": 2, "b": 4, "c": 1}),
        ({"a": 10, "b": 1, "c": 2}, 0.5, {"a": 5}),  # classes of fewer than 3 examples are never held out
        ({"a": 4}, 0.9, {"a": 2}),  # two examples of each class stay on the training side
        ({"a": 30}, 0.01, {"a": 1}),  # at least one when the fraction is above 0
        ({"a": 30, "b": 3}, 0.0, {}),
    ],
)
def test_sizes_per_class(counts: Dict[str, int], fraction: float, held_out: Dict[str, int]) -> None:
    labels = _labels(counts)
    kept, held = stratified_split(labels, fraction, seed=1)
    assert dict(Counter(labels[i] for i in held)) == held_out
    assert sorted(kept + held) == list(range(len(labels))) and kept == sorted(kept) and held == sorted(held)


def test_the_same_seed_gives_the_same_split_and_another_one_another() -> None:
    labels = _labels({"a": 30, "b": 30})
    assert stratified_split(labels, 0.3, 7) == stratified_split(labels, 0.3, 7)
    assert stratified_split(labels, 0.3, 7) != stratified_split(labels, 0.3, 8)
    assert stratified_split(labels, 0.3, "7:split") != stratified_split(labels, 0.3, 7)
