"""What the archive holds for each BERT inference backend, written at the end of ``rasa train``.

:func:`write_model` writes a trained :class:`~nlu_bert.bert.model.IntentModel` as its backend loads it: torch gets the
safetensors weights, native its int8 file (:func:`nlu_bert.bert.native.export`), onnxruntime the ONNX graph,
exported here with dynamic batch and sequence axes, fused (onnxruntime's BERT fusions) and, for int8, dynamically
quantized (:func:`export_onnx`). The exported graph is checked against torch on a probe batch; an fp32
mismatch is an error. A model with an entity head gets a second output, ``tag_scores`` (and its token n-gram ids as
a fourth input); the head stays fp32 in an int8 graph, as the intent head does. Then the tokenizer and meta.json.
Imported at train time only (it imports torch).
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import numpy as np

from nlu_bert import archive, onnx_tools
from nlu_bert.bert import native
from nlu_bert.bert.predictors import (
    INPUT_NAMES,
    OUTPUT_NAME,
    TAG_SCORES_NAME,
    TOKEN_NGRAM_INPUT,
    OnnxRuntimePredictor,
    validate_inference,
)
from nlu_bert.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nlu_bert.bert.model import IntentModel

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The model could not be exported for its inference backend (another backend may serve it)."""


def write_model(
    folder: Path,
    model: "IntentModel",
    tokenizer: Any,
    backend: str,
    precision: str,
    save_dtype: str,
    meta: Dict[str, Any],
    finetunable: bool = False,
) -> Dict[str, Any]:
    """Write what ``backend`` / ``precision`` loads, the tokenizer and meta.json into ``folder``; return the meta.
    ``finetunable``: the trainable weights too, for every backend (a warm start reads them).
    A full disk raises ``OSError`` (or ``SafetensorError``), any other export failure :class:`ExportError`."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    files = archive.bert_files(backend, precision)
    meta = {**meta, "inference": {"backend": backend, "precision": precision}, "files": files}
    if finetunable:
        meta["finetunable"] = {"files": archive.BERT_TRAINING_FILES, "dtype": save_dtype}
    if backend == "torch" or finetunable:
        dtype = torch.float16 if save_dtype == "float16" else torch.float32
        state = {
            k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in model.state_dict().items()
        }
        save_file(state, str(folder / archive.BERT_WEIGHTS_FILE), metadata={"nlu_bert_version": __version__})
        model.encoder.config.to_json_file(str(folder / archive.BERT_ENCODER_CONFIG_FILE))
    if backend != "torch":
        started = time.perf_counter()
        try:
            export_for_inference(model, folder, backend, precision, save_dtype=save_dtype)
        except (OSError, SafetensorError):  # a full disk: the caller names that fix
            raise
        except Exception as e:  # noqa: BLE001 - any export failure has the same way out
            raise ExportError(f"{type(e).__name__}: {e}") from None
        meta["export_seconds"] = round(time.perf_counter() - started, 2)
        logger.info(f"{archive.BERT}: exported the model for {backend} ({precision}) in {meta['export_seconds']} s")
    tokenizer.save_pretrained(str(folder / archive.TOKENIZER_DIR))
    return archive.write_meta(folder, archive.BERT, meta)


def export_for_inference(
    model: "IntentModel", folder: Path, backend: str, precision: str, save_dtype: str = "float16"
) -> List[str]:
    """Write what ``backend`` / ``precision`` loads into ``folder``; return the file names written.

    torch: nothing (the component's safetensors weights are all it needs). onnxruntime: ``model.onnx``
    (fp32) or ``model.int8.onnx`` (int8), exported with dynamic batch / sequence axes, the
    transformer fusions applied, and for int8 dynamically quantized. The exported graph is checked
    against the torch model on a probe batch; an fp32 mismatch is an error. native: ``model.native.safetensors``
    (int8 weight panels; the other tensors in ``save_dtype``).
    """
    validate_inference(backend, precision, 0)
    if backend == "torch":
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "native":
        native.export(model.state_dict(), model.encoder.config.to_dict(), folder / archive.NATIVE_FILE, save_dtype)
        return [archive.NATIVE_FILE]
    target = folder / archive.BERT_ONNX_FILES[precision]
    export_onnx(model, target, precision)
    return [target.name]


def export_onnx(
    model: "IntentModel",
    target: Path,
    precision: str,
    *,
    per_channel: bool = True,
    quantize_embeddings: bool = False,
    fuse: bool = True,
    check: bool = True,
) -> Dict[str, Any]:
    """Export ``model`` to ``target`` (fp32 or int8). Returns a small report (timings, fused ops, probe check)."""
    import torch

    report: Dict[str, Any] = {"precision": precision}
    export_model = _cpu_fp32_copy(model)
    was_training = export_model.training
    target = Path(target)
    export_model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="nlu_bert_onnx_") as tmp:
            raw = Path(tmp) / "raw.onnx"
            start = time.perf_counter()
            probe = _probe_inputs(export_model)
            with _eager_attention(export_model), torch.inference_mode():
                _torch_onnx_export(export_model, probe, raw)
                expected = _as_pair(export_model(*probe))
            report["export_s"] = round(time.perf_counter() - start, 2)

            graph = raw
            if fuse:
                start = time.perf_counter()
                fused_path = Path(tmp) / "fused.onnx"
                try:
                    report["fused_ops"] = _fuse_transformer(raw, fused_path, export_model)
                    graph = fused_path
                except Exception as e:  # noqa: BLE001 - an unfused graph is slower, not wrong
                    logger.warning(
                        "onnxruntime's transformer fusions failed (%s: %s); exporting the unfused graph",
                        type(e).__name__,
                        e,
                    )
                report["fuse_s"] = round(time.perf_counter() - start, 2)

            def quantize(src: Path, out: Path) -> None:
                _quantize_int8(src, out, per_channel=per_channel, quantize_embeddings=quantize_embeddings)

            onnx_tools.store_export(graph, target, precision, quantize, report)
    finally:
        if was_training:
            export_model.train()
    report["bytes"] = target.stat().st_size

    if check:
        predictor = OnnxRuntimePredictor(target, precision, 1)
        feed = [p.numpy() for p in probe] + [None] * (4 - len(probe))
        got = predictor.predict(*feed)
        diff, scale = 0.0, 1.0
        for a, b in zip(got, expected):
            if b is not None:
                diff = max(diff, float(np.max(np.abs(a - b))))
                scale = max(scale, float(np.max(np.abs(b))))
        report["probe_max_abs_diff"] = diff
        report["probe_top1_agree"] = float(np.mean(got[0].argmax(-1) == expected[0].argmax(-1)))
        if precision == "fp32" and diff > 1e-3 * scale:
            target.unlink()
            raise RuntimeError(
                f"the ONNX export of the intent model does not match torch (max |diff| {diff:.2e}); "
                "use `inference.backend: torch`."
            )
    logger.info("exported %s (%s, %.1f MB): %s", target.name, precision, report["bytes"] / 1e6, report)
    return report


def _as_pair(outputs: Any) -> Tuple[np.ndarray, Any]:
    """(logits, tag scores or None) as numpy, from a model's outputs."""
    if isinstance(outputs, tuple):
        return outputs[0].float().numpy(), outputs[1].float().numpy()
    return outputs.float().numpy(), None


def _cpu_fp32_copy(model: "IntentModel") -> "IntentModel":
    import torch

    params = list(model.parameters())
    if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params):
        return model
    return copy.deepcopy(model).cpu().float()


def _probe_inputs(model: "IntentModel") -> Tuple["torch.Tensor", ...]:
    """Two rows of different lengths (so the padding path is traced and checked)."""
    import torch

    vocab = int(model.encoder.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab - 1), vocab, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    if getattr(model, "ngrams", None) is None:
        return ids, mask
    buckets = int(model.ngram_buckets)
    ngrams = torch.randint(1, max(2, buckets), (2, 9), generator=generator)
    ngrams[1, 5:] = 0
    head = getattr(model, "entities", None)
    if head is None or head.ngrams is None:
        return ids, mask, ngrams
    token_ngrams = torch.randint(1, max(2, head.ngram_buckets), (2, 12, 4), generator=generator)
    token_ngrams[:, 0] = 0  # [CLS]
    token_ngrams[1, 6:] = 0
    return ids, mask, ngrams, token_ngrams


class _eager_attention:
    """Export BERT with the eager attention (the graph onnxruntime's fusion recognises), then restore."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.swapped: List[Tuple[Any, type]] = []
        self.impl: List[Tuple[Any, str]] = []

    def __enter__(self) -> "_eager_attention":
        try:
            from transformers.models.bert import modeling_bert as mb
        except Exception:  # pragma: no cover  # noqa: BLE001
            return self
        eager = getattr(mb, "BertSelfAttention", None)
        for module in self.model.modules():
            if eager is not None and isinstance(module, eager) and type(module) is not eager:
                self.swapped.append((module, type(module)))
                module.__class__ = eager
            if isinstance(getattr(module, "attn_implementation", None), str):
                self.impl.append((module, module.attn_implementation))
                module.attn_implementation = "eager"
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, cls in self.swapped:
            module.__class__ = cls
        for module, impl in self.impl:
            module.attn_implementation = impl


def _torch_onnx_export(model: "IntentModel", probe: Tuple["torch.Tensor", ...], path: Path) -> None:
    import warnings

    import torch

    names = list((INPUT_NAMES + (TOKEN_NGRAM_INPUT,))[: len(probe)])
    outputs = [OUTPUT_NAME] + ([TAG_SCORES_NAME] if getattr(model, "entities", None) is not None else [])
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "ngram_ids": {0: "batch", 1: "ngrams"},
        TOKEN_NGRAM_INPUT: {0: "batch", 1: "sequence"},
        OUTPUT_NAME: {0: "batch"},
        TAG_SCORES_NAME: {0: "batch", 1: "sequence"},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter: its BERT graph is the one onnxruntime's transformer fusions match,
        # and it needs neither the `onnx` nor the `onnxscript` package
        torch.onnx.export(
            model,
            probe,
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes={k: v for k, v in axes.items() if k in names or k in outputs},
            opset_version=onnx_tools.OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _fuse_transformer(raw: Path, out: Path, model: "IntentModel") -> Dict[str, int]:
    """onnxruntime's BERT fusions (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization)."""
    config = model.encoder.config
    if getattr(config, "model_type", "bert") != "bert":
        shutil.copyfile(raw, out)
        return {}
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_gelu_approximation = False  # keep erf GELU: exact
    with onnx_tools.quiet_logs():
        optimized = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            optimization_options=options,
            opt_level=0,  # python fusions only: the saved graph stays portable across CPUs
            use_gpu=False,
        )
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(out))
    return stats


# BERT's int8 ops: the matrix products and the fused attention; embeddings, LayerNorms and the head stay fp32
BERT_INT8_OP_TYPES = ("MatMul", "Attention")
# the entity head's nodes (torch names them after the module path): fp32 like the intent head
ENTITY_HEAD_NODES = ("/entities/",)


def _quantize_int8(src: Path, out: Path, per_channel: bool, quantize_embeddings: bool) -> None:
    """BERT: :data:`BERT_INT8_OP_TYPES`, and with ``quantize_embeddings`` the embedding lookups too."""
    op_types = list(BERT_INT8_OP_TYPES) + (["EmbedLayerNormalization", "Gather"] if quantize_embeddings else [])
    onnx_tools.quantize_int8(src, out, op_types, per_channel=per_channel, keep=ENTITY_HEAD_NODES)
