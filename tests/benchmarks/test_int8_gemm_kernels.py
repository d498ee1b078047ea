"""`benchmarks/int8_gemm_kernels.py`: the graph it times is BERT-base's 48 weight products, and the script
measures the kernels it is asked for, writes them where it is told, and refuses bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nlu_testing import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import int8_gemm_kernels as K  # noqa: E402

SCRIPT = REPO_ROOT / "benchmarks" / "int8_gemm_kernels.py"


def test_graph_is_the_chain_of_berts_weight_products() -> None:
    import onnxruntime as ort

    model = K.bert_gemm_graph(distinct_layers=1, seed=3)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 48 and len(model.graph.initializer) == 4  # 12 layers of 4 products, one weight set
    shapes = sorted(tuple(t.dims) for t in model.graph.initializer)
    assert shapes == [(768, 768), (768, 2304), (768, 3072), (3072, 768)]
    assert K.gemm_flops(16) == 2 * 16 * 12 * (768 * 2304 + 768 * 768 + 2 * 768 * 3072)

    x = np.random.default_rng(0).standard_normal((5, 768)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": x})
    w = K.bert_gemm_weights(distinct_layers=1, seed=3)[0]
    h = x
    for layer in range(12):  # Q+K+V and O read the layer's input; FFN in reads O, FFN out reads FFN in
        np.testing.assert_allclose(outputs[layer], h @ w["qkv"], rtol=1e-3, atol=1e-4)
        h = ((h @ w["o"]) @ w["ffn_in"]) @ w["ffn_out"]
    np.testing.assert_allclose(outputs[-1], h, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_script_times_the_chosen_kernels(tmp_path) -> None:
    command = [
        sys.executable,
        str(SCRIPT),
        "--tokens",
        "4,8",
        "--kernels",
        "onnxruntime-int8-hot,torch-fbgemm",
        "--rounds",
        "1",
        "--calls",
        "3",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "int8_gemm_kernels.json").read_text(encoding="utf-8"))
    assert list(payload["kernels"]) == ["onnxruntime-int8-hot", "torch-fbgemm"]
    for result in payload["kernels"].values():
        assert set(result["p50_ms"]) == {"4", "8"} and all(ms > 0 for ms in result["p50_ms"].values())
    table = (tmp_path / "int8_gemm_kernels.md").read_text(encoding="utf-8")
    assert "| torch dynamic int8, fbgemm |" in table and "p50 ms @8" in table
    assert not (tmp_path / "int8_gemm_kernels.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kernels", "onnxruntime-int8,nope"], "unknown: nope"),
        (["--tokens", "16,x"], "--tokens takes numbers separated by commas"),
        (["--tokens", "0"], "--tokens ≥ 1"),
        (["--rounds", "0"], "--rounds ≥ 1"),
    ],
)
def test_script_refuses_bad_arguments(tmp_path, args, message) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and message in done.stderr
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written
