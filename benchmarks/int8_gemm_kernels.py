"""The int8 matrix-product kernels of this machine on exactly BERT-base's weight GEMMs, one message at a time.

    .venv/bin/python benchmarks/int8_gemm_kernels.py                 # 8 / 16 / 32 / 64 tokens, 3 rounds
    .venv/bin/python benchmarks/int8_gemm_kernels.py --tokens 16 --rounds 5

Target 4b of issue 6 asks for the BERT forward within 2x of the int8 FLOP floor (model FLOPs / the best int8
GEMM rate measured at 2048^3). One message has few rows (8-64 tokens), and BERT-base's 85 MB of int8 weights do
not fit in a 32 MB L3, so every message reads them all from memory. This script times the model's 48 weight
GEMMs alone (per layer: Q+K+V 768x2304, O 768x768, FFN in 768x3072, FFN out 3072x768; 12 layers), with no
attention, GELU or LayerNorm between them, through every int8 kernel that is installed here:

* ``onnxruntime dynamic int8``: the component's own (``onnx_tools.quantize_int8``: DynamicQuantizeMatMul, s8 weights
  per output channel, u8 activations quantized per call), in the served session settings (spinning threads);
* the same kernel with one layer's weights (7 MB) repeated 12 times, so they stay in cache: what the kernel does
  when memory is not the limit;
* torch's dynamic int8 linear with the fbgemm and the oneDNN engine (``quantized.linear_dynamic``), what
  ``inference.backend: torch, precision: int8`` uses;
* ``torch._int_mm`` (s8 x s8 -> s32, nothing quantized or rescaled: the bare product);
* onnxruntime's 4-bit ``MatMulNBits`` (half the bytes to read; int8 compute, ``accuracy_level`` 4), block 32
  and 128.

Kernels run in interleaved rounds (the host's speed drifts); a cell is the best round's p50. Writes
benchmarks/results/int8_gemm_kernels.{json,md} (`--out`: another folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import _common as C  # noqa: E402

HIDDEN, INNER, LAYERS = 768, 3072, 12
# per layer: (name, rows of the weight = input features, columns = output features, input of the product)
GEMMS = (
    ("qkv", HIDDEN, 3 * HIDDEN, "x"),
    ("o", HIDDEN, HIDDEN, "x"),
    ("ffn_in", HIDDEN, INNER, "o"),
    ("ffn_out", INNER, HIDDEN, "ffn_in"),
)


def gemm_flops(tokens: int) -> float:
    return 2.0 * tokens * LAYERS * sum(k * n for _, k, n, _ in GEMMS)


def bert_gemm_weights(distinct_layers: int = LAYERS, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """Random fp32 weights (in x out) of ``distinct_layers`` layers, BERT-sized, scaled like its initializer."""
    rng = np.random.default_rng(seed)
    return [
        {name: (rng.standard_normal((k, n), dtype=np.float32) * 0.02) for name, k, n, _ in GEMMS}
        for _ in range(distinct_layers)
    ]


def bert_gemm_graph(distinct_layers: int = LAYERS, seed: int = 0) -> Any:
    """An fp32 ONNX graph of BERT-base's 48 weight GEMMs: input ``x`` (tokens x 768). Each layer's output
    feeds the next; its Q+K+V product is a graph output. With ``distinct_layers`` < 12 the layers reuse
    that many weight sets in turn (1: the 7 MB of one layer, which stays in cache)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = bert_gemm_weights(distinct_layers, seed)
    initializers = [
        numpy_helper.from_array(w, f"{name}_w{i}") for i, layer in enumerate(weights) for name, w in layer.items()
    ]
    nodes, outputs, x = [], [], "x"
    for layer in range(LAYERS):
        source = layer % distinct_layers
        inputs = {"x": x}
        for name, _, _, feed in GEMMS:
            inputs[name] = f"{name}{layer}"
            nodes.append(helper.make_node("MatMul", [inputs[feed], f"{name}_w{source}"], [inputs[name]]))
        outputs.append(f"qkv{layer}")
        x = inputs["ffn_out"]
    outputs.append(x)
    graph = helper.make_graph(
        nodes,
        "bert_gemms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, HIDDEN])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def onnxruntime_int8(threads: int, distinct_layers: int = LAYERS) -> Callable[[np.ndarray], Any]:
    """The component's int8 (``onnx_tools.quantize_int8`` of the MatMuls) in its served session settings."""
    from nlu_bert import onnx_tools

    model = bert_gemm_graph(distinct_layers)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "gemms.onnx", Path(tmp) / "gemms.int8.onnx"
        fp32.write_bytes(model.SerializeToString())
        onnx_tools.quantize_int8(fp32, int8, ["MatMul"], per_channel=True)
        session, _ = onnx_tools.ort_session(int8, threads, allow_spinning=True)
    return lambda x: session.run(None, {"x": x})


def onnxruntime_nbits(threads: int, block_size: int) -> Callable[[np.ndarray], Any]:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from nlu_bert import onnx_tools

    model = bert_gemm_graph()
    quantizer = MatMulNBitsQuantizer(
        model, algo_config=DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4)
    )
    with onnx_tools.quiet_logs():
        quantizer.process()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemms.nbits.onnx"
        path.write_bytes(quantizer.model.model.SerializeToString())
        session, _ = onnx_tools.ort_session(path, threads, allow_spinning=True)
    return lambda x: session.run(None, {"x": x})


def torch_dynamic(engine: str) -> Callable[[np.ndarray], Any]:
    """torch's dynamic int8 linear (per-channel s8 weights), as ``quantize_dynamic`` runs it, on ``engine``."""
    import torch

    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"quantized engine {engine} is not in this torch build")
    torch.backends.quantized.engine = engine
    weights = bert_gemm_weights()
    packed = []
    for layer in weights:
        for name, _, _, _ in GEMMS:
            w = torch.from_numpy(layer[name].T.copy())
            scales = (w.abs().amax(1) / 127).double()
            qw = torch.quantize_per_channel(w, scales, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            packed.append(torch.ops.quantized.linear_prepack(qw, None))

    def run(x: np.ndarray) -> None:
        torch.backends.quantized.engine = engine
        h = torch.from_numpy(x)
        with torch.no_grad():
            for layer in range(LAYERS):
                qkv, o, ffn_in, ffn_out = packed[4 * layer : 4 * layer + 4]
                torch.ops.quantized.linear_dynamic(h, qkv)
                out = torch.ops.quantized.linear_dynamic(h, o)
                h = torch.ops.quantized.linear_dynamic(torch.ops.quantized.linear_dynamic(out, ffn_in), ffn_out)

    return run


def torch_int_mm() -> Callable[[np.ndarray], Any]:
    """The bare s8 x s8 -> s32 product of every weight (inputs already int8, outputs not rescaled)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    weights = [
        [torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=generator) for _, k, n, _ in GEMMS]
        for _ in range(LAYERS)
    ]
    probe = torch.zeros((16, HIDDEN), dtype=torch.int8)
    torch._int_mm(probe, weights[0][0])  # raises here where this build has no CPU _int_mm

    inputs: Dict[int, Dict[int, Any]] = {}

    def run(x: np.ndarray) -> None:
        rows = x.shape[0]
        if rows not in inputs:  # int8 inputs of this length, made once, outside the timed calls
            inputs[rows] = {
                k: torch.randint(-127, 128, (rows, k), dtype=torch.int8, generator=generator) for k in (HIDDEN, INNER)
            }
        for layer in weights:
            for w in layer:
                torch._int_mm(inputs[rows][w.shape[0]], w)

    return run


KERNELS: Dict[str, Tuple[str, Callable[[int], Callable[[np.ndarray], Any]]]] = {
    "onnxruntime-int8": (
        "onnxruntime dynamic int8, the component's (weights from memory)",
        lambda t: onnxruntime_int8(t),
    ),
    "onnxruntime-int8-hot": (
        "the same, one layer's weights repeated (in cache)",
        lambda t: onnxruntime_int8(t, distinct_layers=1),
    ),
    "torch-fbgemm": ("torch dynamic int8, fbgemm", lambda t: torch_dynamic("fbgemm")),
    "torch-onednn": ("torch dynamic int8, oneDNN", lambda t: torch_dynamic("onednn")),
    "torch-int-mm": ("torch._int_mm, bare s8 x s8 product", lambda t: torch_int_mm()),
    "onnxruntime-4bit-b32": ("onnxruntime MatMulNBits 4-bit, block 32", lambda t: onnxruntime_nbits(t, 32)),
    "onnxruntime-4bit-b128": ("onnxruntime MatMulNBits 4-bit, block 128", lambda t: onnxruntime_nbits(t, 128)),
}


def p50_ms(fn: Callable[[np.ndarray], Any], x: np.ndarray, calls: int) -> float:
    return float(np.median(C.time_calls(lambda: fn(x), calls, warmup=5))) * 1e3


def render(payload: Dict[str, Any]) -> str:
    tokens = payload["tokens"]
    header = ["kernel"] + [f"p50 ms @{n}" for n in tokens] + [f"GFLOP/s @{n}" for n in tokens]
    rows = []
    for name, result in payload["kernels"].items():
        if "error" in result:
            rows.append([f"{KERNELS[name][0]}: not run ({result['error']})"] + [""] * (2 * len(tokens)))
            continue
        ms = result["p50_ms"]
        rows.append(
            [KERNELS[name][0]]
            + [f"{ms[str(n)]:.2f}" for n in tokens]
            + [f"{gemm_flops(n) / ms[str(n)] / 1e6:.0f}" for n in tokens]
        )
    lines = [
        "## int8 kernels on BERT-base's 48 weight GEMMs, one message",
        "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores_available']} cores "
        f"({', '.join(payload['machine']['cpu_flags'])}); {payload['threads']} threads; load average "
        f"{payload['machine']['load_average_at_start']} at start. The products alone (Q+K+V, O, FFN in, FFN out "
        f"of 12 layers; {gemm_flops(16) / 1e9:.2f} GFLOP at 16 tokens); a cell is the best of {payload['rounds']} "
        f"interleaved rounds of {payload['calls']} calls (p50).",
        "",
        C.markdown_table(header, rows),
        "",
        f"Command: `{payload['command']}`; {payload['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="8,16,32,64", help="comma-separated message lengths (rows of each product)")
    parser.add_argument("--kernels", default=",".join(KERNELS), help=f"comma-separated subset of: {', '.join(KERNELS)}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the kernels (best p50 kept)")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per kernel, length and round")
    parser.add_argument("--threads", type=int, default=0, help="threads (0 = all cores)")
    parser.add_argument("--out", type=Path, default=C.RESULTS, help="folder of int8_gemm_kernels.{json,md}")
    args = parser.parse_args(argv)
    try:
        tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    except ValueError:
        parser.exit(2, f"--tokens takes numbers separated by commas, such as 8,16,32, not {args.tokens!r}\n")
    names = [k.strip() for k in args.kernels.split(",") if k.strip()]
    unknown = [k for k in names if k not in KERNELS]
    if unknown or not names or not tokens or min(tokens) < 1 or args.rounds < 1 or args.calls < 1:
        parser.exit(
            2,
            f"choose --kernels from {', '.join(KERNELS)} (unknown: {', '.join(unknown) or 'none'}), "
            "--tokens ≥ 1, --rounds ≥ 1 and --calls ≥ 1\n",
        )

    import torch

    from nlu_bert import hardware

    started = time.perf_counter()
    threads = hardware.resolve_threads(args.threads)
    torch.set_num_threads(threads)
    payload: Dict[str, Any] = {
        "machine": C.machine_info(),
        "threads": threads,
        "tokens": tokens,
        "rounds": args.rounds,
        "calls": args.calls,
        "command": " ".join(
            [".venv/bin/python benchmarks/int8_gemm_kernels.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "kernels": {},
    }
    ready: Dict[str, Callable[[np.ndarray], Any]] = {}
    for name in names:
        C.log(f"preparing {name}")
        try:
            ready[name] = KERNELS[name][1](threads)
        except Exception as e:  # noqa: BLE001 - a kernel this build lacks is reported, not fatal
            payload["kernels"][name] = {"error": f"{type(e).__name__}: {e}"[:160]}
    inputs = {n: np.random.default_rng(n).standard_normal((n, HIDDEN)).astype(np.float32) for n in tokens}
    best: Dict[str, Dict[str, float]] = {name: {} for name in ready}
    for r in range(args.rounds):
        order = list(ready) if r % 2 == 0 else list(reversed(ready))
        for name in order:
            C.log(f"round {r + 1}/{args.rounds}: {name}")
            for n in tokens:
                ms = p50_ms(ready[name], inputs[n], args.calls)
                best[name][str(n)] = min(ms, best[name].get(str(n), float("inf")))
    for name in names:
        if name in best:
            payload["kernels"][name] = {"p50_ms": {n: round(v, 3) for n, v in best[name].items()}}
    payload["kernels"] = {name: payload["kernels"][name] for name in names}
    payload["seconds"] = time.perf_counter() - started
    markdown = render(payload)
    print(markdown)
    json_path, md_path = C.write_results("int8_gemm_kernels", payload, markdown, out_dir=args.out)
    C.log(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
