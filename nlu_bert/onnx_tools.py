"""onnxruntime and ONNX helpers shared by every part of nlu-bert that serves or writes an ONNX graph.

A CPU session with nlu-bert's thread settings (:func:`ort_session`), dynamic int8 quantization
(:func:`quantize_int8`), fp16 lookup tables (:func:`half_lookup_tables`), the last step of every export
(:func:`store_export`) and a context that silences onnxruntime's export-time logs (:class:`quiet_logs`).
This module imports nothing of nlu-bert, and onnxruntime / onnx only inside its functions.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

# Worker threads busy-wait between the ops of one forward pass and stop the moment it returns
# (`session.force_spinning_stop`), so an idle server burns no CPU. 13-21% faster per message on
# these cores; with other busy processes on the same cores it ranged from 20% faster to 35% slower
# (docs/inference.md, `bert_latency.py --busy`). `inference.spinning: false` turns it off.
ALLOW_SPINNING = True
OPSET = 17


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
    return ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), options, providers=["CPUExecutionProvider"]
    ), options


def quantize_int8(
    src: Path, out: Path, op_types: List[str], per_channel: bool = True, keep: Sequence[str] = ()
) -> None:
    """Dynamic int8 of ``op_types``: s8 weights (per output channel), u8 activations quantized per call, full
    8-bit range (VNNI has no u8*s8 overflow); only constant weights are quantized. Nodes whose name starts with
    one of ``keep`` stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_logs():  # "please consider pre-processing" and fusion notes
        quantize_dynamic(
            str(src),
            str(out),
            op_types_to_quantize=op_types,
            nodes_to_exclude=_nodes_named(src, keep) if keep else None,
            per_channel=per_channel,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )


def _nodes_named(path: Path, prefixes: Sequence[str]) -> List[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.name.startswith(tuple(prefixes))]


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
            nodes.append(
                helper.make_node("Cast", [node.output[0]], [rows], to=TensorProto.FLOAT, name=f"{node.name}_to_fp32")
            )
    graph.ClearField("node")
    graph.node.extend(nodes)
    return sorted(tables)


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


class quiet_logs:
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
