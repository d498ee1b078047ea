"""The ``native`` inference backend: BERT's encoder in int8 through a small C kernel of nlu-bert's own.

Why: at 16-32 tokens a BERT-base forward pass is 48 weight GEMMs with 16-32 rows. onnxruntime's int8 kernel
computes them at 640 GFLOP/s when the weights are in cache but does not overlap the 85 MB weight read with the
arithmetic (``benchmarks/int8_gemm_kernels.py``), so the products alone take about 2× this machine's int8 FLOP
floor. ``bert_int8.c`` streams each 16-column weight panel once, with software prefetch, into 16 VNNI
accumulators per 16-token tile, and runs attention, GELU and LayerNorm between the GEMMs in the same OpenMP
region.

What it computes is the ``IntentModel`` of :mod:`nlu_bert.modeling` with a BERT encoder:

* weights: symmetric int8 per output channel (the scheme of the onnxruntime int8 default);
* activations: asymmetric u8 per token row, so a message's logits do not depend on the other messages of
  its batch;
* embeddings, attention, GELU (exact erf), LayerNorm, pooling and the head in fp32.

At train time :func:`export` writes ``model.native.safetensors`` (int8 weight panels, fp32 scales, and the other
tensors in the archive's ``save_dtype``). :func:`load` reads it with numpy only (no torch, no onnxruntime). The
kernel needs an x86-64 CPU with AVX-512 (F, BW, VL) and AVX-512 VNNI, and the compiled library (built by
``pip install`` when a C compiler with OpenMP is there); :func:`unavailable_reason` says why it cannot run
here, and the runtime then serves the same file with torch (:func:`torch_state_dict`).
"""
from __future__ import annotations

import ctypes
import json
import platform
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

NATIVE_FILE = "model.native.safetensors"
FORMAT = 1
LIBRARY_STEM = "_bert_int8"
ABI_VERSION = 2  # nb_abi_version() in bert_int8.c
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")
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


# --------------------------------------------------------------------------------------------
# can it run here?
# --------------------------------------------------------------------------------------------
def cpu_flags() -> List[str]:
    """The CPU flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def library_path() -> Optional[Path]:
    """The compiled kernel next to this file (``pip install`` builds it), or None."""
    for candidate in sorted(Path(__file__).parent.glob(f"{LIBRARY_STEM}*.so")):
        return candidate
    return None


def unavailable_reason() -> Optional[str]:
    """None when the native kernel can run on this machine, else what is missing (for logs and errors)."""
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
        ]  # fmt: skip
        _LIBRARY = lib
    return _LIBRARY


# --------------------------------------------------------------------------------------------
# weights: quantize and pack (train time), unpack (the torch fallback)
# --------------------------------------------------------------------------------------------
def quantize_linear(weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A Linear weight ``[out, in]`` -> (int8 panels ``[out/16, in/4, 16, 4]``, fp32 scale per output)."""
    weight = np.asarray(weight, dtype=np.float32)
    n, k = weight.shape
    scale = np.abs(weight).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.reshape(n // 16, 16, k // 4, 4).transpose(0, 2, 1, 3)), scale.astype(np.float32)


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
    hidden, heads, inter = int(config["hidden_size"]), int(config["num_attention_heads"]), int(config["intermediate_size"])
    if hidden % 16 or inter % 16 or hidden % heads:
        return (
            f"hidden_size ({hidden}) and intermediate_size ({inter}) must be multiples of 16, and hidden_size a "
            f"multiple of num_attention_heads ({heads})"
        )
    return None


def export(state: Mapping[str, Any], encoder_config: Mapping[str, Any], target: Path, dtype: str = "float16") -> Dict[str, Any]:
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
    for name in ("classifier.weight", "classifier.bias", "ngrams.weight"):
        if name in arrays:
            out[name] = arrays[name].astype(store)
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
    """The tensors of a native file and its encoder config (fp32 where the file holds fp16)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != str(FORMAT):
            raise ValueError(f"{path.name} has format {metadata.get('format')!r}; this nlu-bert reads format {FORMAT}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in tensors.items():
        if v.dtype == np.float16:
            tensors[k] = v.astype(np.float32)
    return tensors, json.loads(metadata["encoder_config"])


def torch_state_dict(tensors: Mapping[str, np.ndarray], encoder_config: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """An ``IntentModel`` state dict (numpy) from a native file: the int8 weights dequantized. For machines
    where the kernel cannot run: torch then computes what the kernel would, up to activation rounding."""
    hidden = int(encoder_config["hidden_size"])
    state: Dict[str, np.ndarray] = {}
    for name in _EMBEDDINGS + ("LayerNorm.weight", "LayerNorm.bias"):
        state[f"encoder.embeddings.{name}"] = tensors[f"embeddings.{name}"]
    for layer in range(int(encoder_config["num_hidden_layers"])):
        prefix = f"encoder.encoder.layer.{layer}."
        for product in PRODUCTS:
            weight = dequantize_linear(tensors[f"layer.{layer}.{product}.panels"], tensors[f"layer.{layer}.{product}.scale"])
            bias = tensors[f"layer.{layer}.{product}.bias"]
            parts = _HF_LINEARS[product]
            for i, part in enumerate(parts):
                rows = slice(i * hidden, (i + 1) * hidden) if len(parts) > 1 else slice(None)
                state[prefix + part + ".weight"] = np.ascontiguousarray(weight[rows])
                state[prefix + part + ".bias"] = np.ascontiguousarray(bias[rows])
        for short, hf in _HF_LAYER_NORMS.items():
            state[prefix + hf + ".weight"] = tensors[f"layer.{layer}.{short}.weight"]
            state[prefix + hf + ".bias"] = tensors[f"layer.{layer}.{short}.bias"]
    for name in ("classifier.weight", "classifier.bias", "ngrams.weight"):
        if name in tensors:
            state[name] = tensors[name]
    return state


# --------------------------------------------------------------------------------------------
# the forward pass
# --------------------------------------------------------------------------------------------
class NativeIntentModel:
    """``model(input_ids, attention_mask, ngram_ids) -> logits``: the IntentModel through the C kernel."""

    def __init__(self, tensors: Dict[str, np.ndarray], encoder_config: Mapping[str, Any], num_threads: int) -> None:
        self._lib = _library()
        self.num_threads = int(num_threads)
        self.hidden = int(encoder_config["hidden_size"])
        self.heads = int(encoder_config["num_attention_heads"])
        self.inter = int(encoder_config["intermediate_size"])
        self.n_layers = int(encoder_config["num_hidden_layers"])
        self.eps = float(encoder_config.get("layer_norm_eps", 1e-12))
        self.max_positions = int(encoder_config.get("max_position_embeddings", 512))
        self._keep: List[np.ndarray] = []  # every array the C structs point into
        self.word = tensors["embeddings.word_embeddings.weight"]
        self.position = tensors["embeddings.position_embeddings.weight"]
        self.token_type = tensors["embeddings.token_type_embeddings.weight"][0]
        self.emb_gamma = tensors["embeddings.LayerNorm.weight"]
        self.emb_beta = tensors["embeddings.LayerNorm.bias"]
        self.classifier_w = np.ascontiguousarray(tensors["classifier.weight"].T)
        self.classifier_b = tensors["classifier.bias"]
        self.ngrams = tensors.get("ngrams.weight")
        self.uses_ngrams = self.ngrams is not None
        self._workspace = np.empty(0, dtype=np.uint8)
        self._hidden = np.empty(0, dtype=np.float32)
        self._lock = threading.Lock()  # one forward pass at a time: they share the buffers
        self._layers = (_Layer * self.n_layers)()
        for layer in range(self.n_layers):
            entry = self._layers[layer]
            for i, product in enumerate(PRODUCTS):
                panels = self._pin(tensors[f"layer.{layer}.{product}.panels"], np.int8)
                entry.w[i] = panels.ctypes.data
                entry.scale[i] = self._pin(tensors[f"layer.{layer}.{product}.scale"], np.float32).ctypes.data
                colsum = panels.astype(np.int32).sum(axis=(1, 3)).reshape(-1)  # per output column
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

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The encoder's last hidden state ``[batch, seq, hidden]`` (fp32, a copy)."""
        with self._lock:
            return self._encode(input_ids, attention_mask).copy()

    def _encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The last hidden state in this model's own buffer, valid until the next call (hold ``_lock``).
        The buffers are allocated once per largest shape and kept, not allocated and freed on every call."""
        batch, seq = input_ids.shape
        if seq > self.max_positions:
            raise ValueError(f"{seq} tokens is more than this model's {self.max_positions} positions")
        if input_ids.min() < 0 or input_ids.max() >= self.word.shape[0]:
            raise ValueError(f"token ids must lie in [0, {self.word.shape[0]}), got {input_ids.min()}..{input_ids.max()}")
        x, workspace = self._buffers(batch, seq)
        np.take(self.word, input_ids, axis=0, out=x)
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
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        self._lib.nb_encode(
            x.ctypes.data, mask.ctypes.data, batch, seq, self.hidden, self.heads, self.inter, self.n_layers,
            self._layers, self.eps, self.num_threads, workspace,
        )  # fmt: skip
        return x

    def _buffers(self, batch: int, seq: int) -> Tuple[np.ndarray, int]:
        """The hidden-state buffer and the address of a 64-byte aligned C workspace for ``batch`` × ``seq``
        tokens; both are kept and only grow."""
        need = int(self._lib.nb_workspace_bytes(batch, seq, self.hidden, self.inter)) + 64
        if self._workspace.size < need:
            self._workspace = np.empty(need, dtype=np.uint8)
        if self._hidden.size < batch * seq * self.hidden:
            self._hidden = np.empty(batch * seq * self.hidden, dtype=np.float32)
        address = self._workspace.ctypes.data
        return self._hidden[: batch * seq * self.hidden].reshape(batch, seq, self.hidden), address + (-address % 64)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, ngram_ids: Optional[np.ndarray]) -> np.ndarray:
        if self.ngrams is not None and ngram_ids is None:
            raise ValueError("this model was trained with n-gram features; pass ngram_ids")
        weights = attention_mask.astype(np.float32)
        weights /= np.maximum(weights.sum(1, keepdims=True), 1.0)
        with self._lock:
            features = np.einsum("bth,bt->bh", self._encode(input_ids, attention_mask), weights)
        if self.ngrams is not None:
            present = (ngram_ids > 0).astype(np.float32)
            present /= np.maximum(present.sum(1, keepdims=True), 1.0)
            bag = np.einsum("bnd,bn->bd", self.ngrams[ngram_ids], present)
            features = np.concatenate([features, bag], axis=-1)
        # einsum, not `@`: numpy's BLAS would start its own threads, whose busy-waiting (sched_yield) took the
        # cores from the kernel's threads and stalled forward passes for up to 100 ms
        return (np.einsum("bh,hl->bl", features, self.classifier_w) + self.classifier_b).astype(np.float32)
