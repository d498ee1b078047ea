"""Scoring candidate intents with a causal LM (torch).

A candidate's score is the mean log-probability of its answer tokens (``label [SEP]``)
after the prompt: the logits at position ``i`` predict token ``i + 1``, so answer token
``j`` is read from the logits of the token before it (the prompt's final ``[SEP]`` for
``j = 0``).

Four ways to compute the same numbers (tests hold them equal to 1e-4):

``naive``      one full forward pass per candidate (the definition; the benchmark's baseline)
``shared_kv``  the prompt once, its key/value cache copied to K rows, the answers as a batch
``packed``     prompt and all answers in one pass: answers are packed after the prompt with
               a tree attention mask (each answer sees the prompt and itself) and their own
               position ids
``cached``     like ``packed``, but the few-shot prefix's key/value cache comes from an LRU
               keyed by the exact prefix token ids, so a message costs only its own line
               and the answers (the component's mode)

Position ids: a pretrained model reads positions 0, 1, 2, ... as it was trained. A scratch
model is trained with a ``position_anchor``: the few-shot prefix ends right before position
``anchor``, so the user's line always starts at the same absolute position whatever the
number of examples. A small model learns to find the message by position in a few hundred
steps; with positions from 0 it has to find it by content among the examples and, in our
runs, did not learn to within 1,200 steps. The anchor is fixed per model, so the cache stays
valid.

torch is imported lazily (this module is imported by the component at process time only).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Optional, Sequence, Tuple

from nlu_bert.hardware import cpu_has_native_bf16

if TYPE_CHECKING:  # pragma: no cover
    import torch

MODES = ("cached", "packed", "shared_kv", "naive")
PRECISIONS = ("fp32", "bf16")


class PrefixCache:
    """A bounded LRU of key/value caches (legacy tuples of tensors), keyed by prefix token ids."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: "OrderedDict[Hashable, Any]" = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.max_entries <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Scores:
    """Mean log-likelihood per answer, and whether the prefix came from the cache."""

    log_likelihoods: List[float]
    cache_hit: bool = False
    seconds: float = 0.0


def precision_dtype(precision: str) -> "torch.dtype":
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32


def resolve_precision(setting: str, device: Any) -> str:
    """``auto``: bf16 where the hardware computes it natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs
    with bf16), else fp32. bf16 halves the model's memory and was 1.5x faster on the CPUs here."""
    if setting != "auto":
        return setting
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


class ScorerBase:
    """What every scorer shares: the argument checks, the prefix cache, one message at a time, timing.
    Subclasses compute the numbers in ``_score``."""

    modes: Tuple[str, ...] = MODES
    modes_note = ""

    def __init__(self, cache_size: int, position_anchor: Optional[int]) -> None:
        self.cache = PrefixCache(cache_size)
        self.position_anchor = position_anchor
        self._lock = threading.Lock()

    def score(
        self,
        prefix: Sequence[int],
        query: Sequence[int],
        answers: Sequence[Sequence[int]],
        mode: str = "cached",
    ) -> Scores:
        """Mean log-likelihood of every answer after ``prefix + query`` (answers end with [SEP])."""
        if mode not in self.modes:
            raise ValueError(f"mode must be one of {', '.join(self.modes)}{self.modes_note}, got {mode!r}")
        if not answers or any(len(a) == 0 for a in answers):
            raise ValueError("every answer needs at least one token")
        started = time.perf_counter()
        start = first_position(len(prefix), self.position_anchor)
        with self._lock:
            values, hit = self._score(list(prefix), list(query), answers, mode, start)
        return Scores(values, cache_hit=hit, seconds=time.perf_counter() - started)

    def _score(
        self, prefix: List[int], query: List[int], answers: Sequence[Sequence[int]], mode: str, start: int
    ) -> Tuple[List[float], bool]:  # pragma: no cover - abstract
        raise NotImplementedError


class CandidateScorer(ScorerBase):
    """Scores answers after a prompt with a causal LM (``model`` must be in eval mode)."""

    def __init__(self, model: Any, cache_size: int = 16, position_anchor: Optional[int] = None) -> None:
        super().__init__(cache_size, position_anchor)
        self.model = model
        params = inspect.signature(model.forward).parameters
        self._can_keep_logits = "logits_to_keep" in params

    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> "torch.dtype":
        return next(self.model.parameters()).dtype

    def _score(
        self, prefix: List[int], query: List[int], answers: Sequence[Sequence[int]], mode: str, start: int
    ) -> Tuple[List[float], bool]:
        import torch

        with torch.inference_mode():
            if mode == "naive":
                return [self._naive_one(prefix + query, a, start) for a in answers], False
            if mode == "shared_kv":
                return self._shared_kv(prefix + query, answers, start), False
            if mode == "packed":
                return self._packed(None, start, prefix + query, answers), False
            past, hit = self._prefix_cache(prefix, start)
            return self._packed(past, start + len(prefix), query, answers), hit

    # -- the four ways ------------------------------------------------------------------------
    def _positions(self, start: int, n: int, rows: int = 1) -> "torch.Tensor":
        import torch

        return torch.arange(start, start + n, device=self.device)[None].expand(rows, n)

    def _naive_one(self, prompt: List[int], answer: Sequence[int], start: int) -> float:
        import torch

        ids = torch.tensor([prompt + list(answer)], device=self.device)
        logits = self.model(input_ids=ids, position_ids=self._positions(start, ids.shape[1]), use_cache=False)
        logits = logits.logits[0].float()
        # logits[i] predicts ids[i + 1]: the answer's tokens are read from the positions before them
        rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(answer)]
        logp = torch.log_softmax(rows, dim=-1)
        target = torch.tensor(list(answer), device=self.device)
        return float(logp.gather(1, target[:, None]).mean())

    def _shared_kv(self, prompt: List[int], answers: Sequence[Sequence[int]], start: int) -> List[float]:
        import torch

        out = self.model(
            input_ids=torch.tensor([prompt], device=self.device),
            position_ids=self._positions(start, len(prompt)),
            use_cache=True,
            **self._keep(1),
        )
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        bodies = [list(a[:-1]) for a in answers]
        longest = max(len(b) for b in bodies)
        if longest == 0:
            return [float(first[a[0]]) for a in answers]
        k = len(answers)
        legacy = _to_legacy(out.past_key_values)
        expanded = tuple((key.expand(k, -1, -1, -1), value.expand(k, -1, -1, -1)) for key, value in legacy)
        ids = torch.tensor([b + [0] * (longest - len(b)) for b in bodies], device=self.device)
        mask = torch.tensor(
            [[1] * len(prompt) + [1] * len(b) + [0] * (longest - len(b)) for b in bodies], device=self.device
        )
        logits = self.model(
            input_ids=ids,
            past_key_values=_from_legacy(expanded),
            attention_mask=mask,
            position_ids=self._positions(start + len(prompt), longest, rows=k),
            use_cache=True,
        ).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        values = []
        for row, answer in enumerate(answers):
            total = float(first[answer[0]]) + sum(float(logp[row, j, answer[j + 1]]) for j in range(len(answer) - 1))
            values.append(total / len(answer))
        return values

    def _prefix_cache(self, prefix: Sequence[int], start: int) -> Tuple[Any, bool]:
        import torch

        key = (start, *prefix)
        legacy = self.cache.get(key)
        hit = legacy is not None
        if not hit:
            out = self.model(
                input_ids=torch.tensor([list(prefix)], device=self.device),
                position_ids=self._positions(start, len(prefix)),
                use_cache=True,
                **self._keep(1),
            )
            legacy = _to_legacy(out.past_key_values)
            self.cache.put(key, legacy)
        return _from_legacy(legacy), hit

    def _packed(self, past: Any, first: int, shared: List[int], answers: Sequence[Sequence[int]]) -> List[float]:
        """``shared`` then every answer's tokens but the last, in one pass with a tree mask.

        ``past`` is the prefix's key/value cache (or None); ``first`` the position of ``shared[0]``.
        """
        import torch

        past_len = past.get_seq_length() if past is not None else 0
        seq = list(shared)
        positions = list(range(first, first + len(shared)))
        owner = [-1] * len(shared)
        starts = []
        for k, answer in enumerate(answers):
            body = list(answer[:-1])
            starts.append(len(seq))
            seq += body
            positions += range(first + len(shared), first + len(shared) + len(body))
            owner += [k] * len(body)
        n = len(seq)
        own = torch.tensor(owner, device=self.device)
        idx = torch.arange(n, device=self.device)
        allowed = (idx[None, :] <= idx[:, None]) & ((own[None, :] == -1) | (own[None, :] == own[:, None]))
        allowed = torch.cat([torch.ones(n, past_len, dtype=torch.bool, device=self.device), allowed], dim=1)
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask = mask.masked_fill(~allowed, torch.finfo(self.dtype).min)[None, None]
        # the rows whose logits are read: the last shared token, then each answer's body tokens
        rows = [len(shared) - 1] + list(range(len(shared), n))
        keep = self._keep(torch.tensor(rows, device=self.device)) if self._can_keep_logits else {}
        logits = self.model(
            input_ids=torch.tensor([seq], device=self.device),
            position_ids=torch.tensor([positions], device=self.device),
            attention_mask=mask,
            past_key_values=past,
            use_cache=past is not None,
            **keep,
        ).logits[0]
        if not keep:
            logits = logits[rows]
        logp = torch.log_softmax(logits.float(), dim=-1)
        row_of = {pos: i for i, pos in enumerate(rows)}
        values = []
        for k, answer in enumerate(answers):
            predictors = [len(shared) - 1] + [starts[k] + j for j in range(len(answer) - 1)]
            total = sum(float(logp[row_of[p], tok]) for p, tok in zip(predictors, answer))
            values.append(total / len(answer))
        return values

    def _keep(self, value: Any) -> Dict[str, Any]:
        return {"logits_to_keep": value} if self._can_keep_logits else {}


def first_position(prefix_len: int, anchor: Optional[int]) -> int:
    """Position of the prefix's first token: 0, or ``anchor - prefix_len`` for anchored models."""
    if anchor is None:
        return 0
    if prefix_len > anchor:
        raise ValueError(f"a prefix of {prefix_len} tokens does not fit before the position anchor {anchor}")
    return anchor - prefix_len


def _to_legacy(past: Any) -> Tuple[Tuple["torch.Tensor", "torch.Tensor"], ...]:
    return past.to_legacy_cache() if hasattr(past, "to_legacy_cache") else tuple(past)


def _from_legacy(legacy: Tuple[Tuple["torch.Tensor", "torch.Tensor"], ...]) -> Any:
    from transformers import DynamicCache

    # DynamicCache copies on update, so the tensors kept in the LRU are never changed
    return DynamicCache.from_legacy_cache(legacy)
