"""Latency of GPT2FewShotIntentClassifier's fallback path against naive candidate scoring.

Full-size GPT-2 (the config of uer/gpt2-chinese-cluecorpussmall: 12 layers, 768 wide,
21,128-token vocabulary) with random weights (compute equals the pretrained model's), a real
Chinese BERT tokenizer, a ~200-token few-shot prompt, 5 and 20 candidate intents. Rows:

  naive                  one full forward pass per candidate (+ the not-applicable answer)
  prompt KV cache        the prompt once, its key/value cache copied to every candidate
  packed, no cache       prompt + all candidates in one pass (tree attention mask)
  fallback path, cold    the component's process(): first message for this candidate set
  fallback path (fp32)   the component's process(), few-shot prefix cached across messages
  fallback path (bf16)   the same with `inference: {backend: torch, precision: bf16}`
  onnxruntime fp32/int8  the component's process() with `inference: {backend: onnxruntime}` (the default),
                         cold and cached; the scoring graph is exported once to benchmarks/work/

The methods are timed in interleaved rounds (each method once per round), so that the load
of a shared machine hits every row alike. Not a test: numbers depend on the machine and its
load. Usage::

    python benchmarks/fewshot_latency.py            # 10 messages per row (naive: 5)
    python benchmarks/fewshot_latency.py --quick    # 3 messages per row (naive: 2)

Writes benchmarks/results/fewshot_latency.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_VOCAB = REPO.parent / "shared" / "datasets" / "bert_chinese_vocab" / "raw" / "vocab.txt"
TARGET_PROMPT_TOKENS = 200
CHARS = "我想要查看订单退款物流快递地址修改取消发票优惠券积分会员账户密码登录支付银行卡余额充值提现客服投诉建议天气音乐导航电话短信闹钟日程"


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    low, high = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def interleaved(methods: List[Tuple[str, Callable[[int], Any], int]], rounds: int) -> Dict[str, List[float]]:
    """Time every method once per round, round after round (method ``i`` only in its first ``runs`` rounds).

    On a shared, noisy machine this exposes every method to the same swings of load.
    """
    times: Dict[str, List[float]] = {name: [] for name, _, _ in methods}
    for r in range(rounds):
        for name, fn, runs in methods:
            if r < runs:
                start = time.perf_counter()
                fn(r)
                times[name].append(1000 * (time.perf_counter() - start))
        done = ", ".join(f"{n} {statistics.median(t):.0f}" for n, t in times.items() if t)
        print(f"  round {r + 1}/{rounds} (p50 ms so far: {done})", file=sys.stderr, flush=True)
    return times


def synthetic_bot(k: int, example_chars: int, rng: random.Random) -> Tuple[Dict[str, List[str]], Dict[str, str]]:
    examples, labels = {}, {}
    for i in range(k):
        name = f"intent_{i:02d}"
        labels[name] = "".join(rng.sample(CHARS, 4))  # a 4-character Chinese label
        examples[name] = ["".join(rng.choice(CHARS) for _ in range(example_chars)) for _ in range(6)]
    return examples, labels


def build_component(model: Any, tokenizer: Any, k: int, rng: random.Random) -> Tuple[Any, int, Dict[str, str]]:
    """A component around the given model, with a bot whose prompt is closest to 200 tokens."""
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource

    from nlu_bert.classifiers.gpt2_fewshot_classifier import GPT2FewShotIntentClassifier
    from nlu_bert.fewshot import decision
    from nlu_bert.fewshot.prompts import ExampleBank

    # 5 candidates: the default template (1 or 2 shots each, whichever comes closer to 200 tokens);
    # 20 candidates: 1 shot each and the separator-free template (the twelve-dash separator
    # between examples alone would take 20 x 12 tokens)
    template, shot_options = ("few_shot_zh", (2, 1)) if k <= 10 else ("intent_zh", (1,))
    # never written to (the benchmark persists nothing), so the folder is never created
    storage = LocalModelStorage(Path(tempfile.gettempdir()) / "fewshot-bench")
    best = None
    for n_shot in shot_options:
        config = {
            "template": template,
            "n_shot": n_shot,
            "max_candidates": k,
            "similarity_candidates": 0,
            "threshold": 0.9,
            # random weights are unsure of every answer: let the fallback act, so the whole path is timed
            "min_confidence": 0.0,
            "max_prompt_tokens": 512,
            "max_text_tokens": 32,
        }
        for chars in range(2, 30):
            examples, labels = synthetic_bot(k, chars, random.Random(rng.random()))
            component = GPT2FewShotIntentClassifier(config, storage, Resource(f"bench{k}"))
            component._install(model, tokenizer, ExampleBank(examples), labels)
            ranking = [{"name": n, "confidence": 0.1} for n in labels]
            _, prefix = decision.prompt_for(ranking, "x", component._bank, component._encoder, labels, config)
            length = len(prefix) + len(component._encoder.query_ids("帮我查一下订单到哪了"))
            if best is None or abs(length - TARGET_PROMPT_TOKENS) < abs(best[1] - TARGET_PROMPT_TOKENS):
                best = (component, length, labels)
    assert best is not None
    return best


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.message import Message
    from transformers import BertTokenizerFast, GPT2Config, GPT2LMHeadModel

    from nlu_bert.classifiers.gpt2_fewshot_classifier import GPT2FewShotIntentClassifier
    from nlu_bert.fewshot import decision
    from nlu_bert.fewshot.onnx_scorer import OnnxCandidateScorer

    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(args.vocab), do_lower_case=True)
    config = GPT2Config(vocab_size=21128, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    model = GPT2LMHeadModel(config).eval()
    rng = random.Random(0)
    texts = ["".join(rng.choice(CHARS) for _ in range(rng.randint(8, 14))) for _ in range(64)]
    rows: List[Dict[str, Any]] = []
    consistency: List[Dict[str, Any]] = []
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    onnx_files = export_scorers(model)
    for k in (5, 20):
        component, prompt_tokens, labels = build_component(model, tokenizer, k, rng)
        bf16 = GPT2FewShotIntentClassifier(component.config, component._model_storage, Resource(f"bench{k}-bf16"))
        bf16._install(bf16_model, tokenizer, component._bank, labels)
        onnx = {}
        for precision, path in onnx_files.items():
            scorer = OnnxCandidateScorer(
                path, num_threads=args.threads, cache_size=component.config["prefix_cache_size"]
            )
            onnx[precision] = GPT2FewShotIntentClassifier(
                component.config, component._model_storage, Resource(f"bench{k}-{precision}")
            )
            onnx[precision]._install(None, tokenizer, component._bank, labels, scorer=scorer, model_config=model.config)
        ranking = [{"name": n, "confidence": 0.5 - 0.01 * i} for i, n in enumerate(labels)]
        encoder, scorer = component._encoder, component._scorer
        _, prefix = decision.prompt_for(ranking, texts[0], component._bank, encoder, labels, component.config)
        options = [encoder.answer_ids(labels[n]) for n in sorted(labels)] + [encoder.answer_ids(encoder.not_applicable)]

        def scoring(mode: str) -> Callable[[int], Any]:
            return lambda i: scorer.score(prefix, encoder.query_ids(texts[i % len(texts)]), options, mode=mode)

        def fallback(target: Any, cold: bool = False) -> Callable[[int], None]:
            def call(i: int) -> None:
                if cold:
                    target._scorer.cache.clear()
                message = Message(data={"text": texts[(i + 7) % len(texts)]})
                message.set("intent", dict(ranking[0]))
                message.set("intent_ranking", [dict(r) for r in ranking])
                target.process([message])
                assert message.get("few_shot")["acted"] and message.get("few_shot")["cache_hit"] is not cold

            return call

        print(f"{k} candidates, {prompt_tokens}-token prompt", file=sys.stderr, flush=True)
        scorer.score(prefix, encoder.query_ids(texts[0]), options, mode="packed")  # warm-up
        fallback(bf16, cold=True)(0)  # warm-up, fills the bf16 cache
        for target in onnx.values():
            fallback(target, cold=True)(0)
        methods = [
            ("naive, one pass per candidate", scoring("naive"), args.naive_runs),
            ("prompt KV cache, candidates batched", scoring("shared_kv"), args.runs),
            ("packed in one pass, no cache", scoring("packed"), args.runs),
            ("fallback path, cold cache (fp32)", fallback(component, cold=True), args.runs),
            ("fallback path, prefix cached (fp32)", fallback(component), args.runs),
            ("fallback path, prefix cached (bf16)", fallback(bf16), args.runs),
            ("fallback path, cold cache (onnxruntime fp32)", fallback(onnx["fp32"], cold=True), args.runs),
            ("fallback path, prefix cached (onnxruntime fp32)", fallback(onnx["fp32"]), args.runs),
            ("fallback path, cold cache (onnxruntime int8)", fallback(onnx["int8"], cold=True), args.runs),
            ("fallback path, prefix cached (onnxruntime int8)", fallback(onnx["int8"]), args.runs),
        ]
        measured = list(interleaved(methods, args.runs).items())
        probe = [encoder.query_ids(t) for t in texts[:5]]
        fp32_scores = [scorer.score(prefix, q, options).log_likelihoods for q in probe]
        for name, other in [("torch bf16", bf16), *((f"onnxruntime {p}", c) for p, c in onnx.items())]:
            scores = [other._scorer.score(prefix, q, options).log_likelihoods for q in probe]
            consistency.append({"variant": name, **same_decisions(k, fp32_scores, scores)})
        naive_p50 = statistics.median(measured[0][1])
        for name, times in measured:
            rows.append(
                {
                    "candidates": k,
                    "prompt_tokens": prompt_tokens,
                    "method": name,
                    "runs": len(times),
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(percentile(times, 0.95), 1),
                    "speedup_vs_naive": round(naive_p50 / statistics.median(times), 1),
                }
            )
    return {
        "benchmark": "fewshot_latency",
        "model": "GPT2Config(vocab_size=21128, n_positions=1024, n_embd=768, n_layer=12, n_head=12), random weights",
        "tokenizer": str(args.vocab),
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "quick": args.quick,
        # 1-minute load average before and after: on a shared machine, compare rows of one run only
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "note": "scores answer = label + [SEP] for every candidate plus the not-applicable answer (K + 1 options)",
        "rows": rows,
        "vs_torch_fp32": consistency,
    }


def export_scorers(model: Any) -> Dict[str, Path]:
    """The component's ONNX scoring graphs of ``model`` (fp32, int8), exported once and kept in benchmarks/work."""
    from nlu_bert import archive
    from nlu_bert.fewshot import export as fewshot_export
    from nlu_bert.fewshot import onnx_scorer

    folder = REPO / "benchmarks" / "work" / "fewshot_latency"
    files = {}
    for precision in onnx_scorer.PRECISIONS:
        path = folder / archive.GPT2_ONNX_FILES[precision]
        if not path.is_file():
            print(f"exporting the {precision} scoring graph", file=sys.stderr, flush=True)
            fewshot_export.export_scorer(model, path, precision)
        files[precision] = path
    return files


def same_decisions(k: int, fp32: List[List[float]], bf16: List[List[float]]) -> Dict[str, Any]:
    from scipy.special import softmax

    def argmax(v: List[float]) -> int:
        return max(range(len(v)), key=v.__getitem__)

    return {
        "candidates": k,
        "messages": len(fp32),
        "max_abs_diff_log_likelihood": round(max(abs(a - b) for x, y in zip(fp32, bf16) for a, b in zip(x, y)), 4),
        "max_abs_diff_confidence": round(
            max(abs(a - b) for x, y in zip(fp32, bf16) for a, b in zip(softmax(x), softmax(y))), 4
        ),
        "same_decision": sum(argmax(x) == argmax(y) for x, y in zip(fp32, bf16)),
    }


def markdown(result: Dict[str, Any]) -> str:
    lines = [
        f"GPT-2 few-shot fallback latency ({result['model']}; {result['threads']} threads; torch {result['torch']}; "
        f"load average {result.get('load_average')})",
        "",
        "| candidates | prompt tokens | method | runs | p50 ms | p95 ms | speed-up vs naive (p50) |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['candidates']} | {r['prompt_tokens']} | {r['method']} | {r['runs']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['speedup_vs_naive']}x |"
        )
    lines += ["", "Against torch fp32 on the same prompts (random weights):", ""]
    for c in result["vs_torch_fp32"]:
        lines.append(
            f"- {c['variant']}, {c['candidates']} candidates, {c['messages']} messages: max |Δ log-likelihood| "
            f"{c['max_abs_diff_log_likelihood']}, max |Δ confidence| {c['max_abs_diff_confidence']}, "
            f"same decision {c['same_decision']}/{c['messages']}"
        )
    return "\n".join(lines) + "\n"


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 messages per row (naive: 2)")
    parser.add_argument("--runs", type=int, default=None, help="messages per row (default 10, quick 3)")
    parser.add_argument("--naive-runs", type=int, default=None, help="messages for the naive row (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB, help="a Chinese BERT vocab.txt")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for JSON + markdown")
    args = parser.parse_args(argv)
    args.runs = args.runs or (3 if args.quick else 10)
    args.naive_runs = args.naive_runs or (2 if args.quick else 5)
    if not args.vocab.exists():
        parser.error(f"{args.vocab} not found; pass --vocab with a Chinese BERT vocab.txt (21,128 lines)")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fewshot_latency.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    table = markdown(result)
    (args.out / "fewshot_latency.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
