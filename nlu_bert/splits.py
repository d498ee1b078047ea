"""The one stratified split of nlu-bert: BERT's validation split, the few-shot fallback's fine-tuning validation
split and the converters' ``--test-fraction`` all hold out examples by this rule."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, Hashable, List, Sequence, Tuple, Union

MIN_CLASS_SIZE = 3  # smaller classes are never held out
MIN_KEPT = 2  # examples of each class that always stay on the training side


def stratified_split(labels: Sequence[Hashable], fraction: float, seed: Union[int, str]) -> Tuple[List[int], List[int]]:
    """Indices ``(kept, held_out)``, both sorted: of each class, ``round(n × fraction)`` examples are held out, at
    least one when ``fraction`` > 0 and at most ``n - 2``; classes of fewer than 3 examples are never held out.

    The classes are visited in sorted order, each one's indices (in data order) shuffled by one
    ``random.Random(seed)``: the same labels, fraction and seed give the same split.
    """
    rng = random.Random(seed)
    by_label: Dict[Hashable, List[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    kept: List[int] = []
    held: List[int] = []
    for label in sorted(by_label):
        indices = by_label[label][:]
        rng.shuffle(indices)
        n_held = 0
        if fraction > 0 and len(indices) >= MIN_CLASS_SIZE:
            n_held = max(1, min(int(round(len(indices) * fraction)), len(indices) - MIN_KEPT))
        held.extend(indices[:n_held])
        kept.extend(indices[n_held:])
    return sorted(kept), sorted(held)
