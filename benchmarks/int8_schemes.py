"""int8 weight schemes for the onnxruntime BERT graph: per output channel against one scale per tensor.

    .venv/bin/python benchmarks/int8_schemes.py                      # every dataset accuracy.py kept a model for
    .venv/bin/python benchmarks/int8_schemes.py --datasets smp2017 --rounds 6

It needs no training: `accuracy.py` (the `bert` pipeline, without --no-agreement) keeps, per dataset, the trained
fp32 weights and their fused fp32 ONNX graph in benchmarks/work/agreement/<dataset>/. For each dataset this script
quantizes that graph both ways (exactly as the component's export does, `onnx_tools.quantize_int8`), loads each through
`BertIntentClassifier.load` as `rasa run` would, and reports

* top-1 agreement with the fp32 torch model on the test split, one message at a time (as served);
* per-message latency of the full-size graph (`bert_latency.py`'s random-weight model, exported there) quantized
  both ways, at 16 and 32 tokens, in interleaved rounds (the host's speed drifts, so compare the rounds of one
  run), with the served session settings.

Writes benchmarks/results/int8_schemes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import _common as C  # noqa: E402
from benchmarks.datasets import DATASETS, prepare_dataset  # noqa: E402

C.quiet_environment()

SCHEMES = {"per-channel": True, "per-tensor": False}
AGREEMENT = C.WORK / "agreement"
OUT = C.WORK / "int8_schemes"


def load_component(folder: Path, backend: str, precision: str) -> Any:
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource

    from nlu_bert import BertIntentClassifier

    config = {"model": "scratch", "inference": {"backend": backend, "precision": precision}}
    context = ExecutionContext(GraphSchema({}), model_id="int8_schemes")
    return BertIntentClassifier.load(config, LocalModelStorage(folder), Resource("bert"), context)


def build(dataset: str, scheme: str) -> Path:
    """A component folder with the fp32 graph of ``dataset`` quantized by ``scheme``; returns the storage root."""
    from nlu_bert import archive, onnx_tools
    from nlu_bert.bert import export as bert_export

    source = AGREEMENT / dataset / "onnxruntime-int8" / "bert"
    root = OUT / dataset / scheme
    target = root / "bert"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(archive.BERT_ONNX_FILES["int8"]))
    fp32_graph = AGREEMENT / dataset / "onnxruntime-fp32" / "bert" / archive.BERT_ONNX_FILES["fp32"]
    onnx_tools.quantize_int8(
        fp32_graph,
        target / archive.BERT_ONNX_FILES["int8"],
        list(bert_export.BERT_INT8_OP_TYPES),
        per_channel=SCHEMES[scheme],
    )
    return root


def agreement(dataset: str, roots: Dict[str, Path]) -> Dict[str, Any]:
    from rasa.shared.nlu.training_data.loading import load_data

    _, test_file = prepare_dataset(dataset, C.WORK / "data")
    examples = load_data(str(test_file)).intent_examples
    texts, gold = [m.get("text") for m in examples], [m.get("intent") for m in examples]
    reference = load_component(AGREEMENT / dataset / "fp32", "torch", "fp32")
    fp32_top = reference.predict_proba(texts).argmax(1)
    row: Dict[str, Any] = {
        "dataset": dataset,
        "texts": len(texts),
        "fp32_accuracy": float(np.mean([reference.labels[i] == g for i, g in zip(fp32_top, gold)])),
    }
    for scheme, root in roots.items():
        component = load_component(root, "onnxruntime", "int8")
        top = np.asarray([int(component.predict_proba([t])[0].argmax()) for t in texts])
        row[scheme] = {
            "agreement_with_fp32": float(np.mean(top == fp32_top)),
            "disagreements": int(np.sum(top != fp32_top)),
            "accuracy": float(np.mean([component.labels[i] == g for i, g in zip(top, gold)])),
            "mb": round((root / "bert" / "model.int8.onnx").stat().st_size / 1e6, 1),
        }
        print(f"  {dataset} {scheme}: {row[scheme]}", flush=True)
    return row


def latency(rounds: int, calls: int) -> Dict[str, Any]:
    """p50 per round of the full-size graph (bert_latency.py's random-weight hfl/chinese-bert-wwm-ext architecture)
    quantized both ways, served settings, at 16 and 32 tokens (batch 1)."""
    from nlu_bert import archive, onnx_tools
    from nlu_bert.bert import export as bert_export
    from nlu_bert.bert import predictors

    fp32_graph = C.WORK / "bert_latency" / "full_random" / archive.BERT_ONNX_FILES["fp32"]
    if not fp32_graph.is_file():
        print(f"  no latency: {fp32_graph} is missing (benchmarks/bert_latency.py exports it)")
        return {}
    served = {}
    for scheme, per_channel in SCHEMES.items():
        path = OUT / "full_random" / f"{scheme}.int8.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx_tools.quantize_int8(fp32_graph, path, list(bert_export.BERT_INT8_OP_TYPES), per_channel=per_channel)
        served[scheme] = predictors.OnnxRuntimePredictor(path, "int8", predictors.DEFAULT_NUM_THREADS)
    rng = np.random.default_rng(0)
    out: Dict[str, Any] = {}
    for tokens in (16, 32):
        ids = rng.integers(1000, 20000, (1, tokens)).astype(np.int64)
        mask = np.ones_like(ids)
        per_round: Dict[str, List[float]] = {s: [] for s in served}
        for _ in range(rounds):
            for scheme, predictor in served.items():
                seconds = C.time_calls(lambda: predictor(ids, mask, None), calls, warmup=10)
                per_round[scheme].append(round(float(np.median(seconds)) * 1e3, 3))
        out[str(tokens)] = per_round
        print(f"  {tokens} tokens, p50 ms per round: {per_round}", flush=True)
    return out


def write(payload: Dict[str, Any]) -> None:
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    (C.RESULTS / "int8_schemes.json").write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")
    lines = [
        f"`{payload['command']}` ({payload['wall_s']:.0f} s)",
        "",
        "| dataset | test texts | fp32 accuracy | per-channel: agreement with fp32 | per-tensor: agreement with fp32 | per-channel accuracy | per-tensor accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["agreement"]:
        cells = [f"{r[s]['agreement_with_fp32']:.2%} ({r[s]['disagreements']} differ)" for s in SCHEMES]
        lines.append(
            f"| {r['dataset']} | {r['texts']} | {r['fp32_accuracy']:.4f} | {cells[0]} | {cells[1]} | {r['per-channel']['accuracy']:.4f} | {r['per-tensor']['accuracy']:.4f} |"
        )
    if payload.get("latency"):
        lines += [
            "",
            f"Latency of the full-size architecture (random weights), p50 ms of each interleaved round ({payload['calls']} messages per round):",
            "",
        ]
        lines += [
            "| tokens | per-channel | per-tensor | per-tensor / per-channel, median of rounds |",
            "|---|---|---|---|",
        ]
        for tokens, rounds in payload["latency"].items():
            ratio = np.median(rounds["per-tensor"]) / np.median(rounds["per-channel"])
            lines.append(
                f"| {tokens} | {', '.join(map(str, rounds['per-channel']))} | {', '.join(map(str, rounds['per-tensor']))} | {ratio:.3f} |"
            )
    (C.RESULTS / "int8_schemes.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, choices=sorted(DATASETS))
    parser.add_argument("--rounds", type=int, default=6, help="interleaved latency rounds (0: no latency)")
    parser.add_argument("--calls", type=int, default=100, help="messages per latency round")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    datasets = args.datasets or [d for d in DATASETS if (AGREEMENT / d / "onnxruntime-fp32").is_dir()]
    if not datasets:
        raise SystemExit(f"no kept models in {AGREEMENT}: run benchmarks/accuracy.py --pipelines bert first")
    rows = [agreement(dataset, {scheme: build(dataset, scheme) for scheme in SCHEMES}) for dataset in datasets]
    payload: Dict[str, Any] = {
        "command": "python benchmarks/int8_schemes.py " + " ".join(sys.argv[1:]),
        "machine": C.machine_info(),
        "agreement": rows,
        "calls": args.calls,
        "latency": latency(args.rounds, args.calls) if args.rounds else {},
    }
    payload["wall_s"] = time.perf_counter() - start
    write(payload)


if __name__ == "__main__":
    main()
