"""The out-of-scope factor: how far a message's energy (logsumexp of its logits) falls into the low tail of the
energies of held-out in-scope messages.

A message the model has seen nothing like gets small logits for every intent, so a low energy (Liu et al., 2020,
"Energy-based out-of-distribution detection"); on the public sets it separated out-of-scope texts better than the
top probability, the distance to the training examples and TF-IDF similarity (docs/confidence.md). The factor
is 1 above the ``quantile`` of the held-out in-scope energies and falls linearly in that tail's rank to 0 at its
lowest energy: confidence × factor keeps in-scope confidences and sends out-of-scope messages under the
FallbackClassifier's threshold.
"""

from __future__ import annotations

import random
import string
from typing import Dict, List, Sequence, Tuple

import numpy as np

REFERENCE_POINTS = 21  # stored energies: the in-scope quantiles at 0, q/20, ..., q


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``T · logsumexp(logits / T)`` per row: higher = more like the training data."""
    return softmax_and_energy(logits, temperature)[1]


def softmax_and_energy(logits: np.ndarray, temperature: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """``softmax(logits / T)`` and :func:`energy` per row from one pass over the logits: the numbers of scipy's
    ``softmax`` and ``logsumexp`` (the same operations) without their per-call checks, which cost more than the
    arithmetic on one message's logits."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(-1, keepdims=True)
    shifted = np.exp(scaled - top)
    total = shifted.sum(-1, keepdims=True)
    return shifted / total, temperature * (np.log(total[..., 0]) + top[..., 0])


def reference(held_out_energies: np.ndarray, quantile: float) -> List[float]:
    """The energies of the in-scope tail: quantiles 0, q/20, ..., q of the held-out in-scope energies."""
    levels = np.linspace(0.0, quantile, REFERENCE_POINTS)
    return [float(x) for x in np.quantile(np.asarray(held_out_energies, dtype=np.float64), levels)]


def in_scope_factor(energies: np.ndarray, ref: Sequence[float]) -> np.ndarray:
    """In [0, 1]: 0 at or below the lowest held-out energy, 1 at or above the reference quantile."""
    energies = np.asarray(energies, dtype=np.float64)
    if not ref:
        return np.ones(len(energies))
    xs = np.maximum.accumulate(np.asarray(ref, dtype=np.float64))
    return np.interp(energies, xs, np.linspace(0.0, 1.0, len(xs)), left=0.0, right=1.0)


def synthetic_negatives(texts: Sequence[str], count: int = 50, seed: int = 0) -> Dict[str, List[str]]:
    """Messages no bot should recognise: ``shuffled`` characters of its own examples and Latin keyboard ``mash``
    (``count`` of each). Used to check the out-of-scope factor at train time."""
    rng = random.Random(seed)
    pool = [t for t in texts if len(t) >= 4]
    shuffled = ["".join(rng.sample(t, len(t))) for t in (rng.choice(pool) for _ in range(count))] if pool else []
    letters = string.ascii_lowercase
    mash = ["".join(rng.choice(letters) for _ in range(rng.randint(4, 12))) for _ in range(count)]
    return {"shuffled": shuffled, "keyboard_mash": mash}
