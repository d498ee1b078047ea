"""BERT inference backends: what maps padded token ids to the intent model's logits in `rasa run`.

The component calls three functions:

* :func:`validate_inference` when it is created (a bad value is a clear ``ValueError``);
* :func:`resolve_backend` when the encoder is known (train time): what ``auto`` (the default) becomes;
* :func:`load_predictor` when it loads: a :class:`Predictor` maps padded token ids to logits, whichever
  backend computes them. What the archive holds for each backend is written by :mod:`nlu_bert.bert.export`.

Nothing here imports torch or onnxruntime at module import time. The onnxruntime and native predictors never
import torch (``import torch`` costs about 3 s and 0.7 GB; onnxruntime about 0.3 s).

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

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

import numpy as np

from nlu_bert import archive, onnx_tools
from nlu_bert.bert import native
from nlu_bert.hardware import resolve_threads

if TYPE_CHECKING:  # pragma: no cover
    from nlu_bert.bert.model import IntentModel

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "native")
PRECISIONS = ("fp32", "bf16", "int8")
# onnxruntime's CPU kernels have no bf16 GEMM on x86: a bf16 graph would be slower than fp32.
# native: nlu-bert's own int8 BERT kernel (nlu_bert/bert/native), int8 only.
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

INPUT_NAMES = ("input_ids", "attention_mask", "ngram_ids")
OUTPUT_NAME = "logits"
# a model with an entity head: its token n-gram ids in, its tag scores out
TOKEN_NGRAM_INPUT = "token_ngram_ids"
TAG_SCORES_NAME = "tag_scores"

# How the config keys are called in messages; the component may pass its own names.
DEFAULT_KEY_NAMES: Dict[str, str] = {
    "backend": "inference.backend",
    "precision": "inference.precision",
    "num_threads": "inference.threads",
}


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def validate_inference(
    backend: str, precision: str, num_threads: int, key_names: Optional[Mapping[str, str]] = None
) -> None:
    """Raise ``ValueError`` naming the key, the value received and the allowed values."""
    keys = {**DEFAULT_KEY_NAMES, **(key_names or {})}
    if backend not in (AUTO,) + BACKENDS:
        raise ValueError(f"`{keys['backend']}` must be one of {_quoted((AUTO,) + BACKENDS)}, got {backend!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"`{keys['precision']}` must be one of {_quoted(PRECISIONS)}, got {precision!r}.")
    allowed = PRECISIONS if backend == AUTO else SUPPORTED_PRECISIONS[backend]
    if precision not in allowed:
        others = [b for b in BACKENDS if precision in SUPPORTED_PRECISIONS[b]]
        raise ValueError(
            f"`{keys['precision']}` {precision!r} is not available with `{keys['backend']}` {backend!r} "
            f"(allowed there: {_quoted(allowed)}). Use `{keys['backend']}` {_quoted(others)} for {precision}, "
            f"or another precision."
        )
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 0:
        raise ValueError(f"`{keys['num_threads']}` must be an integer >= 0 (0 = all cores), got {num_threads!r}.")


def resolve_backend(backend: str, precision: str, encoder_config: Mapping[str, Any]) -> str:
    """The backend that serves ``backend`` (``auto`` resolved): for int8, native where its kernel computes this
    encoder (BERT), else onnxruntime; onnxruntime for fp32; torch for bf16 (the only backend that has it)."""
    if backend != AUTO:
        return backend
    if precision == "int8":
        return "native" if native.check_shape(encoder_config) is None else "onnxruntime"
    return "onnxruntime" if precision in SUPPORTED_PRECISIONS["onnxruntime"] else "torch"


def _quoted(values: Any) -> str:
    return ", ".join(f"'{v}'" for v in values)


# --------------------------------------------------------------------------------------------
# predictors
# --------------------------------------------------------------------------------------------
class Predictor:
    """``predictor(input_ids, attention_mask, ngram_ids) -> float32 logits [batch, num_labels]``;
    ``predictor.predict(..., token_ngram_ids)`` -> ``(logits, tag_scores)``, the tag scores ``[batch, seq, tags]`` of
    a model with an entity head (``has_entities``), else None.

    Inputs are right-padded integer arrays ``[batch, seq]`` (``ngram_ids`` ``[batch, n]``, 0 =
    padding, or ``None`` for a model without n-gram features; ``token_ngram_ids`` ``[batch, seq, k]`` for an entity
    head with n-gram features). Trailing columns that are padding in every row are cut off before the forward pass:
    they cannot change the logits, only the cost.
    """

    backend: str = ""
    precision: str = ""
    num_threads: int = 0
    uses_ngrams: bool = False
    has_entities: bool = False
    uses_token_ngrams: bool = False
    num_labels: int = 0  # set by the native backend's predictors

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray] = None
    ) -> np.ndarray:
        return self.predict(input_ids, attention_mask, ngram_ids)[0]

    def predict(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        ngram_ids: Optional[np.ndarray] = None,
        token_ngram_ids: Optional[np.ndarray] = None,
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        input_ids, attention_mask, ngram_ids = self._prepare(input_ids, attention_mask, ngram_ids)
        if self.uses_token_ngrams:
            if token_ngram_ids is None:
                raise ValueError("this model's entity head was trained with n-gram features; pass token_ngram_ids")
            token_ngram_ids = np.ascontiguousarray(_as_int64(token_ngram_ids)[:, : input_ids.shape[1]])
        else:
            token_ngram_ids = None
        return self._forward(input_ids, attention_mask, ngram_ids, token_ngram_ids)

    def _forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        ngram_ids: Optional[np.ndarray],
        token_ngram_ids: Optional[np.ndarray],
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:  # pragma: no cover - abstract
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
            self._describe(model)
            return
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            model = _quantize_torch_int8(model)
        elif onednn_fp32:
            _route_linear_through_onednn(model)
        self.model = model
        self._describe(model)

    def _describe(self, model: "IntentModel") -> None:
        self.uses_ngrams = getattr(model, "ngrams", None) is not None
        head = getattr(model, "entities", None)
        self.has_entities = head is not None
        self.uses_token_ngrams = head is not None and head.ngrams is not None

    def _forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        ngram_ids: Optional[np.ndarray],
        token_ngram_ids: Optional[np.ndarray],
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        import torch

        inputs = [input_ids, attention_mask, ngram_ids, token_ngram_ids]
        tensors = [None if a is None else torch.from_numpy(a).to(self.device) for a in inputs]
        with torch.inference_mode():
            outputs = self.model(*tensors)
        if isinstance(outputs, tuple):
            return outputs[0].float().cpu().numpy(), outputs[1].float().cpu().numpy()
        return outputs.float().cpu().numpy(), None


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


class OnnxRuntimePredictor(Predictor):
    """An onnxruntime CPU session: intra-op threads = ``num_threads`` (0 = all physical cores),
    sequential execution, all graph optimizations. ``allow_spinning`` lets idle worker threads
    busy-wait for the next op during a run, never after it (see ``onnx_tools.ALLOW_SPINNING``)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, precision: str, num_threads: int, allow_spinning: Optional[bool] = None) -> None:
        self.precision = precision
        self.path = Path(path)
        self.num_threads = int(num_threads)
        self.allow_spinning = onnx_tools.ALLOW_SPINNING if allow_spinning is None else bool(allow_spinning)
        self.session, self.session_options = onnx_tools.ort_session(self.path, self.num_threads, self.allow_spinning)
        names = [i.name for i in self.session.get_inputs()]
        self.input_names = names
        self.uses_ngrams = "ngram_ids" in names
        self.uses_token_ngrams = TOKEN_NGRAM_INPUT in names
        self.output_names = [o.name for o in self.session.get_outputs()][:2]
        self.has_entities = TAG_SCORES_NAME in self.output_names

    def _forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        ngram_ids: Optional[np.ndarray],
        token_ngram_ids: Optional[np.ndarray],
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if ngram_ids is not None:
            feed["ngram_ids"] = ngram_ids
        if token_ngram_ids is not None:
            feed[TOKEN_NGRAM_INPUT] = token_ngram_ids
        outputs = self.session.run(self.output_names, feed)
        return outputs[0], (outputs[1] if self.has_entities else None)


class NativePredictor(Predictor):
    """The native file (:mod:`nlu_bert.bert.native`): nlu-bert's C kernel where it runs (``kernel`` 'amx' or 'vnni'),
    else the same int8 weights as an onnxruntime graph built at load (``kernel`` 'onnxruntime'). Never imports
    torch."""

    backend = "native"
    precision = "int8"

    def __init__(self, path: Path, num_threads: int, allow_spinning: Optional[bool] = None) -> None:
        self.path = Path(path)
        self.num_threads = int(num_threads)
        spinning = onnx_tools.ALLOW_SPINNING if allow_spinning is None else bool(allow_spinning)
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
        self.has_entities = self.model.has_entities
        self.uses_token_ngrams = self.model.uses_token_ngrams
        self.num_labels = int(self.model.classifier_b.shape[0])

    def _forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        ngram_ids: Optional[np.ndarray],
        token_ngram_ids: Optional[np.ndarray],
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        return self.model.predict(input_ids, attention_mask, ngram_ids, token_ngram_ids)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, kernel={self.kernel!r})"


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
        path = Path(folder) / archive.NATIVE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: this model was not exported for `inference.backend` 'native'. Train again "
                "with this inference config."
            )
        return NativePredictor(path, num_threads, allow_spinning=allow_spinning)
    path = Path(folder) / archive.BERT_ONNX_FILES[precision]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this model was not exported for `inference.backend` 'onnxruntime' with "
            f"`inference.precision` '{precision}'. Train again with this inference config."
        )
    return OnnxRuntimePredictor(path, precision, num_threads, allow_spinning=allow_spinning)
