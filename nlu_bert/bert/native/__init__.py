"""The ``native`` inference backend: BERT's encoder in int8 through a small C kernel of nlu-bert's own.

Why: at 16-32 tokens a BERT-base forward pass is 48 weight GEMMs with 16-32 rows. onnxruntime's int8 kernel
computes them at 640 GFLOP/s when the weights are in cache but does not overlap the 85 MB weight read with the
arithmetic (``benchmarks/int8_gemm_kernels.py``), so the products alone take about 2× this machine's int8 FLOP
floor. ``bert_int8.c`` streams each 16-column weight panel once, with software prefetch, into 16 VNNI
accumulators per 16-token tile, and runs attention, GELU and LayerNorm between the GEMMs in the same OpenMP
region. On CPUs with AMX (Intel Sapphire Rapids and newer) the same products run on AMX tiles (TDPBUSD on
16 x 64 u8 x s8 tiles), which at 32-64 tokens is about twice the VNNI path; the int32 sums and the epilogue
are the same, so are the logits.

What it computes is the ``IntentModel`` of :mod:`nlu_bert.bert.model` with a BERT encoder:

* weights: symmetric int8 per output channel (the scheme of the onnxruntime int8 default);
* activations: asymmetric u8 per token row, so a message's logits do not depend on the other messages of
  its batch;
* embeddings, attention, GELU (exact erf), LayerNorm, pooling and the head in fp32.

At train time :func:`export` writes ``model.native.safetensors`` (int8 weight panels, fp32 scales, and the other
tensors in the archive's ``save_dtype``). :func:`read` reads it with numpy only (no torch, no onnxruntime). The
kernel needs an x86-64 CPU with AVX-512 (F, BW, VL) and AVX-512 VNNI, and the compiled library (built by
``pip install`` when a C compiler with OpenMP is there); :func:`choose_kernel` picks AMX, VNNI or, where the
C kernel cannot run (:func:`unavailable_reason` says why), onnxruntime on the same file
(:class:`OnnxIntentModel`, the graph from :mod:`nlu_bert.bert.native.portable`).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from nlu_bert.bert.entities import numpy_tag_scores
from nlu_bert.hardware import cpu_flags

FORMAT = 1
LIBRARY_STEM = "_bert_int8"
ABI_VERSION = 3  # nb_abi_version() in bert_int8.c
KERNEL_ENV = "NLU_BERT_NATIVE_KERNEL"
KERNELS = ("auto", "amx", "vnni", "onnxruntime")  # the values of KERNEL_ENV
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")
AMX_CPU_FLAGS = ("amx_tile", "amx_int8")
AMX_BLOCK = 64  # the AMX path needs hidden and intermediate sizes that are multiples of this
# the four int8 products of a layer, in the order of nb_layer.w in bert_int8.c
PRODUCTS = ("qkv", "attention_output", "ffn_in", "ffn_out")
_HF_LINEARS: Dict[str, Tuple[str, ...]] = {
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attention_output": ("attention.output.dense",),
    "ffn_in": ("intermediate.dense",),
    "ffn_out": ("output.dense",),
}
_HF_LAYER_NORMS = {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}
_EMBEDDINGS = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")
# tables of which a forward pass reads a few rows; read() keeps them in the file's dtype
LOOKUP_TABLES = ("embeddings.word_embeddings.weight", "ngrams.weight", "entities.ngrams.weight")


# --------------------------------------------------------------------------------------------
# can it run here?
# --------------------------------------------------------------------------------------------
def library_path() -> Optional[Path]:
    """The compiled kernel next to this file (``pip install`` builds it), or None."""
    for candidate in sorted(Path(__file__).parent.glob(f"{LIBRARY_STEM}*.so")):
        return candidate
    return None


def kernel_choice() -> str:
    """``NLU_BERT_NATIVE_KERNEL``: ``auto`` (the default: AMX, else VNNI, else onnxruntime), or one of ``amx``,
    ``vnni`` (a C kernel path, an error where it cannot run) and ``onnxruntime`` (to compare, or to rule the C
    kernel out)."""
    choice = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if choice not in KERNELS:
        raise ValueError(f"{KERNEL_ENV} must be one of {', '.join(repr(k) for k in KERNELS)}, got {choice!r}.")
    return choice


def unavailable_reason() -> Optional[str]:
    """None when the native C kernel can run on this machine, else what is missing (for logs and errors)."""
    if kernel_choice() == "onnxruntime":
        return f"{KERNEL_ENV}=onnxruntime turns it off"
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return f"it runs on x86-64 Linux only (this is {sys.platform} {platform.machine()})"
    missing = [flag for flag in CPU_FLAGS if flag not in cpu_flags()]
    if missing:
        return f"this CPU lacks {', '.join(missing)}"
    if library_path() is None:
        return (
            "its compiled library is missing (pip builds it when installing nlu-bert from source with gcc "
            "and OpenMP; reinstall with a C compiler present)"
        )
    return None


_AMX_GRANTED: Optional[bool] = None


def amx_unavailable_reason(encoder_config: Mapping[str, Any]) -> Optional[str]:
    """None when the kernel's AMX path can run this encoder here, else why not (the VNNI path runs instead)."""
    global _AMX_GRANTED
    reason = unavailable_reason()
    if reason:
        return reason
    missing = [flag for flag in AMX_CPU_FLAGS if flag not in cpu_flags()]
    if missing:
        return f"this CPU lacks {', '.join(missing)}"
    hidden, inter = int(encoder_config["hidden_size"]), int(encoder_config["intermediate_size"])
    if hidden % AMX_BLOCK or inter % AMX_BLOCK:
        return f"hidden_size ({hidden}) and intermediate_size ({inter}) are not multiples of {AMX_BLOCK}"
    lib = _library()
    if not lib.nb_amx_compiled():
        return "the library was built by a compiler without AMX support (gcc >= 11 has it; reinstall nlu-bert)"
    if _AMX_GRANTED is None:
        _AMX_GRANTED = lib.nb_amx_request() == 0
    if not _AMX_GRANTED:
        return "Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM; a kernel older than 5.16?)"
    return None


def choose_kernel(encoder_config: Mapping[str, Any]) -> Tuple[str, Optional[str]]:
    """The fastest engine for this encoder here, ``amx``, ``vnni`` or ``onnxruntime``, and why the faster ones
    cannot run (None when the first choice runs). ``NLU_BERT_NATIVE_KERNEL`` names one instead; a named C
    kernel path that cannot run is a ``RuntimeError``."""
    choice = kernel_choice()
    if choice == "onnxruntime":
        return "onnxruntime", None
    reason = unavailable_reason()
    amx_reason = reason or amx_unavailable_reason(encoder_config)
    if choice == "amx" and amx_reason:
        raise RuntimeError(
            f"{KERNEL_ENV}=amx, but the native kernel's AMX path cannot run here: {amx_reason}. Unset {KERNEL_ENV} to let nlu-bert choose."
        )
    if choice == "vnni" and reason:
        raise RuntimeError(
            f"{KERNEL_ENV}=vnni, but the native int8 kernel cannot run here: {reason}. Unset {KERNEL_ENV} to serve the file with onnxruntime."
        )
    if choice == "vnni":
        return "vnni", None
    if amx_reason is None:
        return "amx", None
    return ("vnni", None) if reason is None else ("onnxruntime", reason)


class _Layer(ctypes.Structure):
    _fields_ = [
        ("w", ctypes.c_void_p * 4),
        ("scale", ctypes.c_void_p * 4),
        ("colsum", ctypes.c_void_p * 4),
        ("bias", ctypes.c_void_p * 4),
        ("ln1_gamma", ctypes.c_void_p),
        ("ln1_beta", ctypes.c_void_p),
        ("ln2_gamma", ctypes.c_void_p),
        ("ln2_beta", ctypes.c_void_p),
    ]


_LIBRARY: Optional[ctypes.CDLL] = None


def _library() -> ctypes.CDLL:
    global _LIBRARY
    if _LIBRARY is None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"the native int8 kernel cannot run here: {reason}")
        lib = ctypes.CDLL(str(library_path()))
        lib.nb_abi_version.restype = ctypes.c_int
        if lib.nb_abi_version() != ABI_VERSION:
            raise RuntimeError(
                f"the native int8 kernel at {library_path()} is from another nlu-bert version: reinstall nlu-bert"
            )
        lib.nb_workspace_bytes.restype = ctypes.c_size_t
        lib.nb_workspace_bytes.argtypes = [ctypes.c_int] * 4
        lib.nb_encode.restype = None
        lib.nb_encode.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Layer), ctypes.c_float, ctypes.c_int, ctypes.c_void_p,
            ctypes.c_int,
        ]  # fmt: skip
        lib.nb_amx_compiled.restype = ctypes.c_int
        lib.nb_amx_request.restype = ctypes.c_int
        _LIBRARY = lib
    return _LIBRARY


# --------------------------------------------------------------------------------------------
# weights: quantize and pack (train time), unpack
# --------------------------------------------------------------------------------------------
def quantize_linear(weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A Linear weight ``[out, in]`` -> (int8 panels ``[out/16, in/4, 16, 4]``, fp32 scale per output)."""
    weight = np.asarray(weight, dtype=np.float32)
    n, k = weight.shape
    scale = np.abs(weight).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.reshape(n // 16, 16, k // 4, 4).transpose(0, 2, 1, 3)), scale.astype(np.float32)


def amx_groups(panels: np.ndarray) -> np.ndarray:
    """Panels ``[N/16, K/4, 16, 4]`` regrouped for the AMX path: ``[N/64, K/64, 4, 16, 64]``, the four panels'
    64 x 16 tiles of each 64-deep step side by side (the same bytes, in the order the kernel reads them)."""
    p, k4, _, _ = panels.shape
    tiles = panels.reshape(p // 4, 4, k4 // 16, 16, 64)
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3, 4))


def dequantize_linear(panels: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The inverse of :func:`quantize_linear` (up to rounding): fp32 ``[out, in]``."""
    p, k4, _, _ = panels.shape
    q = panels.transpose(0, 2, 1, 3).reshape(p * 16, k4 * 4)
    return q.astype(np.float32) * scale[:, None]


def check_shape(config: Mapping[str, Any]) -> Optional[str]:
    """None if the kernel computes this encoder config exactly as transformers does, else why not."""
    if config.get("model_type", "bert") != "bert":
        return f"it computes BERT encoders only, not model_type {config.get('model_type')!r}"
    if config.get("hidden_act", "gelu") != "gelu":
        return f"it computes GELU (erf) only, not hidden_act {config.get('hidden_act')!r}"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return "it computes absolute position embeddings only"
    hidden, heads, inter = (
        int(config["hidden_size"]),
        int(config["num_attention_heads"]),
        int(config["intermediate_size"]),
    )
    if hidden % 16 or inter % 16 or hidden % heads:
        return (
            f"hidden_size ({hidden}) and intermediate_size ({inter}) must be multiples of 16, and hidden_size a "
            f"multiple of num_attention_heads ({heads})"
        )
    return None


def export(
    state: Mapping[str, Any], encoder_config: Mapping[str, Any], target: Path, dtype: str = "float16"
) -> Dict[str, Any]:
    """Write ``model.native.safetensors`` from an ``IntentModel`` state dict (torch tensors or numpy arrays).

    int8 panels and their fp32 scales for the 48 products; embeddings, biases, LayerNorms, n-grams and the
    head in ``dtype`` (``save_dtype``). Returns a small report (bytes, quantized parameters)."""
    from safetensors.numpy import save_file

    reason = check_shape(encoder_config)
    if reason:
        raise ValueError(f"the native backend cannot run this encoder: {reason}")
    arrays = {k: _numpy(v) for k, v in state.items()}
    store = np.float16 if dtype == "float16" else np.float32
    out: Dict[str, np.ndarray] = {}
    quantized = 0
    for name in _EMBEDDINGS + ("LayerNorm.weight", "LayerNorm.bias"):
        out[f"embeddings.{name}"] = arrays[f"encoder.embeddings.{name}"].astype(store)
    for layer in range(int(encoder_config["num_hidden_layers"])):
        prefix = f"encoder.encoder.layer.{layer}."
        for product in PRODUCTS:
            parts = _HF_LINEARS[product]
            weight = np.concatenate([arrays[prefix + p + ".weight"] for p in parts], axis=0)
            bias = np.concatenate([arrays[prefix + p + ".bias"] for p in parts], axis=0)
            panels, scale = quantize_linear(weight)
            out[f"layer.{layer}.{product}.panels"] = panels
            out[f"layer.{layer}.{product}.scale"] = scale
            out[f"layer.{layer}.{product}.bias"] = bias.astype(np.float32)
            quantized += weight.size
        for short, hf in _HF_LAYER_NORMS.items():
            out[f"layer.{layer}.{short}.weight"] = arrays[prefix + hf + ".weight"].astype(np.float32)
            out[f"layer.{layer}.{short}.bias"] = arrays[prefix + hf + ".bias"].astype(np.float32)
    # the heads; an entity head's CRF scores stay fp32 (a few numbers that decide whole tag sequences)
    for name in [n for n in arrays if n.startswith(("classifier.", "ngrams.", "entities."))]:
        out[name] = arrays[name].astype(np.float32 if ".crf." in name else store)
    meta = {"format": str(FORMAT), "encoder_config": json.dumps(dict(encoder_config))}
    target = Path(target)
    save_file(out, str(target), metadata=meta)
    return {"bytes": target.stat().st_size, "quantized_parameters": int(quantized)}


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    tensor = value.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.numpy()


def read(path: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The tensors of a native file and its encoder config: fp32 where the file holds fp16, except the lookup
    tables (:data:`LOOKUP_TABLES`), which stay as stored: a forward pass converts only the rows it looks up,
    and the word embeddings of a BERT-base vocabulary take 32 MB of memory in fp16 against 65 MB in fp32."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != str(FORMAT):
            raise ValueError(f"{path.name} has format {metadata.get('format')!r}; this nlu-bert reads format {FORMAT}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in tensors.items():
        if v.dtype == np.float16 and k not in LOOKUP_TABLES:
            tensors[k] = v.astype(np.float32)
    return tensors, json.loads(metadata["encoder_config"])


# --------------------------------------------------------------------------------------------
# the forward pass
# --------------------------------------------------------------------------------------------
class _NumpyEnds:
    """The parts of the IntentModel outside the encoder layers, in numpy: embeddings and their LayerNorm,
    mean pooling, the n-gram bag and the head. Subclasses run the layers (:meth:`_layers`)."""

    kernel = ""
    kernel_note: Optional[str] = None  # why no faster kernel serves the model (set by load_model)

    def __init__(self, tensors: Dict[str, np.ndarray], encoder_config: Mapping[str, Any], num_threads: int) -> None:
        self.num_threads = int(num_threads)
        self.hidden = int(encoder_config["hidden_size"])
        self.heads = int(encoder_config["num_attention_heads"])
        self.inter = int(encoder_config["intermediate_size"])
        self.n_layers = int(encoder_config["num_hidden_layers"])
        self.eps = float(encoder_config.get("layer_norm_eps", 1e-12))
        self.max_positions = int(encoder_config.get("max_position_embeddings", 512))
        self.word = tensors["embeddings.word_embeddings.weight"]
        self.position = tensors["embeddings.position_embeddings.weight"]
        self.token_type = tensors["embeddings.token_type_embeddings.weight"][0]
        self.emb_gamma = tensors["embeddings.LayerNorm.weight"]
        self.emb_beta = tensors["embeddings.LayerNorm.bias"]
        self.classifier_w = np.ascontiguousarray(tensors["classifier.weight"].T)
        self.classifier_b = tensors["classifier.bias"]
        self.ngrams = tensors.get("ngrams.weight")
        self.uses_ngrams = self.ngrams is not None
        self.entity_tensors = {k: v for k, v in tensors.items() if k.startswith("entities.")}
        self.has_entities = bool(self.entity_tensors)
        self.uses_token_ngrams = "entities.ngrams.weight" in self.entity_tensors
        self._hidden = np.empty(0, dtype=np.float32)
        self._lock = threading.Lock()  # one forward pass at a time: they share the buffers

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The encoder's last hidden state ``[batch, seq, hidden]`` (fp32, a copy)."""
        with self._lock:
            return self._encode(input_ids, attention_mask).copy()

    def _encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The last hidden state, maybe in this model's own buffer: valid until the next call (hold ``_lock``).
        The buffers are allocated once per largest shape and kept, not allocated and freed on every call."""
        batch, seq = input_ids.shape
        if seq > self.max_positions:
            raise ValueError(f"{seq} tokens is more than this model's {self.max_positions} positions")
        if input_ids.min() < 0 or input_ids.max() >= self.word.shape[0]:
            raise ValueError(
                f"token ids must lie in [0, {self.word.shape[0]}), got {input_ids.min()}..{input_ids.max()}"
            )
        if self._hidden.size < batch * seq * self.hidden:
            self._hidden = np.empty(batch * seq * self.hidden, dtype=np.float32)
        x = self._hidden[: batch * seq * self.hidden].reshape(batch, seq, self.hidden)
        x[...] = self.word[input_ids]  # rows converted to fp32 here where the table is fp16
        x += self.position[:seq]
        x += self.token_type
        x -= x.mean(-1, keepdims=True)
        scale = np.einsum("bth,bth->bt", x, x)
        scale /= self.hidden
        scale += self.eps
        np.sqrt(scale, out=scale)
        np.reciprocal(scale, out=scale)
        x *= scale[..., None]
        x *= self.emb_gamma
        x += self.emb_beta
        return self._layers(x, np.ascontiguousarray(attention_mask, dtype=np.int64))

    def _layers(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray]
    ) -> np.ndarray:
        return self.predict(input_ids, attention_mask, ngram_ids)[0]

    def predict(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        ngram_ids: Optional[np.ndarray],
        token_ngram_ids: Optional[np.ndarray] = None,
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(logits, tag scores of the entity head from the same hidden states, or None without one)."""
        if self.ngrams is not None and ngram_ids is None:
            raise ValueError("this model was trained with n-gram features; pass ngram_ids")
        weights = attention_mask.astype(np.float32)
        weights /= np.maximum(weights.sum(1, keepdims=True), 1.0)
        tag_scores = None
        with self._lock:
            hidden = self._encode(input_ids, attention_mask)
            features = np.einsum("bth,bt->bh", hidden, weights)
            if self.has_entities:
                tag_scores = numpy_tag_scores(hidden, self.entity_tensors, token_ngram_ids)
        if self.ngrams is not None:
            present = (ngram_ids > 0).astype(np.float32)
            present /= np.maximum(present.sum(1, keepdims=True), 1.0)
            bag = np.einsum("bnd,bn->bd", self.ngrams[ngram_ids].astype(np.float32), present)
            features = np.concatenate([features, bag], axis=-1)
        # einsum, not `@`: numpy's BLAS would start its own threads, whose busy-waiting (sched_yield) took the
        # cores from the kernel's threads and stalled forward passes for up to 100 ms
        logits = np.einsum("bh,hl->bl", features, self.classifier_w) + self.classifier_b
        return logits.astype(np.float32), tag_scores


class NativeIntentModel(_NumpyEnds):
    """``model(input_ids, attention_mask, ngram_ids) -> logits``: the IntentModel through the C kernel, its
    products on AMX tiles with ``amx`` (``kernel`` 'amx'; the caller checks :func:`amx_unavailable_reason`),
    else with AVX-512 VNNI (``kernel`` 'vnni'). Both give the same logits, bit for bit."""

    def __init__(
        self, tensors: Dict[str, np.ndarray], encoder_config: Mapping[str, Any], num_threads: int, amx: bool = False
    ) -> None:
        super().__init__(tensors, encoder_config, num_threads)
        reason = amx_unavailable_reason(encoder_config) if amx else None  # also asks Linux for the tile state
        if reason:
            raise RuntimeError(f"the native kernel's AMX path cannot run this model here: {reason}")
        self._lib = _library()
        self.amx = bool(amx)
        self.kernel = "amx" if self.amx else "vnni"
        self._keep: List[np.ndarray] = []  # every array the C structs point into
        self._workspace = np.empty(0, dtype=np.uint8)
        self._layers_c = (_Layer * self.n_layers)()
        for layer in range(self.n_layers):
            entry = self._layers_c[layer]
            for i, product in enumerate(PRODUCTS):
                panels = np.ascontiguousarray(tensors[f"layer.{layer}.{product}.panels"], dtype=np.int8)
                colsum = panels.astype(np.int32).sum(axis=(1, 3)).reshape(-1)  # per output column
                entry.w[i] = self._pin(amx_groups(panels) if self.amx else panels, np.int8).ctypes.data
                entry.scale[i] = self._pin(tensors[f"layer.{layer}.{product}.scale"], np.float32).ctypes.data
                entry.colsum[i] = self._pin(colsum, np.int32).ctypes.data
                entry.bias[i] = self._pin(tensors[f"layer.{layer}.{product}.bias"], np.float32).ctypes.data
            entry.ln1_gamma = self._pin(tensors[f"layer.{layer}.ln1.weight"], np.float32).ctypes.data
            entry.ln1_beta = self._pin(tensors[f"layer.{layer}.ln1.bias"], np.float32).ctypes.data
            entry.ln2_gamma = self._pin(tensors[f"layer.{layer}.ln2.weight"], np.float32).ctypes.data
            entry.ln2_beta = self._pin(tensors[f"layer.{layer}.ln2.bias"], np.float32).ctypes.data

    def _pin(self, array: np.ndarray, dtype: Any) -> np.ndarray:
        array = np.ascontiguousarray(array, dtype=dtype)
        self._keep.append(array)
        return array

    def _layers(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The C kernel, in place on ``x`` (this model's buffer), with a 64-byte aligned workspace that is
        kept and only grows."""
        batch, seq, _ = x.shape
        need = int(self._lib.nb_workspace_bytes(batch, seq, self.hidden, self.inter)) + 64
        if self._workspace.size < need:
            self._workspace = np.empty(need, dtype=np.uint8)
        address = self._workspace.ctypes.data
        self._lib.nb_encode(
            x.ctypes.data, mask.ctypes.data, batch, seq, self.hidden, self.heads, self.inter, self.n_layers,
            self._layers_c, self.eps, self.num_threads, address + (-address % 64), int(self.amx),
        )  # fmt: skip
        return x


class OnnxIntentModel(_NumpyEnds):
    """The same file and model where the C kernel cannot run: the encoder layers as an onnxruntime int8 graph
    built in memory (:mod:`nlu_bert.bert.native.portable`). ``allow_spinning`` as for the onnxruntime backend."""

    kernel = "onnxruntime"

    def __init__(
        self, tensors: Dict[str, np.ndarray], encoder_config: Mapping[str, Any], num_threads: int,
        allow_spinning: bool = True, signed_weights: Optional[bool] = None,
    ) -> None:  # fmt: skip
        from nlu_bert.bert.native import portable
        from nlu_bert.onnx_tools import ort_session

        super().__init__(tensors, encoder_config, num_threads)
        if signed_weights is None:
            signed_weights = portable.signed_weights_fast(cpu_flags())
        self.signed_weights = bool(signed_weights)
        graph = portable.encoder_graph(tensors, encoder_config, self.signed_weights)
        self.session, _ = ort_session(graph, num_threads, allow_spinning)

    def _layers(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * np.finfo(np.float32).min
        return self.session.run(["last_hidden"], {"hidden": x, "mask_bias": bias})[0]


def load_model(path: Path, num_threads: int, allow_spinning: bool = True) -> _NumpyEnds:
    """The fastest engine for ``path`` on this machine (:func:`choose_kernel`): the C kernel with AMX, or with
    AVX-512 VNNI, else the onnxruntime graph. ``model.kernel`` says which; ``model.kernel_note`` why no faster one."""
    tensors, encoder_config = read(path)
    kernel, reason = choose_kernel(encoder_config)
    model: _NumpyEnds
    if kernel == "onnxruntime":
        model = OnnxIntentModel(tensors, encoder_config, num_threads, allow_spinning=allow_spinning)
    else:
        model = NativeIntentModel(tensors, encoder_config, num_threads, amx=kernel == "amx")
    model.kernel_note = reason
    return model
