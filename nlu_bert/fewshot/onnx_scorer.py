"""The GPT-2 few-shot scorer served by onnxruntime, without torch or transformers.

:class:`OnnxCandidateScorer` runs the graph :mod:`nlu_bert.fewshot.export` wrote and gives the numbers of
:class:`~nlu_bert.fewshot.scoring.CandidateScorer` in ``cached`` / ``packed`` mode. It keeps the prefix caches as
numpy arrays (fp16 for the int8 graph, whose key/value inputs and outputs are fp16; fp32 for the fp32 graph);
the tokenizer is read from ``tokenizer.json`` (:class:`~nlu_bert.tokenizer_files.TokenizerFile`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from nlu_bert import archive, hardware, onnx_tools
from nlu_bert.fewshot.scoring import ScorerBase
from nlu_bert.tokenizer_files import TokenizerFile

PRECISIONS = ("fp32", "int8")
MODES = ("cached", "packed")
# an additive mask value that stays finite in fp32 after adding a score (softmax gives it weight 0)
MASKED = np.float32(-1e9)
FIXED_INPUTS = ("input_ids", "position_ids", "bias", "rows", "targets")


def load(folder: Path, meta: dict, cache_size: int, threads: int, spinning: bool) -> Tuple[Any, Any, dict]:
    """(scorer, tokenizer, the model's config.json) from an archive folder written for onnxruntime."""
    model_dir = folder / archive.GPT2_MODEL_DIR
    name = archive.GPT2_ONNX_FILES.get(meta["inference"].get("precision"), "?")
    archive.require_files(
        folder, archive.GPT2, [f"{archive.GPT2_MODEL_DIR}/{name}", f"{archive.GPT2_MODEL_DIR}/config.json"]
    )
    try:
        tokenizer: Any = TokenizerFile(model_dir)
    except FileNotFoundError:  # a slow (Python) tokenizer: only transformers can run it
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    threads = hardware.resolve_threads(threads)
    scorer = OnnxCandidateScorer(model_dir / name, num_threads=threads, cache_size=cache_size, allow_spinning=spinning)
    model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return scorer, tokenizer, model_config


class OnnxCandidateScorer(ScorerBase):
    """Scores answers after a prompt with the exported graph; the same numbers as
    ``CandidateScorer`` in ``cached`` / ``packed`` mode, without torch."""

    backend = "onnxruntime"
    modes = MODES
    modes_note = " with the onnxruntime scorer (the others need `inference: {backend: torch}`)"

    def __init__(
        self,
        path: Path,
        num_threads: int = 0,
        cache_size: int = 8,
        position_anchor: Optional[int] = None,
        allow_spinning: Optional[bool] = None,
    ) -> None:
        self.path = Path(path)
        self.precision = "int8" if self.path.name == archive.GPT2_ONNX_FILES["int8"] else "fp32"
        spinning = onnx_tools.ALLOW_SPINNING if allow_spinning is None else bool(allow_spinning)
        self.session, self.session_options = onnx_tools.ort_session(self.path, num_threads, spinning)
        super().__init__(cache_size, position_anchor)
        inputs = {i.name: i for i in self.session.get_inputs()}
        missing = [name for name in FIXED_INPUTS if name not in inputs]
        if missing or "past_key_0" not in inputs:
            raise ValueError(f"{self.path} is not a GPT-2 scoring graph (inputs {sorted(inputs)})")
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_")]
        self.present_names = [o.name for o in self.session.get_outputs() if o.name.startswith("present_")]
        shape = inputs["past_key_0"].shape
        self.heads, self.head_dim = int(shape[1]), int(shape[3])
        # the int8 graph keeps the prefix cache in fp16 (half_key_value_cache); older int8 graphs and fp32 in fp32
        self.cache_dtype = np.float16 if inputs["past_key_0"].type == "tensor(float16)" else np.float32

    def _score(
        self, prefix: List[int], query: List[int], answers: Sequence[Sequence[int]], mode: str, start: int
    ) -> Tuple[List[float], bool]:
        if mode == "packed":
            return self._packed(self._empty_past(), start, prefix + query, answers), False
        past, hit = self._prefix_cache(prefix, start)
        return self._packed(past, start + len(prefix), query, answers), hit

    def _empty_past(self) -> List[np.ndarray]:
        return [np.zeros((1, self.heads, 0, self.head_dim), self.cache_dtype) for _ in self.past_names]

    def _run(
        self,
        ids: List[int],
        positions: List[int],
        bias: np.ndarray,
        rows: List[int],
        targets: List[int],
        past: List[np.ndarray],
        presents: bool,
    ) -> Tuple[np.ndarray, List[np.ndarray]]:
        """One pass; the key/value ``presents`` are copied out only when asked for (the prefix pass)."""
        feed = {
            "input_ids": np.asarray([ids], np.int64),
            "position_ids": np.asarray([positions], np.int64),
            "bias": bias,
            "rows": np.asarray(rows, np.int64),
            "targets": np.asarray(targets, np.int64),
            **dict(zip(self.past_names, past)),
        }
        out = self.session.run(["log_prob", *self.present_names] if presents else ["log_prob"], feed)
        return out[0], out[1:]

    def _prefix_cache(self, prefix: List[int], start: int) -> Tuple[List[np.ndarray], bool]:
        key = (start, *prefix)
        past = self.cache.get(key)
        if past is not None:
            return past, True
        n = len(prefix)
        causal = np.triu(np.full((n, n), MASKED, np.float32), k=1)[None, None]
        _, past = self._run(
            prefix, list(range(start, start + n)), causal, [n - 1], [0], self._empty_past(), presents=True
        )
        self.cache.put(key, past)
        return past, False

    def _packed(
        self, past: List[np.ndarray], first: int, shared: List[int], answers: Sequence[Sequence[int]]
    ) -> List[float]:
        """``shared`` then every answer's tokens but the last, in one pass with a tree mask."""
        past_len = int(past[0].shape[2])
        seq, positions, owner = list(shared), list(range(first, first + len(shared))), [-1] * len(shared)
        rows: List[int] = []
        targets: List[int] = []
        for k, answer in enumerate(answers):
            body = list(answer[:-1])
            begin = len(seq)
            seq += body
            positions += range(first + len(shared), first + len(shared) + len(body))
            owner += [k] * len(body)
            # token j of the answer is predicted by the position before it (the last shared token for j = 0)
            rows += [len(shared) - 1] + [begin + j for j in range(len(answer) - 1)]
            targets += list(answer)
        n = len(seq)
        own = np.asarray(owner)
        idx = np.arange(n)
        allowed = (idx[None, :] <= idx[:, None]) & ((own[None, :] == -1) | (own[None, :] == own[:, None]))
        bias = np.zeros((1, 1, n, past_len + n), np.float32)
        bias[0, 0, :, past_len:][~allowed] = MASKED
        log_prob, _ = self._run(seq, positions, bias, rows, targets, past, presents=False)
        values, at = [], 0
        for answer in answers:
            values.append(float(np.mean(log_prob[at : at + len(answer)], dtype=np.float64)))
            at += len(answer)
        return values
