"""The shared onnxruntime helpers: fp16 lookup tables."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from nlu_bert import onnx_tools


def test_lookup_tables_are_stored_in_fp16_and_other_tables_stay_fp32(tmp_path):
    """half_lookup_tables: a table only Gathers read becomes fp16 with a Cast after each Gather (the graph gives
    the fp16-rounded rows); a table another node also reads, and the other weights, stay fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table, shared, weight = (rng.normal(size=s).astype(np.float32) for s in ((50, 8), (50, 8), (8, 8)))
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup"),
        helper.make_node("Gather", ["table", "ids2"], ["rows2"], name="lookup2"),  # a second reader of the table
        helper.make_node("Gather", ["shared", "ids"], ["srows"], name="shared_lookup"),
        helper.make_node("ReduceSum", ["shared"], ["shared_sum"], keepdims=0),  # not a lookup: keeps it fp32
        helper.make_node("Add", ["rows", "rows2"], ["both"]),
        helper.make_node("MatMul", ["both", "weight"], ["out"]),
    ]
    ids = [helper.make_tensor_value_info(name, TensorProto.INT64, [3]) for name in ("ids", "ids2")]
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, d)
        for n, d in (("out", [3, 8]), ("srows", [3, 8]), ("shared_sum", []))
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((table, "table"), (shared, "shared"), (weight, "weight"))]
    model = helper.make_model(
        helper.make_graph(nodes, "g", ids, outs, inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    before = path.stat().st_size

    def rewrite(path: Path) -> List[str]:
        model = onnx.load(str(path))
        converted = onnx_tools.half_lookup_tables(model.graph)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return converted

    assert rewrite(path) == ["table"]
    assert path.stat().st_size < before
    stored = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}
    assert stored == {"table": TensorProto.FLOAT16, "shared": TensorProto.FLOAT, "weight": TensorProto.FLOAT}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a, b = np.array([1, 7, 49]), np.array([0, 3, 3])
    out, srows, _ = session.run(None, {"ids": a, "ids2": b})
    half = table.astype(np.float16).astype(np.float32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (half[a] + half[b]) @ weight, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(srows, shared[a])
    assert rewrite(path) == []  # nothing left to convert

    # a graph with a subgraph (here an If whose branches read the table from the outer scope) is left alone
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["table"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [50, 8])],
    )  # fmt: skip
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["rows"]),
        helper.make_node("If", ["cond"], ["picked"], then_branch=branch("then"), else_branch=branch("else")),
    ]
    outs = [
        helper.make_tensor_value_info("rows", TensorProto.FLOAT, [3, 8]),
        helper.make_tensor_value_info("picked", TensorProto.FLOAT, [50, 8]),
    ]
    graph = helper.make_graph(nodes, "g", [ids[0], cond], outs, [numpy_helper.from_array(table, "table")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert rewrite(path) == []
    assert onnx.load(str(path)).graph.initializer[0].data_type == TensorProto.FLOAT
