"""Temperature scaling (Guo et al., 2017) and the expected calibration error with its reliability bins."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

# the fitted temperature stays in this range: a held-out split with no errors would otherwise push it towards 0
# (every answer 100% sure), one with mostly errors towards infinity
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.5, 10.0
ECE_BINS = 10


def nll(logits: np.ndarray, labels: Sequence[int], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    if len(labels) == 0:
        return 0.0
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)
    return float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """The temperature in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises the NLL of ``labels``."""
    bounds = (np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE))
    result = minimize_scalar(lambda t: nll(logits, labels, float(np.exp(t))), bounds=bounds, method="bounded")
    return float(np.exp(result.x))


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> List[Dict[str, Any]]:
    """Equal-width confidence bins: range, count, accuracy and mean confidence of the answers in each."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        m = index == b
        rows.append(
            {
                "low": round(float(edges[b]), 4),
                "high": round(float(edges[b + 1]), 4),
                "count": int(m.sum()),
                "accuracy": round(float(correct[m].mean()), 4) if m.any() else None,
                "confidence": round(float(confidence[m].mean()), 4) if m.any() else None,
            }
        )
    return rows


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ over bins of (share of answers in the bin) × |accuracy − mean confidence|."""
    total = len(confidence)
    if total == 0:
        return 0.0
    return float(
        sum(
            r["count"] / total * abs(r["accuracy"] - r["confidence"])
            for r in reliability_bins(confidence, correct, bins)
            if r["count"]
        )
    )


def cross_fitted_probabilities(logits: np.ndarray, labels: Sequence[int], folds: int = 2, seed: int = 0) -> np.ndarray:
    """Softmax of each held-out example at a temperature fitted on the *other* folds: an honest "after" for the
    ECE (a temperature evaluated on the examples it was fitted on looks better than it is)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    out = np.zeros_like(logits)
    for k in range(folds):
        test = order[k::folds]
        fit = np.setdiff1d(order, test)
        out[test] = softmax(logits[test] / fit_temperature(logits[fit], labels[fit]), axis=-1)
    return out
