"""The GPT-2 few-shot scorer exported to ONNX at train time, and what the archive holds for each backend.

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
key/value tensors and no cache objects. :mod:`nlu_bert.fewshot.onnx_scorer` serves it without torch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from nlu_bert import archive, onnx_tools
from nlu_bert.fewshot.onnx_scorer import FIXED_INPUTS, PRECISIONS, OnnxCandidateScorer

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "gelu_fast", "quick_gelu", "silu")


def write_model(folder: Path, model: Any, tokenizer: Any, backend: str, precision: str) -> Dict[str, Any]:
    """Write the model as ``backend`` loads it into ``folder/model/``: for onnxruntime the scoring graph and the
    model's config, for torch the weights; the tokenizer either way. Returns the ``inference`` entry of meta.json."""
    inference: Dict[str, Any] = {"backend": backend, "precision": precision}
    model_dir = folder / archive.GPT2_MODEL_DIR
    if backend == "onnxruntime":
        model_dir.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(str(model_dir))
        name = archive.GPT2_ONNX_FILES[precision]
        inference["export"] = export_scorer(model, model_dir / name, precision)
        inference["files"] = [name]
    else:
        model.save_pretrained(str(model_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(model_dir))
    return inference


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
        raise RuntimeError(
            f"the GPT-2 scorer cannot be exported to ONNX ({problem}); use `inference: {{backend: torch}}`."
        )
    params = list(model.parameters())
    fp32 = (
        model
        if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
        else copy.deepcopy(model).cpu().float()
    )
    was_training = fp32.training
    fp32.eval()
    graph = _graph_module(fp32)
    layers, heads, head_dim = (
        int(fp32.config.n_layer),
        int(fp32.config.n_head),
        int(fp32.config.n_embd) // int(fp32.config.n_head),
    )
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
                    opset_version=onnx_tools.OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            report["export_s"] = round(time.perf_counter() - start, 2)
            onnx_tools.store_export(raw, target, precision, quantize_scorer, report)
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
    embedding tables that the lookups read are stored in fp16 (:func:`nlu_bert.onnx_tools.half_lookup_tables`: 34 MB
    less for GPT-2 base, on disk and in memory), and the key/value cache goes in and out in fp16
    (:func:`half_key_value_cache`)."""
    import onnx

    onnx_tools.quantize_int8(src, out, ["MatMul", "Gemm"])
    model = onnx.load(str(out))
    onnx_tools.half_lookup_tables(model.graph)
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
    nodes = [
        helper.make_node("Cast", [n], [fp32], to=TensorProto.FLOAT, name=f"{n}_to_fp32") for n, fp32 in inputs.items()
    ]
    inside = {**inputs, **outputs}
    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                names[i] = inside.get(name, name)
        nodes.append(node)
    nodes += [
        helper.make_node("Cast", [fp32], [n], to=TensorProto.FLOAT16, name=f"{n}_to_fp16")
        for n, fp32 in outputs.items()
    ]
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
            "use `inference: {backend: torch}`."
        )
    return {"probe_max_abs_diff": diff, "probe_same_choice": int(np.argmax(got) == np.argmax(expected))}
