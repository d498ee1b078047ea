"""BERT intent-model latency, throughput, memory and top-1 agreement for every inference backend x precision.

    PYTHONPATH=. .venv/bin/python benchmarks/bert_latency.py --full-epochs 3   # the run in docs/inference.md
    PYTHONPATH=. .venv/bin/python benchmarks/bert_latency.py --quick           # smoke run -> bert_latency_quick.*

With the models cached in benchmarks/work/bert_latency/ a full run took 13 min on 2 cores; the first run also
exports the ONNX files and trains the small agreement model on SMP2017 (~20 min), `--full-epochs 3` a full-size
one (~1 hour).

What it measures (random weights with the architecture of hfl/chinese-bert-wwm-ext + a 31-intent head,
so the compute equals the real model's):

* each variant in its own subprocess (so RSS is clean): import time, load time, RSS after load and
  peak RSS, per-message latency p50 / p95 at 8 / 16 / 32 / 64 tokens (batch 1), and batch-32 x 32-token
  throughput. Variants: plain transformers fp32 eager (the baseline) and every runtime backend x precision.
* the machine's floors: the best int8 / bf16 / fp32 GEMM rate and DRAM read bandwidth, turned into a
  FLOP floor per message (model FLOPs / rate) and a weight-streaming floor (GEMM weight bytes / bandwidth);
* top-1 agreement of every variant with fp32 on SMP2017 dev + test texts (1,437), for a small BERT
  trained here on SMP2017 train, for the random-weight full-size model, and for a real trained model
  when one is given (`--agreement-model`: a BertIntentClassifier resource folder);
* the tokenizer's time per message, the ONNX export time and file sizes.

Writes benchmarks/results/bert_latency.{json,md} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

_T0 = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import _common as C  # noqa: E402

C.quiet_environment()

LENGTHS = (8, 16, 32, 64)
THROUGHPUT_SHAPE = (32, 32)
VARIANTS: Dict[str, Tuple[str, str, Dict[str, Any]]] = {
    # name: (backend, precision, options); "transformers" = IntentModel called as is (no runtime)
    "transformers-fp32-eager": ("transformers", "fp32", {}),
    "torch-fp32": ("torch", "fp32", {}),
    "torch-bf16": ("torch", "bf16", {}),
    "torch-int8": ("torch", "int8", {}),
    "onnxruntime-fp32": ("onnxruntime", "fp32", {}),
    "onnxruntime-int8": ("onnxruntime", "int8", {}),
    # nlu-bert's own int8 kernel (nlu_bert/bert/native): AMX tiles where the CPU has them, else AVX-512 VNNI
    "native-int8": ("native", "int8", {}),
    # the same kernel held to its AVX-512 VNNI path (on CPUs with AMX, to compare)
    "native-int8-vnni": ("native", "int8", {"env": {"NLU_BERT_NATIVE_KERNEL": "vnni"}}),
    # the same file where the C kernel cannot run: its int8 weights as an onnxruntime graph built at load
    "native-int8-onnxruntime": ("native", "int8", {"env": {"NLU_BERT_NATIVE_KERNEL": "onnxruntime"}}),
    # the thread settings behind the default (not in the agreement table: same logits); the default
    # spins between the ops of a run and stops when it returns
    "onnxruntime-int8-nospin": ("onnxruntime", "int8", {"allow_spinning": False}),
    "onnxruntime-int8-1thread": ("onnxruntime", "int8", {"threads": 1}),
}
# settings that leave the logits as they are (the tests hold native-int8-vnni to native-int8 bit for bit)
SETTINGS_ONLY = ("onnxruntime-int8-nospin", "onnxruntime-int8-1thread", "native-int8-vnni")
REFERENCE = "transformers-fp32-eager"
NUM_LABELS = 31
WORK = C.WORK / "bert_latency"

# the component's persisted layout (nlu_bert/classifiers/bert_intent_classifier.py)
WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG_FILE = "encoder_config.json"
META_FILE = "meta.json"


# =========================================================================================== models
def save_model(model: Any, folder: Path, labels: List[str], ngram: Dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    model.encoder.config.to_json_file(str(folder / ENCODER_CONFIG_FILE))
    meta = {"labels": labels, **ngram}
    (folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")


def load_model(folder: Path) -> Tuple[Any, Dict[str, Any]]:
    """An fp32 IntentModel from a folder in the component's layout."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from nlu_bert.bert.model import IntentModel

    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    config = AutoConfig.from_pretrained(str(folder / ENCODER_CONFIG_FILE), local_files_only=True)
    encoder = AutoModel.from_config(config)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    kwargs = {"ngram_buckets": int(meta.get("ngram_buckets", 0))}
    if meta.get("ngram_dim"):
        kwargs["ngram_dim"] = int(meta["ngram_dim"])
    model = IntentModel(encoder, num_labels=len(meta["labels"]), **kwargs)
    state = load_file(str(folder / WEIGHTS_FILE))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), meta


def full_size_random(folder: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    from nlu_bert.bert.model import IntentModel

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(**C.FULL_BERT), add_pooling_layer=False)
    model = IntentModel(encoder, NUM_LABELS).eval()
    save_model(model, folder, [f"intent_{i}" for i in range(NUM_LABELS)], {"ngram_buckets": 0})


def train_on_smp2017(folder: Path, size: str, epochs: int, threads: int) -> Dict[str, Any]:
    """Train an IntentModel on SMP2017 train (real vocab, no pre-training) and save it in ``folder``.

    size "small": the component's `scratch` shape (4 layers, hidden 256) + its n-gram features;
    size "full": the full BERT-base shape, no n-grams (slow: minutes per epoch on 2 cores).
    """
    import torch
    from transformers import BertConfig, BertModel

    from nlu_bert.bert.model import IntentModel
    from nlu_bert.bert.ngrams import batch_ngram_ids

    texts, labels = C.smp2017_split("train")
    if not texts:
        raise SystemExit(f"{C.SMP2017} is missing: cannot train the agreement model")
    names = sorted(set(labels))
    y = torch.tensor([names.index(label) for label in labels])
    tokenizer = C.load_bert_tokenizer()
    torch.manual_seed(0)
    torch.set_num_threads(threads or C.machine_info()["cores_available"])
    if size == "small":
        config = BertConfig(
            **{
                **C.FULL_BERT,
                "hidden_size": 256,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "intermediate_size": 1024,
                "max_position_embeddings": 128,
            }
        )
        ngram = {"ngram_buckets": 50000, "ngram_dim": 128, "ngram_range": [1, 3], "max_ngrams": 192}
        lr, head_lr = 5e-4, 5e-3
    else:
        config = BertConfig(**C.FULL_BERT)
        ngram = {"ngram_buckets": 0}
        lr, head_lr = 1e-4, 1e-3
    model = IntentModel(
        BertModel(config, add_pooling_layer=False),
        len(names),
        **{k: v for k, v in ngram.items() if k in ("ngram_buckets", "ngram_dim")},
    )
    head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    body = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=0.01)
    batch_size = 32
    steps = epochs * ((len(texts) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, 1 - s / steps)
    )
    generator = np.random.default_rng(0)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = generator.permutation(len(texts))
        total = 0.0
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            chunk = [texts[i] for i in idx]
            enc = tokenizer(chunk, truncation=True, max_length=64, padding=True, return_tensors="pt")
            extra = []
            if ngram["ngram_buckets"]:
                extra.append(
                    torch.from_numpy(batch_ngram_ids(chunk, ngram["ngram_buckets"], (1, 3), ngram["max_ngrams"]))
                )
            loss = torch.nn.functional.cross_entropy(model(enc["input_ids"], enc["attention_mask"], *extra), y[idx])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(loss) * len(idx)
        C.log(
            f"  [{size}] epoch {epoch + 1}/{epochs}: loss {total / len(texts):.3f} ({time.perf_counter() - start:.0f} s)"
        )
    model.eval()
    save_model(model, folder, names, ngram)
    return {
        "size": size,
        "epochs": epochs,
        "train_examples": len(texts),
        "train_s": round(time.perf_counter() - start, 1),
    }


def export_inference_files(folder: Path) -> Dict[str, Any]:
    """The onnxruntime and native files the component would store at train time, with timings and sizes."""
    from nlu_bert import archive
    from nlu_bert.bert import export as bert_export
    from nlu_bert.bert import predictors

    out: Dict[str, Any] = {}
    for precision in predictors.SUPPORTED_PRECISIONS["onnxruntime"]:
        target = folder / archive.BERT_ONNX_FILES[precision]
        if target.is_file():
            continue
        model, _ = load_model(folder)
        start = time.perf_counter()
        report = bert_export.export_onnx(model, target, precision)
        report["total_s"] = round(time.perf_counter() - start, 1)
        out[precision] = report
        C.log(f"  exported {target.name}: {report['bytes'] / 1e6:.1f} MB in {report['total_s']} s")
    from nlu_bert import archive
    from nlu_bert.bert import native

    target = folder / archive.NATIVE_FILE
    if not target.is_file():
        model, _ = load_model(folder)
        start = time.perf_counter()
        report = native.export(model.state_dict(), model.encoder.config.to_dict(), target, "float16")
        report["total_s"] = round(time.perf_counter() - start, 1)
        out["native-int8"] = report
        C.log(f"  exported {target.name}: {report['bytes'] / 1e6:.1f} MB in {report['total_s']} s")
    marker = folder / "export_report.json"
    previous = json.loads(marker.read_text()) if marker.is_file() else {}
    previous.update(out)
    marker.write_text(json.dumps(previous, indent=2))
    return previous


def encode_eval_set(folder: Path, target: Path, limit: Optional[int] = None) -> Dict[str, Any]:
    """Tokenized SMP2017 develop + test (or synthetic texts), in batches of 32 sorted by length (as the component does)."""
    from nlu_bert.bert.ngrams import batch_ngram_ids

    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    dev, dev_y = C.smp2017_split("develop")
    test, test_y = C.smp2017_split("test")
    texts, gold = dev + test, dev_y + test_y
    if not texts:
        texts, gold = C.sample_texts(500), []
    if limit and limit < len(texts):
        keep = np.random.default_rng(0).permutation(len(texts))[:limit]
        texts = [texts[i] for i in keep]
        gold = [gold[i] for i in keep] if gold else []
    tokenizer = C.load_bert_tokenizer()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    arrays: Dict[str, np.ndarray] = {"order": np.asarray(order)}
    for n, b in enumerate(range(0, len(order), 32)):
        chunk = [texts[i] for i in order[b : b + 32]]
        enc = tokenizer(chunk, truncation=True, max_length=64, padding=True, return_tensors="np")
        arrays[f"ids_{n}"] = enc["input_ids"].astype(np.int64)
        arrays[f"mask_{n}"] = enc["attention_mask"].astype(np.int64)
        if meta.get("ngram_buckets"):
            arrays[f"ngrams_{n}"] = batch_ngram_ids(
                chunk, meta["ngram_buckets"], tuple(meta.get("ngram_range", (1, 3))), meta.get("max_ngrams", 192)
            )
    np.savez(target, **arrays)
    labels = meta["labels"]
    return {"texts": len(texts), "gold": [labels.index(g) if g in labels else -1 for g in gold]}


# =========================================================================================== worker
def make_predictor(variant: str, folder: Path, threads: int):
    backend, precision, options = VARIANTS[variant]
    from nlu_bert import hardware
    from nlu_bert.bert import predictors

    threads = options.get("threads", threads)
    os.environ.update(options.get("env", {}))
    if backend in ("onnxruntime", "native"):
        return predictors.load_predictor(
            folder, backend, precision, threads, allow_spinning=options.get("allow_spinning")
        )
    model, _ = load_model(folder)
    if backend == "torch":
        return predictors.load_predictor(folder, backend, precision, threads, model=model)
    import torch

    torch.set_num_threads(hardware.resolve_threads(threads))

    def plain(ids: np.ndarray, mask: np.ndarray, ngrams: Optional[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(ids), torch.from_numpy(mask)]
            if ngrams is not None:
                args.append(torch.from_numpy(ngrams))
            return model(*args).numpy()

    return plain


def worker(args: argparse.Namespace) -> None:
    """One variant in this process; prints one JSON line."""
    result: Dict[str, Any] = {
        "variant": args.variant,
        "threads": VARIANTS[args.variant][2].get("threads", args.threads),
    }
    backend = VARIANTS[args.variant][0]
    start = time.perf_counter()
    if backend == "onnxruntime":
        import onnxruntime  # noqa: F401
    elif backend == "native":
        from nlu_bert.bert import native  # noqa: F401
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    from nlu_bert import (
        archive,  # noqa: F401
        hardware,  # noqa: F401
        tokenizer_files,  # noqa: F401
    )
    from nlu_bert.bert import export as bert_export  # noqa: F401
    from nlu_bert.bert import predictors  # noqa: F401

    result["import_s"] = round(time.perf_counter() - start, 3)
    folder = Path(args.folder)
    start = time.perf_counter()
    predictor = make_predictor(args.variant, folder, args.threads)
    result["load_s"] = round(time.perf_counter() - start, 3)
    result["rss_after_load_mb"] = round(C.rss_mb(), 1)
    vocab = C.FULL_BERT["vocab_size"]
    rng = np.random.default_rng(0)

    def message(tokens: int) -> Tuple[np.ndarray, np.ndarray]:
        ids = rng.integers(106, vocab, (1, tokens)).astype(np.int64)
        ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP]
        return ids, np.ones_like(ids)

    if not args.agreement_only:
        start = time.perf_counter()
        predictor(*message(16), None)
        result["first_call_ms"] = round((time.perf_counter() - start) * 1e3, 1)
        samples: Dict[int, List[float]] = {n: [] for n in LENGTHS}
        for _ in range(args.rounds):  # rounds interleave the lengths, so noise spreads over all of them
            for n in LENGTHS:
                ids, mask = message(n)
                samples[n] += C.time_calls(lambda: predictor(ids, mask, None), args.calls, warmup=2)
        result["latency_ms"] = {str(n): C.percentiles(s) for n, s in samples.items()}
        rows, tokens = THROUGHPUT_SHAPE
        ids = rng.integers(106, vocab, (rows, tokens)).astype(np.int64)
        mask = np.ones_like(ids)
        times = C.time_calls(lambda: predictor(ids, mask, None), args.batches, warmup=1)
        result["batch_msgs_per_s"] = round(rows / float(np.median(times)), 1)
        result["peak_rss_mb"] = round(C.peak_rss_mb(), 1)
    if args.eval_set:
        data = np.load(args.eval_set)
        parts = []
        n = 0
        while f"ids_{n}" in data:
            ngrams = data[f"ngrams_{n}"] if f"ngrams_{n}" in data else None
            parts.append(predictor(data[f"ids_{n}"], data[f"mask_{n}"], ngrams))
            n += 1
        logits = np.concatenate(parts)
        out = np.empty_like(logits)
        out[data["order"]] = logits
        np.save(args.logits_out, out)
    print("RESULT " + json.dumps(result), flush=True)


def floors_worker(args: argparse.Namespace) -> None:
    """Best GEMM rates (GFLOP/s) per precision and DRAM read bandwidth, on ``threads`` threads."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from nlu_bert import hardware
    from nlu_bert.bert import predictors

    threads = hardware.resolve_threads(args.threads)
    torch.set_num_threads(threads)
    m = n = k = 2048
    flops = 2.0 * m * n * k

    def best_rate(fn, reps: int = 8) -> float:
        return flops / min(C.time_calls(fn, reps, warmup=2)) / 1e9

    rates: Dict[str, Dict[str, float]] = {"fp32": {}, "bf16": {}, "int8": {}}
    a, b = torch.randn(m, k), torch.randn(k, n)
    rates["fp32"]["torch (MKL)"] = best_rate(lambda: a @ b)
    if predictors.onednn_linear_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), None)
        rates["fp32"]["torch oneDNN linear"] = best_rate(
            lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
        )
    ab, bb = a.bfloat16(), b.bfloat16()
    rates["bf16"]["torch (oneDNN)"] = best_rate(lambda: ab @ bb)
    a8 = torch.randint(-128, 127, (m, k), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (k, n), dtype=torch.int8)
    try:
        rates["int8"]["torch _int_mm"] = best_rate(lambda: torch._int_mm(a8, b8))
    except Exception:  # noqa: BLE001
        pass

    def ort_gemm(integer: bool) -> float:
        rng = np.random.default_rng(0)
        if integer:
            weight = rng.integers(-128, 127, (k, n)).astype(np.int8)
            x = rng.integers(0, 255, (m, k)).astype(np.uint8)
            node, xt, yt = helper.make_node("MatMulInteger", ["A", "B"], ["Y"]), TensorProto.UINT8, TensorProto.INT32
        else:
            weight = rng.standard_normal((k, n)).astype(np.float32)
            x = rng.standard_normal((m, k)).astype(np.float32)
            node, xt, yt = helper.make_node("MatMul", ["A", "B"], ["Y"]), TensorProto.FLOAT, TensorProto.FLOAT
        graph = helper.make_graph(
            [node],
            "gemm",
            [helper.make_tensor_value_info("A", xt, [m, k])],
            [helper.make_tensor_value_info("Y", yt, [m, n])],
            [numpy_helper.from_array(weight, "B")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return best_rate(lambda: session.run(None, {"A": x}))

    rates["int8"]["onnxruntime u8s8 MatMulInteger"] = ort_gemm(True)
    rates["fp32"]["onnxruntime MatMul"] = ort_gemm(False)
    big = torch.ones(128 * 2**20 // 4 * 4)  # 512 MB: far beyond any cache
    seconds = min(C.time_calls(lambda: big.sum(), 8, warmup=2))
    # a buffer of the int8 weights' size read back to back, as a model serving message after message reads
    # them: from the last-level cache where it holds them (Intel Xeons with hundreds of MB of L3), else memory
    weights = torch.ones(int(weight_bytes("int8")) // 4)
    weights_seconds = min(C.time_calls(lambda: weights.sum(), 16, warmup=4))
    result = {
        "threads": threads,
        "gemm_gflops": {p: {k2: round(v, 1) for k2, v in r.items()} for p, r in rates.items()},
        "best_gflops": {p: round(max(r.values()), 1) for p, r in rates.items() if r},
        "dram_read_gb_s": round(big.numel() * 4 / seconds / 1e9, 1),
        "int8_weights_reread_gb_s": round(weights.numel() * 4 / weights_seconds / 1e9, 1),
        "model_gemms_int8_ms": model_gemms_int8_ms(threads, 50),
    }
    print("RESULT " + json.dumps(result), flush=True)


def model_gemms_int8_ms(threads: int, calls: int) -> Dict[str, float]:
    """p50 ms of BERT-base's 48 weight GEMMs alone at each of LENGTHS tokens, int8 as the component
    quantizes and serves them, weights read from memory as in the model (``int8_gemm_kernels.py``)."""
    from benchmarks.int8_gemm_kernels import HIDDEN, onnxruntime_int8, p50_ms

    run = onnxruntime_int8(threads)
    rng = np.random.default_rng(0)
    return {str(n): round(p50_ms(run, rng.standard_normal((n, HIDDEN)).astype(np.float32), calls), 2) for n in LENGTHS}


# =========================================================================================== orchestration
def run_worker(extra: Sequence[str], timeout: float = 1800) -> Dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(C.ROOT)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"worker {extra} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def start_busy(n: int) -> List[subprocess.Popen]:
    """``n`` processes that each keep one core busy: a server sharing its cores with other work."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def tokenizer_timing(n: int) -> Dict[str, Any]:
    """Per-message cost of turning text into model inputs: transformers' tokenizer, the torch-free
    ``tokenizer_files.TextEncoder`` the onnxruntime path can use, and the hashed n-gram ids."""
    import tempfile

    from nlu_bert.bert.ngrams import batch_ngram_ids
    from nlu_bert.tokenizer_files import TextEncoder

    tokenizer = C.load_bert_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        encoder = TextEncoder(Path(tmp), 64)
    texts = C.sample_texts(n)
    times: Dict[str, List[float]] = {"transformers": [], "text_encoder": [], "ngram_ids": []}
    tokens = []
    for text in texts:
        start = time.perf_counter()
        enc = tokenizer([text], truncation=True, max_length=64, padding=True, return_tensors="np")
        times["transformers"].append(time.perf_counter() - start)
        tokens.append(enc["input_ids"].shape[1])
        start = time.perf_counter()
        encoder([text])
        times["text_encoder"].append(time.perf_counter() - start)
        start = time.perf_counter()
        batch_ngram_ids([text], 50000, (1, 3), 192)
        times["ngram_ids"].append(time.perf_counter() - start)
    return {
        "messages": len(texts),
        "tokens_median": int(np.median(tokens)),
        "tokens_p95": int(np.percentile(tokens, 95)),
        **{f"{k}_ms": C.percentiles(v) for k, v in times.items()},
    }


def agreement(logits: Dict[str, np.ndarray], gold: List[int]) -> Dict[str, Dict[str, Any]]:
    reference = logits[REFERENCE]
    top = reference.argmax(-1)
    out = {}
    for name, values in logits.items():
        row: Dict[str, Any] = {
            "top1_agreement": round(float(np.mean(values.argmax(-1) == top)), 5),
            "disagreements": int(np.sum(values.argmax(-1) != top)),
            "max_abs_logit_diff": round(float(np.max(np.abs(values - reference))), 4),
        }
        if gold and len(gold) == len(values) and min(gold) >= 0:
            row["accuracy"] = round(float(np.mean(values.argmax(-1) == np.asarray(gold))), 4)
        out[name] = row
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls, one pass, a shorter agreement training")
    parser.add_argument("--threads", type=int, default=0, help="threads per variant (0 = all cores)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS)
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help="runs of every variant, in alternating order (default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--agreement-model",
        type=Path,
        default=None,
        help="a trained BertIntentClassifier resource folder (model.safetensors, encoder_config.json, meta.json)",
    )
    parser.add_argument(
        "--small-epochs", type=int, default=None, help="epochs of the small SMP2017 model (default 20; 6 with --quick)"
    )
    parser.add_argument(
        "--full-epochs", type=int, default=0, help="also train a full-size model on SMP2017 for this many epochs (slow)"
    )
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="run this many CPU-bound processes alongside the latency passes (floors are measured without them)",
    )
    parser.add_argument(
        "--chart-only", type=Path, default=None, help="redraw the PNG chart from a results JSON and exit"
    )
    parser.add_argument(
        "--name",
        default=None,
        help="output name in benchmarks/results/ (default bert_latency, or bert_latency_quick with --quick)",
    )
    # worker modes (internal)
    parser.add_argument("--worker", dest="variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--floors", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--eval-set", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--logits-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--agreement-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.chart_only:
        png = args.chart_only.with_suffix(".png")
        chart(json.loads(args.chart_only.read_text(encoding="utf-8")), png)
        print(f"wrote {png}")
        return
    if args.floors:
        return floors_worker(args)
    if args.variant:
        return worker(args)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if REFERENCE not in variants and not args.skip_agreement:
        variants.insert(0, REFERENCE)
    passes = args.passes or (1 if args.quick else 2)
    rounds, calls, batches = (2, 10, 3) if args.quick else (5, 30, 8)
    small_epochs = args.small_epochs
    if small_epochs is None:  # reuse the longest-trained cached model, else train one
        cached = sorted(
            int(p.name.rsplit("_e", 1)[1]) for p in WORK.glob("smp2017_small_e*") if (p / WEIGHTS_FILE).is_file()
        )
        small_epochs = cached[-1] if cached else (6 if args.quick else 20)
    started = time.time()
    payload: Dict[str, Any] = {
        "machine": C.machine_info(),
        "args": {k: str(v) for k, v in vars(args).items() if v is not None},
    }
    C.log(
        f"machine: {payload['machine']['cpu']}, {payload['machine']['cores_available']} cores, load {payload['machine']['load_average_at_start']}"
    )

    # ---- models and exports (train time work, cached in benchmarks/work/bert_latency)
    full = WORK / "full_random"
    if not (full / WEIGHTS_FILE).is_file():
        C.log("building the full-size random-weight model")
        full_size_random(full)
    C.log("exporting the onnxruntime and native files (as persist would)")
    payload["export"] = export_inference_files(full)
    payload["files_mb"] = {
        "safetensors_fp32": round((full / WEIGHTS_FILE).stat().st_size / 1e6, 1),
        **{
            f: round((full / f).stat().st_size / 1e6, 1)
            for f in ("model.onnx", "model.int8.onnx", "model.native.safetensors")
        },
    }

    eval_models: Dict[str, Path] = {}
    if not args.skip_agreement:
        eval_models["full-size, random weights"] = full
        small = WORK / f"smp2017_small_e{small_epochs}"
        if C.smp2017_split("train")[0]:
            if not (small / WEIGHTS_FILE).is_file():
                C.log(f"training the small agreement model on SMP2017 ({small_epochs} epochs)")
                payload.setdefault("training", {})["small"] = train_on_smp2017(
                    small, "small", small_epochs, args.threads
                )
            export_inference_files(small)
            eval_models["small BERT trained on SMP2017 (4x256 + n-grams)"] = small
        if args.full_epochs:
            big = WORK / f"smp2017_full_e{args.full_epochs}"
            if not (big / WEIGHTS_FILE).is_file():
                C.log(f"training the full-size agreement model on SMP2017 ({args.full_epochs} epochs)")
                payload.setdefault("training", {})["full"] = train_on_smp2017(
                    big, "full", args.full_epochs, args.threads
                )
            export_inference_files(big)
            eval_models[
                f"full-size BERT trained on SMP2017 ({args.full_epochs} epochs from random init, no pre-training)"
            ] = big
        if args.agreement_model:
            export_inference_files(args.agreement_model)
            eval_models[f"given model {args.agreement_model.name}"] = args.agreement_model
    eval_sets = {}
    for label, folder in eval_models.items():
        target = WORK / f"eval_{folder.name}.npz"
        eval_sets[label] = (folder, target, encode_eval_set(folder, target, limit=400 if args.quick else None))

    # ---- floors, tokenizer
    C.log("measuring GEMM rates and DRAM bandwidth")
    floors = [run_worker(["--floors", "--threads", str(args.threads)])]
    payload["tokenizer"] = tokenizer_timing(200 if args.quick else 1000)

    # ---- latency / memory, every variant in its own process, passes in alternating order
    runs: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
    busy = start_busy(args.busy)
    try:
        for p in range(passes):
            for v in variants if p % 2 == 0 else list(reversed(variants)):
                C.log(f"pass {p + 1}/{passes}: {v}" + (f" ({args.busy} busy processes alongside)" if busy else ""))
                runs[v].append(
                    run_worker(
                        [
                            "--worker",
                            v,
                            "--folder",
                            str(full),
                            "--threads",
                            str(args.threads),
                            "--rounds",
                            str(rounds),
                            "--calls",
                            str(calls),
                            "--batches",
                            str(batches),
                        ]
                    )
                )
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    floors.append(run_worker(["--floors", "--threads", str(args.threads)]))
    payload["floors_runs"] = floors
    payload["runs"] = runs

    # ---- agreement
    payload["agreement"] = {}
    for label, (folder, target, info) in eval_sets.items():
        logits = {}
        for v in variants:
            if v in SETTINGS_ONLY:
                continue
            out = WORK / f"logits_{folder.name}_{v}.npy"
            run_worker(
                [
                    "--worker",
                    v,
                    "--folder",
                    str(folder),
                    "--threads",
                    str(args.threads),
                    "--agreement-only",
                    "--eval-set",
                    str(target),
                    "--logits-out",
                    str(out),
                ]
            )
            logits[v] = np.load(out)
        payload["agreement"][label] = {"texts": info["texts"], "variants": agreement(logits, info["gold"])}

    payload["elapsed_s"] = round(time.time() - started, 1)
    payload["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    markdown = render(payload)
    json_path, md_path = C.write_results(
        args.name or ("bert_latency_quick" if args.quick else "bert_latency"), payload, markdown
    )
    chart(payload, json_path.with_suffix(".png"))
    print(markdown)
    print(f"\nwrote {json_path} and {md_path}")


# =========================================================================================== report
def chart(payload: Dict[str, Any], path: Path) -> None:
    """p50 latency by message length for every variant, with the int8 FLOP floor and the weight-streaming floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floors = summarize_floors(payload["floors_runs"])
    lengths = [int(n) for n in LENGTHS]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, runs in payload["runs"].items():
        run = best_run(runs)
        ax.plot(lengths, [run["latency_ms"][str(n)]["p50"] for n in lengths], marker="o", label=name)
    int8_floor = [
        C.flops_per_message(n, num_labels=NUM_LABELS) / (floors["gflops"]["int8"] * 1e9) * 1e3 for n in lengths
    ]
    ax.plot(lengths, int8_floor, "k--", label=f"floor: int8 GEMM at {floors['gflops']['int8']:.0f} GFLOP/s")
    stream = weight_bytes("int8") / (floors["dram_gb_s"] * 1e9) * 1e3
    ax.axhline(
        stream, color="grey", linestyle=":", label=f"floor: int8 weights from memory at {floors['dram_gb_s']:.0f} GB/s"
    )
    if "int8_weights_reread_gb_s" in floors:
        reread = weight_bytes("int8") / (floors["int8_weights_reread_gb_s"] * 1e9) * 1e3
        ax.axhline(
            reread,
            color="grey",
            linestyle="-.",
            label=f"floor: int8 weights re-read at {floors['int8_weights_reread_gb_s']:.0f} GB/s",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_xlabel("tokens per message (batch 1)")
    ax.set_ylabel("p50 ms per message")
    ax.set_title("BERT-base intent model on this CPU: latency by inference option")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize_floors(floors: List[Dict[str, Any]]) -> Dict[str, Any]:
    best = {p: max(f["best_gflops"].get(p, 0.0) for f in floors) for p in ("fp32", "bf16", "int8")}
    bandwidth = max(f["dram_read_gb_s"] for f in floors)
    summary = {"gflops": best, "dram_gb_s": bandwidth}
    reread = [
        f["int8_weights_reread_gb_s"] for f in floors if "int8_weights_reread_gb_s" in f
    ]  # absent from older results
    if reread:
        summary["int8_weights_reread_gb_s"] = max(reread)
    gemms = [
        f["model_gemms_int8_ms"] for f in floors if "model_gemms_int8_ms" in f
    ]  # absent from results written before it was measured
    if gemms:
        summary["model_gemms_int8_ms"] = {n: min(g[n] for g in gemms) for n in gemms[0]}
    return summary


def best_run(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The pass with the lowest p50 at 16 tokens (the machine is shared: the others met more noise)."""
    return min(runs, key=lambda r: r["latency_ms"]["16"]["p50"])


def weight_bytes(precision: str) -> float:
    params = C.linear_params(768, 12, 3072, NUM_LABELS)
    return params * {"fp32": 4, "bf16": 2, "int8": 1}[precision]


def render(payload: Dict[str, Any]) -> str:
    floors = summarize_floors(payload["floors_runs"])
    rates, bandwidth = floors["gflops"], floors["dram_gb_s"]
    payload["floors"] = floors
    lines = [
        "## BERT-base intent model: latency, throughput, memory",
        "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores_available']} cores "
        f"({', '.join(payload['machine']['cpu_flags'])}); threads per variant: "
        f"{int(payload['args'].get('threads', '0')) or 'all cores'} (unless the name says otherwise); "
        f"load average {payload['machine']['load_average_at_start']} at start, {payload['load_average_at_end']} at end "
        "(the machine is shared: compare rows of one run). Architecture of hfl/chinese-bert-wwm-ext, random weights, "
        "31 intents, batch 1 unless noted; each variant in its own process; best of "
        f"{len(next(iter(payload['runs'].values())))} passes."
        + (
            f" **{busy} CPU-bound processes ran alongside the latency passes** (`--busy {busy}`): a server sharing "
            "its cores; the floors were measured without them."
            if (busy := int(payload["args"].get("busy", "0")))
            else ""
        ),
        "",
    ]
    header = ["variant", "import + load s", "RSS after load MB", "peak RSS MB"]
    header += [f"p50 / p95 ms @{n}" for n in LENGTHS]
    header += ["batch 32×32 msg/s", "× int8 FLOP floor @16 / @32"]
    rows = []
    floor16 = C.flops_per_message(16) / (rates["int8"] * 1e9) * 1e3
    floor32 = C.flops_per_message(32) / (rates["int8"] * 1e9) * 1e3
    # where the CPU multiplies faster than it can re-read the weights (AMX), the re-read is the real floor
    reread = (
        weight_bytes("int8") / (floors["int8_weights_reread_gb_s"] * 1e9) * 1e3
        if "int8_weights_reread_gb_s" in floors
        else None
    )
    if reread is not None:
        header.append("× larger of the two int8 floors @16 / @32")
    for name, runs in payload["runs"].items():
        r = best_run(runs)
        lat = r["latency_ms"]
        rows.append(
            [
                name,
                f"{r['import_s']:.1f} + {r['load_s']:.1f}",
                f"{r['rss_after_load_mb']:.0f}",
                f"{r['peak_rss_mb']:.0f}",
                *[f"{lat[str(n)]['p50']:.1f} / {lat[str(n)]['p95']:.1f}" for n in LENGTHS],
                f"{r['batch_msgs_per_s']:.0f}",
                f"{lat['16']['p50'] / floor16:.1f} / {lat['32']['p50'] / floor32:.1f}",
            ]
            + (
                []
                if reread is None
                else [f"{lat['16']['p50'] / max(floor16, reread):.1f} / {lat['32']['p50'] / max(floor32, reread):.1f}"]
            )
        )
    for precision in ("int8", "bf16", "fp32"):
        rate = rates[precision]
        flop = [C.flops_per_message(n) / (rate * 1e9) * 1e3 for n in LENGTHS]
        stream = weight_bytes(precision) / (bandwidth * 1e9) * 1e3
        batch = 32 * C.flops_per_message(32) / (rate * 1e9)
        rows.append(
            [
                f"floor: {precision} GEMM at {rate:.0f} GFLOP/s",
                "",
                "",
                "",
                *[f"{f:.1f}" for f in flop],
                f"{32 / batch:.0f}",
            ]
        )
        rows.append(
            [
                f"floor: streaming {precision} weights ({weight_bytes(precision) / 1e6:.0f} MB) at {bandwidth:.0f} GB/s",
                "",
                "",
                "",
                *[f"{stream:.1f}" for _ in LENGTHS],
            ]
        )
    if reread is not None:
        rows.append(
            [
                f"floor: re-reading the int8 weights' {weight_bytes('int8') / 1e6:.0f} MB back to back at "
                f"{floors['int8_weights_reread_gb_s']:.0f} GB/s (from the last-level cache where it holds them)",
                "",
                "",
                "",
                *[f"{reread:.1f}" for _ in LENGTHS],
                "",
                f"{reread / floor16:.1f} / {reread / floor32:.1f}",
            ]
        )
    if "model_gemms_int8_ms" in floors:
        gemms = floors["model_gemms_int8_ms"]
        rows.append(
            [
                "measured: the model's 48 int8 weight GEMMs alone (onnxruntime, weights from memory)",
                "",
                "",
                "",
                *[f"{gemms[str(n)]:.1f}" for n in LENGTHS],
                "",
                f"{gemms['16'] / floor16:.1f} / {gemms['32'] / floor32:.1f}",
            ]
        )
    lines.append(
        C.markdown_table(header, [row + [""] * (len(header) - len(row)) for row in rows])
    )  # floors: empty cells
    tok = payload["tokenizer"]
    lines += [
        "",
        f"Text to inputs, one message (median {tok['tokens_median']}, p95 {tok['tokens_p95']} tokens), p50 / p95 ms: "
        f"transformers BertTokenizerFast {tok['transformers_ms']['p50']:.3f} / {tok['transformers_ms']['p95']:.3f}; "
        f"tokenizer_files.TextEncoder (tokenizers only, no torch) {tok['text_encoder_ms']['p50']:.3f} / {tok['text_encoder_ms']['p95']:.3f}; "
        f"hashed n-gram ids {tok['ngram_ids_ms']['p50']:.3f} / {tok['ngram_ids_ms']['p95']:.3f}.",
        "",
        "Files (full-size): "
        + ", ".join(f"{k} {v:.1f} MB" for k, v in payload["files_mb"].items())
        + ". Export at train time: "
        + ", ".join(f"{p} {r.get('total_s', r.get('export_s'))} s" for p, r in payload["export"].items())
        + ".",
    ]
    if payload.get("agreement"):
        lines += ["", "### Top-1 agreement with fp32 (transformers eager) on SMP2017 develop + test texts", ""]
        names = list(next(iter(payload["agreement"].values()))["variants"])
        header = ["model (texts)"] + names
        rows = []
        for label, block in payload["agreement"].items():
            cells = []
            for v in names:
                a = block["variants"][v]
                cell = f"{100 * a['top1_agreement']:.2f}% ({a['disagreements']})"
                if "accuracy" in a:
                    cell += f", acc {100 * a['accuracy']:.1f}%"
                cells.append(cell)
            rows.append([f"{label} ({block['texts']})"] + cells)
        lines.append(C.markdown_table(header, rows))
        lines += [
            "",
            "Cells: agreement (disagreeing texts), and accuracy against the gold labels where the model was trained on them.",
        ]
    flags = "".join(
        f" --{k.replace('_', '-')}" for k in ("quick", "skip_agreement") if payload["args"].get(k) == "True"
    )
    flags += "".join(
        f" --{k.replace('_', '-')} {payload['args'][k]}"
        for k in ("threads", "variants", "passes", "full_epochs", "agreement_model", "name")
        if k in payload["args"] and payload["args"][k] not in ("0", ",".join(VARIANTS), "None")
    )
    lines += [
        "",
        f"Command: `PYTHONPATH=. .venv/bin/python benchmarks/bert_latency.py{flags}`; {payload['elapsed_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
