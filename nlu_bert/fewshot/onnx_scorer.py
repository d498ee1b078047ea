"""The GPT-2 few-shot scorer on onnxruntime: export at train time, a torch-free scorer at serving time.

The exported graph is the ``cached`` / ``packed`` scoring step of :mod:`nlu_bert.fewshot.scoring`
as one ONNX function::

    (input_ids [1, n], position_ids [1, n], bias [1, 1, n, past + n], rows [r], targets [r],
     past_key_0, past_value_0, ... [1, heads, past, head_dim])
        -> (log_prob [r], present_key_0, present_value_0, ... [1, heads, past + n, head_dim])

``bias`` is the additive attention mask (0 = may attend, a large negative number = may not): causal
for a few-shot prefix, a tree for the packed answers. ``log_prob[i]`` is the log-probability of
``targets[i]`` read from the logits of position ``rows[i]``, so only the rows an answer needs go
through the 21,128-word output layer. The GPT-2 block is written out here with the model's own
weights (the math of transformers' ``GPT2LMHeadModel`` in eval mode) so the graph has plain past
key/value tensors and no cache objects.

Serving imports neither torch nor transformers: ``OnnxCandidateScorer`` keeps the prefix caches as
numpy arrays (fp16 for the int8 graph, whose key/value inputs and outputs are fp16; fp32 for the fp32 graph)
and the tokenizer is read from ``tokenizer.json`` (:class:`TokenizerFile`).
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nlu_bert.bert import predictors as runtime
from nlu_bert.fewshot.scoring import ScorerBase

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
ONNX_FILES: Dict[str, str] = {"fp32": "scorer.onnx", "int8": "scorer.int8.onnx"}
MODES = ("cached", "packed")
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "gelu_fast", "quick_gelu", "silu")
# an additive mask value that stays finite in fp32 after adding a score (softmax gives it weight 0)
MASKED = np.float32(-1e9)
FIXED_INPUTS = ("input_ids", "position_ids", "bias", "rows", "targets")


def export_problem(config: Any) -> Optional[str]:
    """Why this causal LM cannot go through the export (None: it can)."""
    if getattr(config, "model_type", None) != "gpt2":
        return f"the model type is {getattr(config, 'model_type', None)!r}, not 'gpt2'"
    checks = {
        "activation_function": (getattr(config, "activation_function", "gelu_new") in ACTIVATIONS),
        "scale_attn_weights": getattr(config, "scale_attn_weights", True) is True,
        "scale_attn_by_inverse_layer_idx": not getattr(config, "scale_attn_by_inverse_layer_idx", False),
        "reorder_and_upcast_attn": not getattr(config, "reorder_and_upcast_attn", False),
        "add_cross_attention": not getattr(config, "add_cross_attention", False),
    }
    bad = [k for k, ok in checks.items() if not ok]
    return f"unsupported GPT-2 settings: {', '.join(bad)}" if bad else None


def _graph_module(model: Any) -> "torch.nn.Module":
    """The scoring step written out over ``model``'s weights (a ``GPT2LMHeadModel``, fp32, eval)."""
    import torch
    import torch.nn.functional as F
    from transformers.activations import ACT2FN

    config = model.config
    heads = int(config.n_head)
    width = int(config.n_embd)
    eps = float(config.layer_norm_epsilon)
    act = ACT2FN[config.activation_function]

    class ScoringGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt2 = model

        def forward(self, input_ids, position_ids, bias, rows, targets, *past):  # type: ignore[no-untyped-def]
            core = self.gpt2.transformer
            h = core.wte(input_ids) + core.wpe(position_ids)
            presents = []
            for i, block in enumerate(core.h):
                x = F.layer_norm(h, (width,), block.ln_1.weight, block.ln_1.bias, eps)
                qkv = torch.addmm(block.attn.c_attn.bias, x[0], block.attn.c_attn.weight)
                q, k, v = (t.reshape(1, -1, heads, width // heads).transpose(1, 2) for t in qkv.split(width, dim=1))
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
                presents += [k, v]
                scores = torch.matmul(q, k.transpose(-1, -2)) / float((width // heads) ** 0.5) + bias
                y = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(-1, width)
                h = h + torch.addmm(block.attn.c_proj.bias, y, block.attn.c_proj.weight)[None]
                x = F.layer_norm(h, (width,), block.ln_2.weight, block.ln_2.bias, eps)[0]
                x = act(torch.addmm(block.mlp.c_fc.bias, x, block.mlp.c_fc.weight))
                h = h + torch.addmm(block.mlp.c_proj.bias, x, block.mlp.c_proj.weight)[None]
            h = F.layer_norm(h, (width,), core.ln_f.weight, core.ln_f.bias, eps)[0]
            logits = F.linear(h[rows], self.gpt2.lm_head.weight, getattr(self.gpt2.lm_head, "bias", None))
            log_prob = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
            return (log_prob, *presents)

    return ScoringGraph().eval()


def export_scorer(model: Any, target: Path, precision: str, check: bool = True) -> Dict[str, Any]:
    """Write the scoring graph of ``model`` (fp32 or dynamic int8) to ``target``; check it against
    torch on a probe prompt. Returns a report (timings, size, probe differences)."""
    import copy
    import warnings

    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"onnxruntime scores GPT-2 in {' or '.join(PRECISIONS)}, not {precision!r}")
    problem = export_problem(model.config)
    if problem:
        raise RuntimeError(f"the GPT-2 scorer cannot be exported to ONNX ({problem}); use `inference_backend: torch`.")
    params = list(model.parameters())
    fp32 = model if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params) else copy.deepcopy(model).cpu().float()
    was_training = fp32.training
    fp32.eval()
    graph = _graph_module(fp32)
    layers, heads, head_dim = int(fp32.config.n_layer), int(fp32.config.n_head), int(fp32.config.n_embd) // int(fp32.config.n_head)
    n, past_len = 4, 3
    vocab = int(fp32.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    example = (
        torch.randint(0, vocab, (1, n), generator=generator),
        torch.arange(past_len, past_len + n)[None],
        torch.zeros(1, 1, n, past_len + n),
        torch.tensor([0, 1, 3]),
        torch.tensor([1, 2, 3]),
        *[torch.randn(1, heads, past_len, head_dim, generator=generator) for _ in range(2 * layers)],
    )
    past_names = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    present_names = [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    axes: Dict[str, Dict[int, str]] = {
        "input_ids": {1: "n"},
        "position_ids": {1: "n"},
        "bias": {2: "n", 3: "total"},
        "rows": {0: "r"},
        "targets": {0: "r"},
        "log_prob": {0: "r"},
        **{name: {2: "past"} for name in past_names},
        **{name: {2: "total"} for name in present_names},
    }
    report: Dict[str, Any] = {"precision": precision}
    target = Path(target)
    try:
        with tempfile.TemporaryDirectory(prefix="nlu_bert_gpt2_onnx_") as tmp:
            raw = Path(tmp) / "scorer.onnx"
            start = time.perf_counter()
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    graph,
                    example,
                    str(raw),
                    input_names=[*FIXED_INPUTS, *past_names],
                    output_names=["log_prob", *present_names],
                    dynamic_axes=axes,
                    opset_version=runtime.ONNX_OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            report["export_s"] = round(time.perf_counter() - start, 2)
            runtime.store_export(raw, target, precision, quantize_scorer, report)
    finally:
        if was_training:
            fp32.train()
    report["bytes"] = target.stat().st_size
    if check:
        report.update(_probe_check(fp32, target, precision))
    logger.info("exported %s (%s, %.1f MB): %s", target.name, precision, report["bytes"] / 1e6, report)
    return report


def quantize_scorer(src: Path, out: Path) -> None:
    """Dynamic int8 weight products: the blocks' linear layers (exported as Gemm) and the output layer (an int8
    copy of the tied embedding table); attention products and LayerNorms stay fp32. The token and position
    embedding tables that the lookups read are stored in fp16 (:func:`runtime.half_lookup_tables`: 34 MB
    less for GPT-2 base, on disk and in memory), and the key/value cache goes in and out in fp16
    (:func:`half_key_value_cache`)."""
    import onnx

    runtime.quantize_int8(src, out, ["MatMul", "Gemm"])
    model = onnx.load(str(out))
    runtime.half_lookup_tables(model.graph)
    half_key_value_cache(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def half_key_value_cache(graph: Any) -> None:
    """Make ``graph`` (an ONNX ``GraphProto``, changed in place) take its ``past_*`` key/value inputs and give its
    ``present_*`` outputs in fp16, with a ``Cast`` to or from fp32 at each: the prefix cache then holds half the
    bytes (about 37 kB per prompt token of GPT-2 base instead of 74 kB), and onnxruntime converts them inside the
    run."""
    import onnx
    from onnx import TensorProto, helper

    inputs, outputs = {}, {}
    for value, names, prefix in ((graph.input, inputs, "past_"), (graph.output, outputs, "present_")):
        for v in value:
            if v.name.startswith(prefix) and v.type.tensor_type.elem_type == TensorProto.FLOAT:
                v.type.tensor_type.elem_type = TensorProto.FLOAT16
                names[v.name] = f"{v.name}_fp32"  # the fp32 tensor inside the graph
    nodes = [helper.make_node("Cast", [n], [fp32], to=TensorProto.FLOAT, name=f"{n}_to_fp32") for n, fp32 in inputs.items()]
    inside = {**inputs, **outputs}
    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                names[i] = inside.get(name, name)
        nodes.append(node)
    nodes += [helper.make_node("Cast", [fp32], [n], to=TensorProto.FLOAT16, name=f"{n}_to_fp16") for n, fp32 in outputs.items()]
    graph.ClearField("node")
    graph.node.extend(nodes)


def _probe_check(model: Any, path: Path, precision: str) -> Dict[str, Any]:
    """Score one made-up prompt both ways (torch ``cached`` mode and the exported graph)."""
    from nlu_bert.fewshot.scoring import CandidateScorer

    vocab = int(model.config.vocab_size)
    rng = np.random.default_rng(0)
    prefix, query = rng.integers(0, vocab, 12).tolist(), rng.integers(0, vocab, 5).tolist()
    answers = [rng.integers(0, vocab, k).tolist() for k in (1, 3, 2)]
    expected = CandidateScorer(model, cache_size=1).score(prefix, query, answers, mode="cached").log_likelihoods
    got = OnnxCandidateScorer(path, num_threads=1, cache_size=1).score(prefix, query, answers).log_likelihoods
    diff = float(np.max(np.abs(np.asarray(got) - np.asarray(expected))))
    if precision == "fp32" and diff > 1e-3:
        path.unlink()
        raise RuntimeError(
            f"the ONNX export of the GPT-2 scorer does not match torch (max |diff| {diff:.2e}); "
            "use `inference_backend: torch`."
        )
    return {"probe_max_abs_diff": diff, "probe_same_choice": int(np.argmax(got) == np.argmax(expected))}


class OnnxCandidateScorer(ScorerBase):
    """Scores answers after a prompt with the exported graph; the same numbers as
    ``CandidateScorer`` in ``cached`` / ``packed`` mode, without torch."""

    backend = "onnxruntime"
    modes = MODES
    modes_note = " with the onnxruntime scorer (the others need `inference_backend: torch`)"

    def __init__(
        self,
        path: Path,
        num_threads: int = 0,
        cache_size: int = 8,
        position_anchor: Optional[int] = None,
        allow_spinning: Optional[bool] = None,
    ) -> None:
        self.path = Path(path)
        self.precision = "int8" if self.path.name == ONNX_FILES["int8"] else "fp32"
        spinning = runtime.ORT_ALLOW_SPINNING if allow_spinning is None else bool(allow_spinning)
        self.session, self.session_options = runtime.ort_session(self.path, num_threads, spinning)
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
        _, past = self._run(prefix, list(range(start, start + n)), causal, [n - 1], [0], self._empty_past(), presents=True)
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


class TokenizerFile:
    """The parts of a transformers tokenizer the prompt encoder uses, read from ``tokenizer.json`` with
    the ``tokenizers`` library only: ``tokenizer(text, add_special_tokens=False)["input_ids"]`` and the
    special token ids."""

    SPECIAL = ("cls", "bos", "sep", "eos", "pad", "unk")

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: save the tokenizer with a fast (Rust) tokenizer.")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        names: Dict[str, Any] = {}
        for file in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / file).is_file():
                data = json.loads((folder / file).read_text(encoding="utf-8"))
                names.update({k: v for k, v in data.items() if k.endswith("_token") and v is not None})
        for kind in self.SPECIAL:
            value = names.get(f"{kind}_token")
            if isinstance(value, dict):
                value = value.get("content")
            setattr(self, f"{kind}_token_id", self.tokenizer.token_to_id(value) if isinstance(value, str) else None)

    def __call__(self, text: str, add_special_tokens: bool = True) -> Dict[str, List[int]]:
        return {"input_ids": self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}
