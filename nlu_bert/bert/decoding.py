"""Constrained decoding of tag scores: only valid BIO / BILOU sequences come out (numpy, every backend).

:func:`allowed` lists the valid starts, transitions and ends of a :class:`~nlu_bert.bert.tagging.TagSet`;
:func:`viterbi` finds the best valid sequence for token scores (log-probabilities of a softmax head, or the emissions
of a CRF with its learned transition scores); :func:`marginals` gives each token's probability of its tag under the
same constrained model (the confidence of an entity is the lowest of its tokens'). :class:`RowDecoder` does both
for one row at a time, as serving meets them, and skips them where no entity can be on the best path.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from nlu_bert.bert.tagging import TagSet

# a score low enough to rule a transition out without producing inf - inf = nan
BLOCKED = -1e4
# tag sets larger than this take the O(K) Viterbi step (measured: faster from about 25 labels in BILOU)
STRUCTURED_ABOVE = 96
# float32 rounding of the sums Viterbi compares, per token and unit of score size (a safety factor of 8 over the bound)
_ROUNDING = 8 * float(np.finfo(np.float32).eps)


class Constraints(NamedTuple):
    """Additive scores: 0 where allowed, :data:`BLOCKED` where not (start ``[K]``, transitions ``[K, K]``, end ``[K]``).

    ``tags`` is set by :func:`allowed` (no learned scores): :func:`viterbi` then takes an O(K) path per token that
    uses the BIO / BILOU structure instead of the dense O(K^2) one."""

    start: np.ndarray
    transitions: np.ndarray
    end: np.ndarray
    tags: Optional[TagSet] = None


def allowed(tags: TagSet) -> Constraints:
    """BIO: ``I-x`` only after ``B-x`` or ``I-x``. BILOU: after ``B-x`` / ``I-x`` only ``I-x`` / ``L-x``; ``I-x`` /
    ``L-x`` only after those; a sequence starts with O, B or U and ends with O, L or U."""
    k = len(tags)
    parts = [tags.split(t) for t in range(k)]
    start = np.zeros(k, dtype=np.float32)
    end = np.zeros(k, dtype=np.float32)
    trans = np.zeros((k, k), dtype=np.float32)
    inside = ("I", "L") if tags.bilou else ("I",)
    opening = ("B", "I") if tags.bilou else ()
    for j, (prefix, label) in enumerate(parts):
        if prefix in inside:
            start[j] = BLOCKED
        if prefix in opening:
            end[j] = BLOCKED
        for i, (prev_prefix, prev_label) in enumerate(parts):
            prev_open = prev_prefix in ("B", "I")
            if prefix in inside:
                ok = prev_open and prev_label == label
            elif tags.bilou:
                ok = prev_prefix not in opening
            else:
                ok = True
            if not ok:
                trans[i, j] = BLOCKED
    return Constraints(start, trans, end, tags)


def combine(
    constraints: Constraints,
    transitions: Optional[np.ndarray] = None,
    start: Optional[np.ndarray] = None,
    end: Optional[np.ndarray] = None,
) -> Constraints:
    """The constraints plus a CRF's learned transition / start / end scores."""
    return Constraints(
        constraints.start + (0 if start is None else np.asarray(start, dtype=np.float32)),
        constraints.transitions + (0 if transitions is None else np.asarray(transitions, dtype=np.float32)),
        constraints.end + (0 if end is None else np.asarray(end, dtype=np.float32)),
    )


def viterbi(scores: np.ndarray, lengths: np.ndarray, model: Constraints) -> np.ndarray:
    """The best sequence per row: ``scores`` ``[B, T, K]`` (row ``b`` uses its first ``lengths[b]`` tokens), returns
    tag ids ``[B, T]`` (``0`` = O beyond a row's length)."""
    scores = np.asarray(scores, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.int64)
    batch, steps, k = scores.shape
    paths = np.zeros((batch, steps), dtype=np.int64)
    if steps == 0 or batch == 0:
        return paths
    back = np.zeros((batch, steps, k), dtype=np.int64)
    best = scores[:, 0, :] + model.start
    # the dense step is a few numpy calls: faster for small tag sets, O(K^2) for large ones
    step_fn = _structured_step(model.tags) if model.tags is not None and k > STRUCTURED_ABOVE else None
    for t in range(1, steps):
        if step_fn is not None:
            step, back[:, t] = step_fn(best)
        else:
            candidates = best[:, :, None] + model.transitions[None, :, :]  # [B, from, to]
            back[:, t] = candidates.argmax(1)
            step = candidates.max(1)
        step = step + scores[:, t, :]
        alive = (t < lengths)[:, None]
        best = np.where(alive, step, best)  # finished rows keep their score
    best = best + model.end
    for b in range(batch):
        n = int(lengths[b])
        if n <= 0:
            continue
        tag = int(best[b].argmax())
        paths[b, n - 1] = tag
        for t in range(n - 1, 0, -1):
            tag = int(back[b, t, tag])
            paths[b, t - 1] = tag
    return paths


def _structured_step(tags: TagSet) -> Any:
    """One Viterbi step under the constraints alone, in O(K): every state that may follow a closed entity (O, B, U)
    takes the best closed state (for BIO: any state); ``I-x`` / ``L-x`` take the better of ``B-x`` and ``I-x``."""
    labels = range(len(tags.labels))
    b = np.array([tags.tag_id("B", i) for i in labels], dtype=np.int64)
    i_ = np.array([tags.tag_id("I", i) for i in labels], dtype=np.int64)
    if tags.bilou:
        last = np.array([tags.tag_id("L", i) for i in labels], dtype=np.int64)
        unit = np.array([tags.tag_id("U", i) for i in labels], dtype=np.int64)
        closed = np.concatenate([[0], last, unit])
        opening = np.concatenate([[0], b, unit])
        inside = (i_, last)
    else:
        closed = np.arange(len(tags))
        opening = np.concatenate([[0], b])
        inside = (i_,)

    def step(best: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        out = np.empty_like(best)
        back = np.empty(best.shape, dtype=np.int64)
        ends = best[:, closed]
        pick = ends.argmax(1)
        out[:, opening] = np.take_along_axis(ends, pick[:, None], 1)
        back[:, opening] = closed[pick][:, None]
        from_b, from_i = best[:, b], best[:, i_]
        cont = np.maximum(from_b, from_i)
        came = np.where(from_i > from_b, i_, b)
        for target in inside:
            out[:, target] = cont
            back[:, target] = came
        return out, back

    return step


def marginals(scores: np.ndarray, lengths: np.ndarray, model: Constraints) -> np.ndarray:
    """``P(tag_t = k)`` ``[B, T, K]`` under the constrained linear-chain model (0 beyond a row's length).

    The forward-backward algorithm in probability space, each step rescaled to sum 1 (the scales cancel in the
    marginals): a ``[B, K] x [K, K]`` product per token instead of a log-sum-exp over ``[B, K, K]`` (at 221 tags
    about 20x faster). Blocked transitions are exact zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    batch, steps, k = scores.shape
    out = np.zeros((batch, steps, k), dtype=np.float64)
    if batch == 0 or steps == 0:
        return out
    trans = np.exp(model.transitions - model.transitions.max()).astype(np.float64)
    emit = np.exp(scores - scores.max(-1, keepdims=True))
    start = np.exp(model.start - model.start.max())
    end = np.exp(model.end - model.end.max())
    alpha = np.zeros((batch, steps, k))
    beta = np.zeros((batch, steps, k))
    a = start * emit[:, 0]
    alpha[:, 0] = a / a.sum(-1, keepdims=True)
    for t in range(1, steps):
        a = np.einsum("bi,ij->bj", alpha[:, t - 1], trans) * emit[:, t]
        alpha[:, t] = a / np.maximum(a.sum(-1, keepdims=True), 1e-300)
    last = lengths - 1
    for b in range(batch):  # each row's backward pass starts at its own last token
        if lengths[b] > 0:
            beta[b, last[b]] = end / end.sum()
    for t in range(steps - 2, -1, -1):
        inside = (t < last)[:, None]
        nxt = np.einsum("ij,bj->bi", trans, emit[:, t + 1] * beta[:, t + 1])
        nxt = nxt / np.maximum(nxt.sum(-1, keepdims=True), 1e-300)
        beta[:, t] = np.where(inside, nxt, beta[:, t])
    joint = alpha * beta
    joint /= np.maximum(joint.sum(-1, keepdims=True), 1e-300)
    valid = np.arange(steps)[None, :] < lengths[:, None]
    out[valid] = joint[valid]
    return out


def decode(scores: np.ndarray, lengths: np.ndarray, model: Constraints) -> Tuple[np.ndarray, np.ndarray]:
    """(best valid tag ids ``[B, T]``, each token's marginal probability of its tag ``[B, T]``)."""
    paths = viterbi(scores, lengths, model)
    probs = marginals(scores, lengths, model)
    picked = np.take_along_axis(probs, paths[..., None], axis=-1)[..., 0]
    return paths, picked.astype(np.float32)


class RowDecoder:
    """:func:`decode` for one row at a time, as serving meets them (one message per request): the same paths as
    :func:`viterbi` (the same float32 sums and ties), the marginals of :func:`marginals` up to float64 rounding, with
    no padding, no batch bookkeeping and no work where no entity can be on the best path.

    That last check is exact: with ``d_t`` = the best non-O score minus the O score of token ``t``, ``tau`` = the
    most any transition other than O -> O scores above O -> O and ``sigma`` = the most a start and an end score above
    O's, every path with an entity scores at most ``sigma + max_t(d_t + 2 tau)`` above the all-O path (each non-O
    token touches at most two transitions). Where that is below 0 by more than float32 rounding can reach, Viterbi
    would return the all-O path, so it is returned without running."""

    def __init__(self, model: Constraints) -> None:
        self.model = model
        k = len(model.start)
        # the model's own arrays (float32 from allowed() and combine()): the sums of viterbi(), bit for bit
        self.start, self.end, trans = model.start, model.end, model.transitions
        self._to_from = np.ascontiguousarray(trans.T)  # [to, from]: the max over predecessors runs along rows
        self._rows = np.arange(k)
        self._step = _structured_step(model.tags) if model.tags is not None and k > STRUCTURED_ABOVE else None
        others = trans.astype(np.float64)
        others[0, 0] = -np.inf
        self._tau = max(0.0, float(others.max() - trans[0, 0])) if k > 1 else 0.0
        self._sigma = max(0.0, float((self.start - self.start[0]).max())) + max(
            0.0, float((self.end - self.end[0]).max())
        )
        usable = np.abs(trans[trans > BLOCKED / 2])
        self._trans_size = float(usable.max()) if usable.size else 0.0
        self._ends_size = float(np.abs(self.start[self.start > BLOCKED / 2]).max(initial=0.0)) + float(
            np.abs(self.end[self.end > BLOCKED / 2]).max(initial=0.0)
        )
        # forward-backward in probability space, as marginals()
        self._exp_trans = np.exp(model.transitions - model.transitions.max()).astype(np.float64)
        self._exp_start = np.exp(model.start - model.start.max())
        end = np.exp(model.end - model.end.max())
        self._exp_end = end / end.sum()

    def outside_wins(self, scores: np.ndarray) -> bool:
        """Whether the all-O path is provably the best (float32 ``scores`` ``[n, K]``, ``n >= 1``)."""
        n, k = scores.shape
        if k == 1:
            return True
        outside = scores[:, 0]
        ahead = (scores[:, 1:].max(1) - outside).max()
        size = n * (float(np.abs(scores).max()) + self._trans_size) + self._ends_size
        return float(ahead) + 2 * self._tau + self._sigma < -_ROUNDING * n * size

    def path(self, scores: np.ndarray) -> np.ndarray:
        """:func:`viterbi` of one row: float32 ``scores`` ``[n, K]`` -> tag ids ``[n]``."""
        n = len(scores)
        best = scores[0] + self.start
        back = np.empty((n, len(self.start)), dtype=np.intp)
        for t in range(1, n):
            if self._step is not None:
                step, back[t] = self._step(best[None])
                best = step[0] + scores[t]
                continue
            candidates = self._to_from + best  # [to, from]
            came = candidates.argmax(1)
            back[t] = came
            best = candidates[self._rows, came] + scores[t]
        tag = int((best + self.end).argmax())
        pointers = back.tolist()
        path = [0] * n
        path[n - 1] = tag
        for t in range(n - 1, 0, -1):
            tag = pointers[t][tag]
            path[t - 1] = tag
        return np.asarray(path, dtype=np.int64)

    def marginals(self, scores: np.ndarray) -> np.ndarray:
        """:func:`marginals` of one row ``[n, K]`` (``n >= 1``)."""
        emit = np.exp(np.asarray(scores, dtype=np.float64) - scores.max(-1, keepdims=True))
        n, k = emit.shape
        trans = self._exp_trans
        alpha = np.empty((n, k))
        beta = np.empty((n, k))
        a = self._exp_start * emit[0]
        alpha[0] = a / a.sum()
        for t in range(1, n):
            a = alpha[t - 1] @ trans
            a *= emit[t]
            alpha[t] = a / max(a.sum(), 1e-300)
        beta[n - 1] = self._exp_end
        for t in range(n - 2, -1, -1):
            b = trans @ (emit[t + 1] * beta[t + 1])
            beta[t] = b / max(b.sum(), 1e-300)
        joint = alpha * beta
        return joint / np.maximum(joint.sum(-1, keepdims=True), 1e-300)

    def decode(self, scores: np.ndarray, crf: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(best valid tag ids ``[n]``, each token's confidence in its tag ``[n]``): for a CRF its marginal, for a
        softmax tagger (``scores`` are log-probabilities) its probability. ``None`` for the confidences where the
        path is all O: nothing needs them."""
        scores = np.asarray(scores, dtype=np.float32)
        if not len(scores) or self.outside_wins(scores):
            return np.zeros(len(scores), dtype=np.int64), None
        path = self.path(scores)
        if not path.any():
            return path, None
        if crf:
            picked = self.marginals(scores)[np.arange(len(path)), path]
        else:
            picked = np.exp(scores[np.arange(len(path)), path])
        return path, picked.astype(np.float32)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
