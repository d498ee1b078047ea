"""Inference backends for :class:`nlu_bert.bert.model.IntentModel`: torch, onnxruntime or nlu-bert's native int8
kernel, fp32 / bf16 / int8.

The component calls four functions:

* :func:`validate_inference` when it is created (a bad value is a clear ``ValueError``);
* :func:`resolve_backend` when the encoder is known (train time): what ``auto`` (the default) becomes;
* :func:`export_for_inference` when it persists a trained model: the onnxruntime backend
  exports the model to ONNX here (at train time), fuses the transformer graph and, for int8,
  quantizes it, so the archive holds exactly the file the backend loads;
* :func:`load_predictor` when it loads: a :class:`Predictor` maps padded token ids to logits.

Nothing here imports torch or onnxruntime at module import time. The onnxruntime predictor never
imports torch (``import torch`` costs about 3 s and 0.7 GB; onnxruntime about 0.3 s).

Backend / precision matrix (``docs/inference.md`` has the measurements behind the default):

===============  ===========================================  ================================
backend          fp32                                         bf16 / int8
===============  ===========================================  ================================
torch            Linear layers routed through oneDNN          bf16: model cast;
                 (AVX-512; torch's own fp32 GEMM takes an     int8: ``quantize_dynamic``
                 AVX2 MKL path on AMD CPUs)                   (per-tensor qint8 Linear)
onnxruntime      fused graph (Attention, SkipLayerNorm,       int8: dynamic quantization of the
                 BiasGelu, EmbedLayerNorm)                    fused graph (u8 activations, s8
                                                              weights, per-channel); bf16: none
native           none                                         int8: nlu-bert's C kernel (s8
                                                              weights per channel, u8 activations
                                                              per token; AVX-512 VNNI), BERT only
===============  ===========================================  ================================

The native kernel multiplies on AMX tiles where the CPU has them (Intel Sapphire Rapids and newer), else with
AVX-512 VNNI. Where it cannot run (another CPU, no compiled library), its file is served by onnxruntime: the
same int8 weights as a graph built at load (:mod:`nlu_bert.bert.native.portable`); the log says why.
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nlu_bert.bert.model import IntentModel

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "native")
PRECISIONS = ("fp32", "bf16", "int8")
# onnxruntime's CPU kernels have no bf16 GEMM on x86: a bf16 graph would be slower than fp32.
# native: nlu-bert's own int8 BERT kernel (nlu_bert/native), int8 only.
SUPPORTED_PRECISIONS: Dict[str, Tuple[str, ...]] = {
    "torch": PRECISIONS,
    "onnxruntime": ("fp32", "int8"),
    "native": ("int8",),
}

# `auto` (a config value, resolved when the encoder is known, see resolve_backend): native for int8 BERT
# encoders, the fastest option measured (docs/inference.md), with the smallest archive, served by its C kernel
# on CPUs with AVX-512 VNNI and by onnxruntime elsewhere; onnxruntime for other encoders and fp32.
AUTO = "auto"
DEFAULT_BACKEND = AUTO
DEFAULT_PRECISION = "int8"
DEFAULT_NUM_THREADS = 0  # 0 = every core this process may run on

ONNX_FILES: Dict[str, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
# Worker threads busy-wait between the ops of one forward pass and stop the moment it returns
# (`session.force_spinning_stop`), so an idle server burns no CPU. 13-21% faster per message on
# these cores; with other busy processes on the same cores it ranged from 20% faster to 35% slower
# (docs/inference.md, `bert_latency.py --busy`). `inference.spinning: false` turns it off.
ORT_ALLOW_SPINNING = True
ONNX_OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "ngram_ids")
OUTPUT_NAME = "logits"

# How the config keys are called in messages; the component may pass its own names.
DEFAULT_KEY_NAMES: Dict[str, str] = {
    "backend": "inference.backend",
    "precision": "inference.precision",
    "num_threads": "inference.threads",
}


# --------------------------------------------------------------------------------------------
# validation and threads
# --------------------------------------------------------------------------------------------
def validate_inference(
    backend: str, precision: str, num_threads: int, key_names: Optional[Mapping[str, str]] = None
) -> None:
    """Raise ``ValueError`` naming the key, the value received and the allowed values."""
    keys = {**DEFAULT_KEY_NAMES, **(key_names or {})}
    if backend not in (AUTO,) + BACKENDS:
        raise ValueError(
            f"`{keys['backend']}` must be one of {_quoted((AUTO,) + BACKENDS)}, got {backend!r}."
        )
    if precision not in PRECISIONS:
        raise ValueError(
            f"`{keys['precision']}` must be one of {_quoted(PRECISIONS)}, got {precision!r}."
        )
    allowed = PRECISIONS if backend == AUTO else SUPPORTED_PRECISIONS[backend]
    if precision not in allowed:
        others = [b for b in BACKENDS if precision in SUPPORTED_PRECISIONS[b]]
        raise ValueError(
            f"`{keys['precision']}` {precision!r} is not available with `{keys['backend']}` {backend!r} "
            f"(allowed there: {_quoted(allowed)}). Use `{keys['backend']}` {_quoted(others)} for {precision}, "
            f"or another precision."
        )
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 0:
        raise ValueError(
            f"`{keys['num_threads']}` must be an integer >= 0 (0 = all cores), got {num_threads!r}."
        )


def resolve_backend(backend: str, precision: str, encoder_config: Mapping[str, Any]) -> str:
    """The backend that serves ``backend`` (``auto`` resolved): for int8, native where its kernel computes this
    encoder (BERT), else onnxruntime; onnxruntime for fp32; torch for bf16 (the only backend that has it)."""
    if backend != AUTO:
        return backend
    if precision == "int8":
        from nlu_bert.bert import native

        return "native" if native.check_shape(encoder_config) is None else "onnxruntime"
    return "onnxruntime" if precision in SUPPORTED_PRECISIONS["onnxruntime"] else "torch"


def _quoted(values: Any) -> str:
    return ", ".join(f"'{v}'" for v in values)


def available_cores() -> int:
    """Cores this process may run on (respects taskset / cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(num_threads: int) -> int:
    return int(num_threads) if num_threads and num_threads > 0 else available_cores()


# --------------------------------------------------------------------------------------------
# predictors
# --------------------------------------------------------------------------------------------
class Predictor:
    """``predictor(input_ids, attention_mask, ngram_ids) -> float32 logits [batch, num_labels]``.

    Inputs are right-padded integer arrays ``[batch, seq]`` (``ngram_ids`` ``[batch, n]``, 0 =
    padding, or ``None`` for a model without n-gram features). Trailing columns that are padding in
    every row are cut off before the forward pass: they cannot change the logits, only the cost.
    """

    backend: str = ""
    precision: str = ""
    num_threads: int = 0
    uses_ngrams: bool = False
    num_labels: int = 0  # set by the native backend's predictors

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray] = None
    ) -> np.ndarray:
        input_ids, attention_mask, ngram_ids = self._prepare(input_ids, attention_mask, ngram_ids)
        return self._forward(input_ids, attention_mask, ngram_ids)

    def _forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray]
    ) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(
        self, input_ids: Any, attention_mask: Any, ngram_ids: Any
    ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        input_ids = _as_int64(input_ids)
        attention_mask = _as_int64(attention_mask)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                "input_ids and attention_mask must be 2-D arrays of the same shape [batch, seq], got "
                f"{input_ids.shape} and {attention_mask.shape}."
            )
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have at least one row and one column, got shape {input_ids.shape}.")
        input_ids, attention_mask = _trim_padding(input_ids, attention_mask)
        if not self.uses_ngrams:
            return input_ids, attention_mask, None
        if ngram_ids is None:
            raise ValueError("this model was trained with n-gram features; pass ngram_ids")
        ngram_ids = _as_int64(ngram_ids)
        if ngram_ids.ndim != 2 or ngram_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"ngram_ids must be a 2-D array [batch, n] with batch {input_ids.shape[0]}, got {ngram_ids.shape}."
            )
        if ngram_ids.shape[1] == 0:
            return input_ids, attention_mask, np.zeros((ngram_ids.shape[0], 1), dtype=np.int64)
        ngram_ids, _ = _trim_padding(ngram_ids, ngram_ids)
        return input_ids, attention_mask, ngram_ids

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, precision={self.precision!r}, num_threads={self.num_threads})"


def _as_int64(values: Any) -> np.ndarray:
    if type(values) is np.ndarray and values.dtype == np.int64 and values.flags.c_contiguous:
        return values  # the common case: no copy, no checks
    return np.ascontiguousarray(values, dtype=np.int64)


def _trim_padding(values: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Drop trailing columns where ``mask`` is 0 in every row (keeps at least one column)."""
    if mask[:, -1].any():  # the common case (padding=True pads to the longest row): nothing to trim
        return values, mask
    present = mask.any(axis=0)
    nonzero = np.flatnonzero(present)
    width = int(nonzero[-1]) + 1 if nonzero.size else 1
    return np.ascontiguousarray(values[:, :width]), np.ascontiguousarray(mask[:, :width])


class TorchPredictor(Predictor):
    """Runs the torch ``IntentModel`` itself. It takes ownership of ``model`` and changes it in place
    (bf16 cast, int8 quantization, Linear layers swapped for oneDNN ones): don't train it afterwards."""

    backend = "torch"

    def __init__(
        self, model: "IntentModel", precision: str, num_threads: int, onednn_fp32: bool = True, device: Any = None
    ) -> None:
        import torch

        self.precision = precision
        self.num_threads = resolve_threads(num_threads)
        self.device = torch.device(device or "cpu")
        torch.set_num_threads(self.num_threads)  # process-wide: torch has no per-model setting
        model = model.cpu().float().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if self.device.type != "cpu":  # GPU / MPS: the model as it is, cast for bf16
            if precision == "int8":
                raise ValueError(
                    f"`inference.precision` 'int8' runs on the CPU only, but the model is on {self.device}; "
                    "use `inference.precision` 'fp32' or 'bf16', or `device: cpu`."
                )
            self.model = model.to(self.device, torch.bfloat16 if precision == "bf16" else torch.float32)
            self.uses_ngrams = getattr(model, "ngrams", None) is not None
            return
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            model = _quantize_torch_int8(model)
        elif onednn_fp32:
            _route_linear_through_onednn(model)
        self.model = model
        self.uses_ngrams = getattr(model, "ngrams", None) is not None

    def _forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray]
    ) -> np.ndarray:
        import torch

        inputs = [torch.from_numpy(input_ids), torch.from_numpy(attention_mask)]
        inputs.append(None if ngram_ids is None else torch.from_numpy(ngram_ids))
        if self.device.type != "cpu":
            inputs = [None if t is None else t.to(self.device) for t in inputs]
        with torch.inference_mode():
            return self.model(*inputs).float().cpu().numpy()


def _quantize_torch_int8(model: "IntentModel") -> "IntentModel":
    """int8 weights (per tensor) for the encoder's Linear layers; the head stays fp32 (it is tiny,
    and its error would go straight into the logits)."""
    import torch
    from torch import nn

    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            break
    model.encoder = torch.ao.quantization.quantize_dynamic(model.encoder, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


_ONEDNN_LINEAR: Optional[type] = None


def _onednn_linear(linear: Any) -> Any:
    """An ``nn.Module`` computing ``linear`` with oneDNN's fp32 kernel and a pre-packed weight."""
    global _ONEDNN_LINEAR
    if _ONEDNN_LINEAR is None:
        import torch
        from torch import nn

        class OneDnnLinear(nn.Module):
            def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
                super().__init__()
                self.out_features = int(weight.shape[0])
                self.in_features = int(weight.shape[1])
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)
                self.bias = None if bias is None else bias.detach().contiguous()

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

        _ONEDNN_LINEAR = OneDnnLinear
    return _ONEDNN_LINEAR(linear.weight, linear.bias)


def onednn_linear_available() -> bool:
    try:
        import torch

        return bool(
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        )
    except Exception:  # pragma: no cover  # noqa: BLE001
        return False


def _route_linear_through_onednn(model: "IntentModel") -> int:
    """Swap every fp32 ``nn.Linear`` for a oneDNN one (AVX-512 where the CPU has it). Returns the count."""
    from torch import nn

    if not onednn_linear_available():
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype.is_floating_point:
                try:
                    setattr(parent, name, _onednn_linear(child))
                    swapped += 1
                except Exception as e:  # noqa: BLE001 - keep the plain layer
                    logger.debug("oneDNN linear unavailable (%s); keeping torch's", e)
                    return swapped
    return swapped


def ort_session(path: Union[Path, bytes], num_threads: int, allow_spinning: bool) -> Tuple[Any, Any]:
    """A CPU ``InferenceSession`` (from a file or a serialized model) and its options: ``num_threads`` intra-op threads (0 = all physical
    cores), one inter-op thread, sequential execution, all graph optimizations; with ``allow_spinning``
    the worker threads busy-wait between the ops of a run and stop when it returns."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(num_threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if allow_spinning:  # spin between the ops of a run only: no CPU burnt while the server waits
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=["CPUExecutionProvider"]), options


class OnnxRuntimePredictor(Predictor):
    """An onnxruntime CPU session: intra-op threads = ``num_threads`` (0 = all physical cores),
    sequential execution, all graph optimizations. ``allow_spinning`` lets idle worker threads
    busy-wait for the next op during a run, never after it (see ``ORT_ALLOW_SPINNING``)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, precision: str, num_threads: int, allow_spinning: Optional[bool] = None) -> None:
        self.precision = precision
        self.path = Path(path)
        self.num_threads = int(num_threads)
        self.allow_spinning = ORT_ALLOW_SPINNING if allow_spinning is None else bool(allow_spinning)
        self.session, self.session_options = ort_session(self.path, self.num_threads, self.allow_spinning)
        names = [i.name for i in self.session.get_inputs()]
        self.input_names = names
        self.uses_ngrams = "ngram_ids" in names
        self.output_names = [self.session.get_outputs()[0].name]

    def _forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray]
    ) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if ngram_ids is not None:
            feed["ngram_ids"] = ngram_ids
        return self.session.run(self.output_names, feed)[0]


class NativePredictor(Predictor):
    """The native file (:mod:`nlu_bert.bert.native`): nlu-bert's C kernel where it runs (``kernel`` 'amx' or 'vnni'),
    else the same int8 weights as an onnxruntime graph built at load (``kernel`` 'onnxruntime'). Never imports
    torch."""

    backend = "native"
    precision = "int8"

    def __init__(self, path: Path, num_threads: int, allow_spinning: Optional[bool] = None) -> None:
        from nlu_bert.bert import native

        self.path = Path(path)
        self.num_threads = int(num_threads)
        spinning = ORT_ALLOW_SPINNING if allow_spinning is None else bool(allow_spinning)
        self.model = native.load_model(self.path, resolve_threads(num_threads), allow_spinning=spinning)
        self.kernel = self.model.kernel
        if self.kernel == "onnxruntime" and self.model.kernel_note:
            logger.info(
                f"The native int8 kernel cannot run here ({self.model.kernel_note}); serving {self.path.name} with "
                "onnxruntime's int8 kernels instead (about the speed of `inference.backend` 'onnxruntime')."
            )
        else:
            logger.debug(f"Serving {self.path.name} with the native kernel's {self.kernel} path.")
        self.uses_ngrams = self.model.uses_ngrams
        self.num_labels = int(self.model.classifier_b.shape[0])

    def _forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray]
    ) -> np.ndarray:
        return self.model(input_ids, attention_mask, ngram_ids)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, kernel={self.kernel!r})"


# --------------------------------------------------------------------------------------------
# tokenizer without transformers
# --------------------------------------------------------------------------------------------
class TextEncoder:
    """Texts -> right-padded ``(input_ids, attention_mask)`` int64 arrays, with the ``tokenizers`` library only.

    Gives the same ids as ``PreTrainedTokenizerFast(texts, truncation=True, max_length=max_length,
    padding=True)`` for the ``tokenizer.json`` that ``save_pretrained`` writes, without importing
    transformers (which imports torch: ~0.7 GB and seconds at start-up).
    """

    def __init__(self, tokenizer_json: Path, max_length: int, pad_token: Optional[str] = None) -> None:
        from tokenizers import Tokenizer

        path = Path(tokenizer_json)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: save the tokenizer with a fast (Rust) tokenizer.")
        self.tokenizer = Tokenizer.from_file(str(path))
        pad_token = pad_token or _pad_token(path.parent) or "[PAD]"
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"the tokenizer in {path} has no padding token {pad_token!r}")
        self.max_length = int(max_length)
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

    def __call__(self, texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask


def _pad_token(folder: Path) -> Optional[str]:
    import json

    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
            except (OSError, ValueError):
                continue
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                return value
    return None


# --------------------------------------------------------------------------------------------
# export (train time) and load
# --------------------------------------------------------------------------------------------
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
        from nlu_bert.bert import native

        native.export(model.state_dict(), model.encoder.config.to_dict(), folder / native.NATIVE_FILE, save_dtype)
        return [native.NATIVE_FILE]
    target = folder / ONNX_FILES[precision]
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
                expected = export_model(*probe).float().numpy()
            report["export_s"] = round(time.perf_counter() - start, 2)

            graph = raw
            if fuse:
                start = time.perf_counter()
                fused_path = Path(tmp) / "fused.onnx"
                try:
                    report["fused_ops"] = _fuse_transformer(raw, fused_path, export_model)
                    graph = fused_path
                except Exception as e:  # noqa: BLE001 - an unfused graph is slower, not wrong
                    logger.warning("onnxruntime's transformer fusions failed (%s: %s); exporting the unfused graph", type(e).__name__, e)
                report["fuse_s"] = round(time.perf_counter() - start, 2)

            def quantize(src: Path, out: Path) -> None:
                _quantize_int8(src, out, per_channel=per_channel, quantize_embeddings=quantize_embeddings)

            store_export(graph, target, precision, quantize, report)
    finally:
        if was_training:
            export_model.train()
    report["bytes"] = target.stat().st_size

    if check:
        predictor = OnnxRuntimePredictor(target, precision, 1)
        feed = [p.numpy() for p in probe]
        got = predictor(*feed) if len(feed) == 3 else predictor(feed[0], feed[1], None)
        diff = float(np.max(np.abs(got - expected)))
        scale = float(np.max(np.abs(expected))) or 1.0
        report["probe_max_abs_diff"] = diff
        report["probe_top1_agree"] = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
        if precision == "fp32" and diff > 1e-3 * max(1.0, scale):
            target.unlink()
            raise RuntimeError(
                f"the ONNX export of the intent model does not match torch (max |diff| {diff:.2e}); "
                "use `inference.backend: torch`."
            )
    logger.info("exported %s (%s, %.1f MB): %s", target.name, precision, report["bytes"] / 1e6, report)
    return report


def store_export(graph: Path, target: Path, precision: str, quantize: Any, report: Dict[str, Any]) -> None:
    """The last step of an export: ``quantize(graph, out)`` for int8 (timed into ``report``), then the
    graph is copied to ``target``."""
    if precision == "int8":
        start = time.perf_counter()
        quantized = graph.with_name(graph.stem + ".int8.onnx")
        quantize(graph, quantized)
        graph = quantized
        report["quantize_s"] = round(time.perf_counter() - start, 2)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(graph, target)


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
    return ids, mask, ngrams


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

    names = list(INPUT_NAMES[: len(probe)])
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "ngram_ids": {0: "batch", 1: "ngrams"},
        OUTPUT_NAME: {0: "batch"},
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
            output_names=[OUTPUT_NAME],
            dynamic_axes={k: v for k, v in axes.items() if k in names or k == OUTPUT_NAME},
            opset_version=ONNX_OPSET,
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
    with _quiet_logs():
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


def _quantize_int8(src: Path, out: Path, per_channel: bool, quantize_embeddings: bool) -> None:
    """BERT: :data:`BERT_INT8_OP_TYPES`, and with ``quantize_embeddings`` the embedding lookups too."""
    op_types = list(BERT_INT8_OP_TYPES) + (["EmbedLayerNormalization", "Gather"] if quantize_embeddings else [])
    quantize_int8(src, out, op_types, per_channel=per_channel)


def quantize_int8(src: Path, out: Path, op_types: List[str], per_channel: bool = True) -> None:
    """Dynamic int8 of ``op_types``: s8 weights (per output channel), u8 activations quantized per call, full
    8-bit range (VNNI has no u8*s8 overflow); only constant weights are quantized."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_logs():  # "please consider pre-processing" and fusion notes
        quantize_dynamic(
            str(src),
            str(out),
            op_types_to_quantize=op_types,
            per_channel=per_channel,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )


def return_freed_memory() -> bool:
    """Hand the heap pages freed while a model loaded back to the system (glibc's ``malloc_trim``). Loading reads
    and converts tensors, and with its default settings glibc keeps most of what was freed in the process: 53-67 MB
    after the GPT-2 scorer's session is built. True where it ran (Linux with glibc), else False."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # another C library (musl): no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


def half_lookup_tables(graph: Any) -> List[str]:
    """Store in fp16 the fp32 tables of ``graph`` (an ONNX ``GraphProto``, changed in place) that only ``Gather``
    nodes read (embedding lookups such as GPT-2's 21,128 x 768 token table, 65 MB in fp32), each of those Gathers
    followed by a ``Cast`` to fp32: half their bytes on disk and in memory, and only the looked-up rows are
    converted. A table that any other node reads stays fp32, and a graph with subgraphs (If, Loop, Scan) is left as
    it is. Returns the names of the tables it converted."""
    import onnx
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for node in graph.node for a in node.attribute):
        return []  # a subgraph may read a table from the outer scope
    readers: Dict[str, List[Tuple[Any, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, slot))
    outputs = {o.name for o in graph.output}
    tables = {
        init.name
        for init in graph.initializer
        if init.data_type == TensorProto.FLOAT
        and init.name not in outputs
        and readers.get(init.name)
        and all(node.op_type == "Gather" and slot == 0 for node, slot in readers[init.name])
    }
    if not tables:
        return []
    for init in graph.initializer:
        if init.name in tables:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    nodes = []
    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        nodes.append(node)
        if node.op_type == "Gather" and node.input[0] in tables:
            rows = node.output[0]
            node.output[0] = f"{rows}_fp16"
            nodes.append(helper.make_node("Cast", [node.output[0]], [rows], to=TensorProto.FLOAT, name=f"{node.name}_to_fp32"))
    graph.ClearField("node")
    graph.node.extend(nodes)
    return sorted(tables)


class _quiet_logs:
    """Silence onnxruntime's export-time warnings. Its tools log through the root logger, whose first
    use would install a stderr handler (``logging.basicConfig``): a NullHandler prevents that."""

    def __enter__(self) -> None:
        root = logging.getLogger()
        self.added = None
        if not root.handlers:
            self.added = logging.NullHandler()
            root.addHandler(self.added)
        self.previous = logging.root.manager.disable
        logging.disable(logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        logging.disable(self.previous)
        if self.added is not None:
            logging.getLogger().removeHandler(self.added)


def load_predictor(
    folder: Path,
    backend: str,
    precision: str,
    num_threads: int,
    model: Optional["IntentModel"] = None,
    allow_spinning: Optional[bool] = None,
    device: Any = None,
) -> Predictor:
    """The predictor for ``backend`` / ``precision``. torch needs the fp32 ``model`` (it is changed in
    place); onnxruntime and native read the file :func:`export_for_inference` wrote in ``folder``."""
    validate_inference(backend, precision, num_threads)
    if backend == "torch":
        if model is None:
            raise ValueError("the torch inference backend needs the loaded IntentModel: pass model=...")
        return TorchPredictor(model, precision, num_threads, device=device)
    if backend == "native":
        from nlu_bert.bert import native

        path = Path(folder) / native.NATIVE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: this model was not exported for `inference.backend` 'native'. Train again "
                "with this inference config."
            )
        return NativePredictor(path, num_threads, allow_spinning=allow_spinning)
    path = Path(folder) / ONNX_FILES[precision]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this model was not exported for `inference.backend` 'onnxruntime' with "
            f"`inference.precision` '{precision}'. Train again with this inference config."
        )
    return OnnxRuntimePredictor(path, precision, num_threads, allow_spinning=allow_spinning)
