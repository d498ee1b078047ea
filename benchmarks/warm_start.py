"""Warm-start benchmark: add an intent with a few examples to a trained BertIntentClassifier (`warm_start_model`)
instead of retraining it from the backbone.

On a public set (train split capped at ``--cap`` examples per intent) it trains a model without ``--new-intent``
(the base), then adds that intent with ``--shots`` of its examples: by a warm start from the base for each
``--fractions`` value (`finetuning_epoch_fraction`), and by a full retrain for comparison. For each model: the new
intent's recall on its held-out phrasings (its test examples and the training examples not given), the old intents'
test accuracy, and the wall time of `train` (export and confidence fitting included).

    nice -n 19 .venv/bin/python -m benchmarks.warm_start --dataset smp2017 --cap 40 --shots 5

Writes benchmarks/results/warm_start.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks._common import RESULTS, WORK, git_state, log, markdown_table, quiet_environment, write_results
from benchmarks.datasets import prepare_dataset


def load_examples(path: Path) -> List[Any]:
    from rasa.shared.nlu.training_data.loading import load_data

    return [m for m in load_data(str(path)).intent_examples if (m.get("text") or "").strip() and m.get("intent")]


def cap_per_intent(examples: Sequence[Any], cap: int, seed: int) -> List[Any]:
    by_intent: Dict[str, List[Any]] = defaultdict(list)
    for m in examples:
        by_intent[m.get("intent")].append(m)
    rng, kept = random.Random(seed), []
    for intent in sorted(by_intent):
        group = by_intent[intent][:]
        rng.shuffle(group)
        kept.extend(group[:cap] if cap else group)
    return kept


def pick_new_intent(train: Sequence[Any], test: Sequence[Any], shots: int) -> str:
    """The intent with the most held-out phrasings, the largest one (often chit-chat) left out."""
    counts = Counter(m.get("intent") for m in train)
    tests = Counter(m.get("intent") for m in test)
    biggest = counts.most_common(1)[0][0]
    return max((i for i in counts if i != biggest), key=lambda i: (counts[i] - shots + tests[i], i))


def train(examples: Sequence[Any], config: Dict[str, Any], folder: Path) -> Any:
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from nlu_bert.classifiers.bert_intent_classifier import BertIntentClassifier

    folder.mkdir(parents=True, exist_ok=True)
    storage, context = LocalModelStorage(folder), ExecutionContext(GraphSchema({}), "warm-start-benchmark")
    component = BertIntentClassifier.create(config, storage, Resource("train_BertIntentClassifier0"), context)
    component.train(TrainingData(training_examples=list(examples)))
    return component


def evaluate(component: Any, old_test: Sequence[Any], held_out: Sequence[Any], new_intent: str) -> Dict[str, Any]:
    def predicted(messages: Sequence[Any]) -> List[str]:
        proba = component.predict_proba([m.get("text") for m in messages])
        return [component.labels[i] for i in proba.argmax(1)]

    old = predicted(old_test)
    new = predicted(held_out)
    return {
        "old_accuracy": round(sum(p == m.get("intent") for p, m in zip(old, old_test)) / len(old_test), 4),
        "old_taken_by_new": sum(p == new_intent for p in old),
        "new_recall": round(sum(p == new_intent for p in new) / len(held_out), 4) if held_out else None,
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    train_path, test_path = prepare_dataset(args.dataset, WORK / "datasets")
    train_all = cap_per_intent(load_examples(train_path), args.cap, args.seed)
    test_all = load_examples(test_path)
    new_intent = args.new_intent or pick_new_intent(train_all, test_all, args.shots)
    rng = random.Random(args.seed)
    new_examples = [m for m in train_all if m.get("intent") == new_intent]
    rng.shuffle(new_examples)
    given, rest = new_examples[: args.shots], new_examples[args.shots :]
    old_train = [m for m in train_all if m.get("intent") != new_intent]
    held_out = rest + [m for m in test_all if m.get("intent") == new_intent]
    old_intents = {m.get("intent") for m in old_train}
    old_test = [m for m in test_all if m.get("intent") in old_intents]
    base_config = {"model": "scratch", "num_threads": args.threads, **json.loads(args.config)}
    log(
        f"{args.dataset}: {len(old_train)} examples of {len(old_intents)} intents; new intent {new_intent!r} with "
        f"{len(given)} examples, {len(held_out)} held-out phrasings; {len(old_test)} old test examples"
    )
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="warm_start_bench_", dir=str(WORK) if WORK.is_dir() else None) as tmp:
        root = Path(tmp)

        def measure(name: str, examples: Sequence[Any], config: Dict[str, Any], folder: Path) -> Any:
            started = time.perf_counter()
            component = train(examples, config, folder)
            seconds = time.perf_counter() - started
            report = json.loads((folder / "train_BertIntentClassifier0" / "training_report.json").read_text("utf-8"))
            row = {
                "model": name,
                "train_seconds": round(seconds, 1),
                "epochs_run": len(report["history"]),
                **evaluate(component, old_test, held_out, new_intent),
                "warm_start": report.get("warm_start"),
            }
            log(f"  {name}: {json.dumps({k: v for k, v in row.items() if k != 'warm_start'})}")
            rows.append(row)
            return component

        measure("base (without the new intent)", old_train, base_config, root / "base")
        base_folder = root / "base" / "train_BertIntentClassifier0"
        for fraction in args.fractions:
            config = {**base_config, "warm_start_model": str(base_folder), "finetuning_epoch_fraction": fraction}
            measure(f"warm start, fraction {fraction:g}", old_train + given, config, root / f"warm_{fraction:g}")
        if not args.skip_full:
            measure("full retrain", old_train + given, base_config, root / "full")
    return {
        "dataset": args.dataset,
        "cap_per_intent": args.cap,
        "shots": args.shots,
        "new_intent": new_intent,
        "old_train_examples": len(old_train),
        "held_out_phrasings": len(held_out),
        "old_test_examples": len(old_test),
        "config": base_config,
        "rows": rows,
        "git": git_state(),
    }


def markdown(payload: Dict[str, Any]) -> str:
    header = ["model", "new intent recall", "old intents accuracy", "old taken by new", "epochs", "train s"]
    rows = [
        [
            r["model"],
            f"{r['new_recall']:.3f}" if r["new_recall"] is not None else "–",
            f"{r['old_accuracy']:.4f}",
            r["old_taken_by_new"],
            r["epochs_run"],
            f"{r['train_seconds']:.0f}",
        ]
        for r in payload["rows"]
    ]
    title = (
        f"Adding `{payload['new_intent']}` ({payload['dataset']}, {payload['shots']} examples; base: "
        f"{payload['old_train_examples']} examples, at most {payload['cap_per_intent']} an intent; recall on "
        f"{payload['held_out_phrasings']} held-out phrasings, accuracy on {payload['old_test_examples']} old test "
        "examples)"
    )
    return f"{title}\n\n{markdown_table(header, rows)}\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="smp2017")
    parser.add_argument("--new-intent", default=None, help="default: the intent with most held-out phrasings")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--cap", type=int, default=40, help="training examples per intent (0 = all)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5])
    parser.add_argument("--skip-full", action="store_true", help="no full retrain (faster)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--config", default="{}", help="JSON merged into the component's config")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quiet_environment()
    payload = run(args)
    text = markdown(payload)
    json_path, md_path = write_results("warm_start", payload, text, args.out)
    print(text)
    log(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
