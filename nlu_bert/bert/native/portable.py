"""The native file on CPUs where nlu-bert's C kernel cannot run: the same int8 encoder as an onnxruntime graph.

:func:`encoder_graph` turns the tensors of ``model.native.safetensors`` into an ONNX graph of the encoder layers
(embeddings, pooling and the head stay in numpy, as with the C kernel), built in memory when the model loads:
no torch, no second file in the archive, no export at train time. Each of the 48 products is one
``com.microsoft.DynamicQuantizeMatMul`` over the file's int8 weights and per-channel scales (u8 activations
quantized per tensor, the scheme of the ``onnxruntime`` backend's int8 graph); attention, GELU and LayerNorm are
fp32 ONNX ops that onnxruntime fuses where it can.

On CPUs without VNNI, onnxruntime multiplies u8 by s8 with VPMADDUBSW, whose 16-bit sums can saturate
(onnxruntime's quantization guide); there the weights are stored as u8 with a zero point of 128 instead, which
its kernels multiply without saturation.
"""

from __future__ import annotations

from typing import Any, List, Mapping

import numpy as np

OPSET = 17  # LayerNormalization
IR_VERSION = 8  # read by every onnxruntime nlu-bert supports (>= 1.17)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def signed_weights_fast(flags: List[str]) -> bool:
    """True where onnxruntime's u8 × s8 product has a VNNI instruction (no 16-bit saturation)."""
    return any(flag in flags for flag in VNNI_FLAGS)


def int8_matrix(panels: np.ndarray) -> np.ndarray:
    """The int8 weight ``[in, out]`` (the MatMul layout) of a packed ``[out/16, in/4, 16, 4]`` panel array."""
    p, k4, _, _ = panels.shape
    return np.ascontiguousarray(panels.transpose(0, 2, 1, 3).reshape(p * 16, k4 * 4).T)


def encoder_graph(tensors: Mapping[str, np.ndarray], encoder_config: Mapping[str, Any], signed_weights: bool) -> bytes:
    """A serialized ONNX model: inputs ``hidden`` ``[batch, seq, hidden]`` (the embeddings after their
    LayerNorm) and ``mask_bias`` ``[batch, 1, 1, seq]`` (0 for tokens, a large negative number for padding);
    output ``last_hidden``, the encoder's last hidden state."""
    from onnx import TensorProto, helper, numpy_helper

    hidden = int(encoder_config["hidden_size"])
    heads = int(encoder_config["num_attention_heads"])
    eps = float(encoder_config.get("layer_norm_eps", 1e-12))
    head_dim = hidden // heads
    nodes: List[Any] = []
    initializers: List[Any] = []

    def const(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))  # keeps 0-d
        return name

    def op(kind: str, inputs: List[str], name: str, domain: str = "", **attributes: Any) -> str:
        nodes.append(helper.make_node(kind, inputs, [name], name=name, domain=domain, **attributes))
        return name

    def product(x: str, layer: int, which: str, column_scale: np.ndarray) -> str:
        prefix = f"layer.{layer}.{which}"
        weight = int8_matrix(tensors[f"{prefix}.panels"])
        scale = tensors[f"{prefix}.scale"].astype(np.float32) * column_scale
        bias = tensors[f"{prefix}.bias"].astype(np.float32) * column_scale
        if signed_weights:
            inputs = [x, const(f"{prefix}.w", weight), const(f"{prefix}.s", scale), "", const(f"{prefix}.b", bias)]
        else:
            shifted = (weight.astype(np.int16) + 128).astype(np.uint8)
            zero = np.full(weight.shape[1], 128, dtype=np.uint8)
            inputs = [x, const(f"{prefix}.w", shifted), const(f"{prefix}.s", scale), const(f"{prefix}.z", zero), const(f"{prefix}.b", bias)]  # fmt: skip
        return op("DynamicQuantizeMatMul", inputs, f"{prefix}.out", domain="com.microsoft")

    const("split_heads", np.array([0, 0, 3, heads, head_dim], dtype=np.int64))
    const("merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    for i in range(3):
        const(f"part{i}", np.array(i, dtype=np.int64))
    # 1/sqrt(head_dim) folded into the query columns' scales and bias: exact, and one op less per layer
    qkv_scale = np.ones(3 * hidden, dtype=np.float32)
    qkv_scale[:hidden] = 1.0 / np.sqrt(head_dim)
    ones = np.ones(1, dtype=np.float32)
    x = "hidden"
    for layer in range(int(encoder_config["num_hidden_layers"])):
        p = f"l{layer}."
        qkv = product(x, layer, "qkv", qkv_scale)
        parts = op("Transpose", [op("Reshape", [qkv, "split_heads"], p + "qkv5")], p + "qkv_t", perm=[2, 0, 3, 1, 4])
        q, k, v = (op("Gather", [parts, f"part{i}"], p + "qkv"[i], axis=0) for i in range(3))  # [b, heads, t, d]
        scores = op("MatMul", [q, op("Transpose", [k], p + "k_t", perm=[0, 1, 3, 2])], p + "scores")
        probs = op("Softmax", [op("Add", [scores, "mask_bias"], p + "masked")], p + "probs", axis=-1)
        context = op("Transpose", [op("MatMul", [probs, v], p + "ctx4")], p + "ctx_t", perm=[0, 2, 1, 3])
        context = op("Reshape", [context, "merge_heads"], p + "ctx")
        attended = op("Add", [product(context, layer, "attention_output", ones), x], p + "res1")
        x1 = op(
            "LayerNormalization", [attended, const(p + "ln1.g", tensors[f"layer.{layer}.ln1.weight"].astype(np.float32)),
                                   const(p + "ln1.b", tensors[f"layer.{layer}.ln1.bias"].astype(np.float32))],
            p + "ln1", axis=-1, epsilon=eps,
        )  # fmt: skip
        inner = op("Gelu", [product(x1, layer, "ffn_in", ones)], p + "gelu", domain="com.microsoft")
        x = op(
            "LayerNormalization", [op("Add", [product(inner, layer, "ffn_out", ones), x1], p + "res2"),
                                   const(p + "ln2.g", tensors[f"layer.{layer}.ln2.weight"].astype(np.float32)),
                                   const(p + "ln2.b", tensors[f"layer.{layer}.ln2.bias"].astype(np.float32))],
            p + "ln2", axis=-1, epsilon=eps,
        )  # fmt: skip
    nodes.append(helper.make_node("Identity", [x], ["last_hidden"], name="last_hidden"))
    graph = helper.make_graph(
        nodes,
        "nlu_bert_native_encoder",
        [
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", hidden]),
            helper.make_tensor_value_info("mask_bias", TensorProto.FLOAT, ["batch", 1, 1, "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden", TensorProto.FLOAT, ["batch", "seq", hidden])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="nlu-bert",
    )  # fmt: skip
    model.ir_version = IR_VERSION
    return model.SerializeToString()
