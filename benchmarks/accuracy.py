"""Accuracy benchmark: nlu-bert pipelines against Rasa's DIET and logistic regression, same data, same machine.

Each pipeline is trained through Rasa's own training API (`rasa.model_training.train_nlu`) on a dataset's train
split and evaluated by parsing its test split with a loaded `Agent`, as `rasa run` would.

    python benchmarks/accuracy.py --quick                       # < 10 minutes: SMP2017, subsampled
    python benchmarks/accuracy.py --datasets cais smp2019 nlpcc2018 crosswoz --pipelines bert diet crf regex \\
        --max-train 1000 --no-agreement                            # entities: exact-span F1 beside intent accuracy
    python benchmarks/accuracy.py --datasets smp2017 massive     # full splits (long on 2 cores)
    python benchmarks/accuracy.py --bert-model ./models/chinese-bert-wwm-ext   # a local pre-trained backbone
    python benchmarks/accuracy.py --train my/train.yml --test my/test.yml --name mybot  # any Rasa NLU data
    python benchmarks/accuracy.py --train mybot/data --test-fraction 0.2 --config mybot/config.yml  # a bot: its
        # NLU data split by Rasa's stratified split, its own pipeline benchmarked beside the four here

Datasets are converted from ../shared/datasets with `nlu-bert convert` (see scripts/convert_shared_datasets.sh)
into benchmarks/work/ (git-ignored). Results: benchmarks/results/accuracy.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import shutil
import sys
import tarfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from unittest.mock import patch

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, os.getcwd())  # as the `rasa` command does: a bot's own components import from where it runs
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# no Rasa training cache: every row trains, so `train s` is training time, never a cache hit
os.environ.setdefault("RASA_MAX_CACHE_SIZE", "0")

from benchmarks import entities  # noqa: E402
from benchmarks._common import add_config_pipelines, file_stem  # noqa: E402
from benchmarks.datasets import DATASETS, prepare_dataset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"


def pipelines(
    bert_model: str, gpt2_model: str, quick: bool, gpt2_epochs: Optional[int] = None
) -> Dict[str, List[Dict[str, Any]]]:
    bert: Dict[str, Any] = {"name": "nlu_bert.BertIntentClassifier", "model": bert_model}
    gpt2: Dict[str, Any] = {"name": "nlu_bert.GPT2FewShotIntentClassifier", "model": gpt2_model}
    if quick:
        bert.update(epochs=12)
        gpt2.update(fine_tune_epochs=1)
    if gpt2_epochs is not None:
        gpt2.update(fine_tune_epochs=gpt2_epochs)
    if gpt2_model == "scratch":
        gpt2["fine_tune"] = True
    # the fp32 scorer in the archive, so that `evaluate_fallback` can compare it with the int8 graph it
    # quantizes from it (the default's graph), which is the one the rows are parsed with
    gpt2["inference"] = {"precision": "fp32"}
    tokenizer = {"name": "JiebaTokenizer"}
    char_ngrams = {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4}
    return {
        "bert": [tokenizer, bert],
        "bert+gpt2": [tokenizer, bert, gpt2],
        "diet": [tokenizer, char_ngrams, {"name": "DIETClassifier", "epochs": 30 if quick else 100}],
        "logreg": [tokenizer, char_ngrams, {"name": "LogisticRegressionClassifier"}],
        **entities.pipelines(),
    }


def subsample(path: Path, out: Path, per_intent: Optional[int], total: Optional[int], seed: int) -> Path:
    """A copy of an NLU YAML file with at most ``per_intent`` examples per intent / ``total`` examples (its lookup
    tables, regexes and synonyms kept)."""
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(path))
    rng = random.Random(seed)
    by_intent: Dict[str, List[Any]] = defaultdict(list)
    for m in data.intent_examples:
        by_intent[m.get("intent")].append(m)
    chosen = []
    for intent in sorted(by_intent):
        items = by_intent[intent][:]
        rng.shuffle(items)
        chosen.extend(items[:per_intent] if per_intent else items)
    if total and len(chosen) > total:
        rng.shuffle(chosen)
        chosen = chosen[:total]
    from rasa.shared.nlu.training_data.training_data import TrainingData

    out.parent.mkdir(parents=True, exist_ok=True)
    # lookup tables, regexes and synonyms stay: RegexEntityExtractor and EntitySynonymMapper read them
    kept = TrainingData(
        training_examples=chosen,
        entity_synonyms=data.entity_synonyms,
        regex_features=data.regex_features,
        lookup_tables=data.lookup_tables,
    )
    kept.persist_nlu(str(out))
    return out


def split_own_data(data_path: Path, test_fraction: float, out: Path, seed: int) -> Tuple[Path, Path]:
    """Rasa's stratified split (`rasa data split nlu`): ``test_fraction`` of each intent's examples for the test
    split, every intent in both where it has two examples or more. Written to ``out``/{train,test}.yml."""
    from rasa.shared.data import get_nlu_directory
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(get_nlu_directory(str(data_path)))  # a bot's data folder: its NLU files, not its stories
    if not data.intent_examples:
        raise ValueError(f"--train {data_path}: no intent examples found to split")
    train_data, test_data = data.train_test_split(train_frac=1.0 - test_fraction, random_seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    train_data.persist_nlu(str(out / "train.yml"))
    test_data.persist_nlu(str(out / "test.yml"))
    return out / "train.yml", out / "test.yml"


def train(
    pipeline: List[Dict[str, Any]], train_file: Path, out_dir: Path, name: str, language: str = "zh"
) -> Tuple[Path, float]:
    from rasa.model_training import train_nlu

    config = out_dir / f"{name}.config.yml"
    config.write_text(
        yaml.safe_dump(
            {"recipe": "default.v1", "language": language, "pipeline": pipeline, "policies": []}, allow_unicode=True
        ),
        encoding="utf-8",
    )
    start = time.perf_counter()
    model = train_nlu(str(config), str(train_file), str(out_dir), fixed_model_name=name)
    seconds = time.perf_counter() - start
    if not model:
        raise RuntimeError(f"training {name} produced no model")
    return Path(model), seconds


def evaluate(model: Path, test_file: Path) -> List[Dict[str, Any]]:
    from rasa.core.agent import Agent

    return evaluate_agent(Agent.load(str(model)), test_file)


def evaluate_agent(agent: Any, test_file: Path) -> List[Dict[str, Any]]:
    from rasa.shared.nlu.training_data.loading import load_data

    examples = load_data(str(test_file)).intent_examples

    async def run() -> List[Dict[str, Any]]:
        rows = []
        for m in examples:
            start = time.perf_counter()
            parsed = await agent.parse_message(m.get("text"))
            rows.append(
                {
                    "text": m.get("text"),
                    "gold": m.get("intent"),
                    "pred": (parsed.get("intent") or {}).get("name"),
                    "ms": (time.perf_counter() - start) * 1000,
                    "few_shot": parsed.get("few_shot"),
                    "gold_entities": m.get("entities") or [],
                    "entities": parsed.get("entities") or [],
                }
            )
        return rows

    return asyncio.run(run())


def metrics(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    from sklearn.metrics import f1_score

    gold = [r["gold"] for r in rows]
    pred = [r["pred"] or "<none>" for r in rows]
    out: Dict[str, Any] = {
        "accuracy": sum(g == p for g, p in zip(gold, pred)) / len(rows),
        "macro_f1": f1_score(gold, pred, average="macro", labels=sorted(set(gold)), zero_division=0),
        "parse_ms_p50": sorted(r["ms"] for r in rows)[len(rows) // 2],
        **entities.metrics(rows),
    }
    acted = [r for r in rows if isinstance(r.get("few_shot"), dict) and r["few_shot"].get("acted")]
    if any(isinstance(r.get("few_shot"), dict) for r in rows):

        def bert_answer(r: Dict[str, Any]) -> Optional[str]:
            fs = r["few_shot"]
            b = fs.get("previous") or {}
            return b.get("name") if isinstance(b, dict) else b

        out["fallback_acted"] = len(acted)
        out["fallback_fixed"] = sum(1 for r in acted if bert_answer(r) != r["gold"] and r["pred"] == r["gold"])
        out["fallback_broke"] = sum(1 for r in acted if bert_answer(r) == r["gold"] and r["pred"] != r["gold"])
    return out


def evaluate_fallback(
    model: Path, test_file: Path, work: Path, compare: bool
) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Evaluate `bert+gpt2` as the defaults serve it, and compare the fallback's int8 scorer with fp32.

    The pipeline is trained with the fp32 scorer; its int8 graph is quantized from that file here, which is the
    very graph the default (`inference: {precision: auto}` = int8) exports at train time. The rows are parsed with
    int8. The comparison sends every test message to the fallback (``threshold`` 1.0) once per scorer, and
    counts the same answers (acted on or not) and the same final intents."""
    from rasa.core.agent import Agent

    from nlu_bert import archive
    from nlu_bert.classifiers.gpt2_fewshot_classifier import GPT2FewShotIntentClassifier
    from nlu_bert.fewshot import export as fewshot_export
    from nlu_bert.fewshot import onnx_scorer

    agent = Agent.load(str(model))
    nodes = agent.processor.graph_runner._instantiated_nodes.values()  # Rasa 3.6 DaskGraphRunner
    component = next(n._component for n in nodes if isinstance(n._component, GPT2FewShotIntentClassifier))
    fp32 = component._scorer
    if not isinstance(fp32, onnx_scorer.OnnxCandidateScorer) or fp32.precision != "fp32":
        return evaluate_agent(agent, test_file), {}
    work.mkdir(parents=True, exist_ok=True)
    # Rasa unpacks the archive to a temporary folder it deletes after loading: take the graph from the archive
    fp32_path, int8_path = work / archive.GPT2_ONNX_FILES["fp32"], work / archive.GPT2_ONNX_FILES["int8"]
    with tarfile.open(model) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(f"/model/{archive.GPT2_ONNX_FILES['fp32']}"))
        with tar.extractfile(member) as src, fp32_path.open("wb") as dst:  # type: ignore[union-attr]
            shutil.copyfileobj(src, dst)
    fewshot_export.quantize_scorer(fp32_path, int8_path)
    int8 = onnx_scorer.OnnxCandidateScorer(
        int8_path, cache_size=component.config["prefix_cache_size"], position_anchor=fp32.position_anchor
    )
    component._scorer = int8
    rows = evaluate_agent(agent, test_file)
    if not compare:
        return rows, {}
    threshold = component.config["threshold"]
    component.config["threshold"] = 1.0
    forced = {}
    for name, scorer in (("int8", int8), ("fp32", fp32)):
        component._scorer = scorer
        forced[name] = evaluate_agent(agent, test_file)
    component.config["threshold"] = threshold

    def answer(row: Dict[str, Any]) -> Any:
        return ((row.get("few_shot") or {}).get("answer") or {}).get("name")

    def fallback_ms(values: List[Dict[str, Any]]) -> float:
        times = sorted((v.get("few_shot") or {}).get("time_ms", 0.0) for v in values)
        return times[len(times) // 2] if times else 0.0

    a, b = forced["fp32"], forced["int8"]
    return rows, {
        "messages": len(a),
        "same_answer": sum(answer(x) == answer(y) for x, y in zip(a, b)),
        "same_final_intent": sum(x["pred"] == y["pred"] for x, y in zip(a, b)),
        "accuracy_fp32": sum(r["pred"] == r["gold"] for r in a) / len(a),
        "accuracy_int8": sum(r["pred"] == r["gold"] for r in b) / len(b),
        "scorer_mb": {
            "fp32": round(fp32_path.stat().st_size / 1e6, 1),
            "int8": round(int8_path.stat().st_size / 1e6, 1),
        },
        "fallback_ms_p50": {"fp32": fallback_ms(a), "int8": fallback_ms(b)},
    }


# (name, backend, precision, environment while it loads); native-onnxruntime: the native file served where the C
# kernel cannot run (its int8 weights as an onnxruntime graph)
INFERENCE_OPTIONS = [
    ("onnxruntime-int8", "onnxruntime", "int8", {}),
    ("onnxruntime-fp32", "onnxruntime", "fp32", {}),
    ("native-int8", "native", "int8", {}),
    ("native-int8-onnxruntime", "native", "int8", {"NLU_BERT_NATIVE_KERNEL": "onnxruntime"}),
    ("torch-int8", "torch", "int8", {}),
    ("torch-bf16", "torch", "bf16", {}),
    ("torch-fp32", "torch", "fp32", {}),
]


def inference_agreement(bert: Dict[str, Any], train_file: Path, test_file: Path, work: Path) -> List[Dict[str, Any]]:
    """Train the `bert` pipeline's classifier once more in-process, served by torch fp32 (same seed, same data:
    the same weights), export those weights for every inference option, and compare each option's top intent
    with fp32 on the test split, one message at a time as served (dynamic int8 scales activations per batch).
    Also: accuracy, the component's archive size, and ms per message."""
    import shutil

    import numpy as np
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.loading import load_data

    from nlu_bert import BertIntentClassifier

    config = {k: v for k, v in bert.items() if k != "name"}
    context = ExecutionContext(GraphSchema({}), model_id="agreement")
    shutil.rmtree(work, ignore_errors=True)

    def storage(name: str) -> LocalModelStorage:
        (work / name).mkdir(parents=True, exist_ok=True)
        return LocalModelStorage(work / name)

    reference_config = {**config, "save_dtype": "float32", "inference": {"backend": "torch", "precision": "fp32"}}
    reference = BertIntentClassifier.create(reference_config, storage("fp32"), Resource("bert"), context)
    reference.train(load_data(str(train_file)))
    examples = load_data(str(test_file)).intent_examples
    texts, gold = [m.get("text") for m in examples], [m.get("intent") for m in examples]
    fp32_top = reference.predict_proba(texts).argmax(1)
    rows = []
    for name, backend, precision, env in INFERENCE_OPTIONS:
        option = {**config, "inference": {"backend": backend, "precision": precision}}
        target = storage(name)
        copy = BertIntentClassifier.create(option, target, Resource("bert"), context)
        copy.model, copy.tokenizer, copy.labels, copy.meta = (
            reference.model,
            reference.tokenizer,
            reference.labels,
            reference.meta,
        )
        copy.persist()
        with patch.dict(os.environ, env):  # set while it loads, restored after
            loaded = BertIntentClassifier.load(option, target, Resource("bert"), context)
        top, times = [], []
        for text in texts:  # one message at a time, as `rasa run` parses them
            start = time.perf_counter()
            top.append(int(loaded.predict_proba([text])[0].argmax()))
            times.append(time.perf_counter() - start)
        top = np.asarray(top)
        size = sum(f.stat().st_size for f in (work / name).rglob("*") if f.is_file())
        rows.append(
            {
                "option": name,
                "agreement_with_fp32": float(np.mean(top == fp32_top)),
                "disagreements": int(np.sum(top != fp32_top)),
                "accuracy": float(np.mean([loaded.labels[i] == g for i, g in zip(top, gold)])),
                "component_mb": round(size / 1e6, 2),
                "predict_ms_p50": round(float(np.percentile(times, 50)) * 1e3, 2),
                "texts": len(texts),
            }
        )
        tqdm_write(f"  {rows[-1]}")
    return rows


def tqdm_write(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)


def train_examples(path: Path) -> int:
    from rasa.shared.nlu.training_data.loading import load_data

    return len(load_data(str(path)).nlu_examples)


def archive_mb(model: Path) -> float:
    return round(model.stat().st_size / 1e6, 2)


def epochs_note(row: Dict[str, Any]) -> str:
    return f" (GPT-2 {row['gpt2_fine_tune_epochs']} epochs)" if "gpt2_fine_tune_epochs" in row else ""


def options_table(results: List[Dict[str, Any]]) -> str:
    """The inference options' agreement with fp32, as markdown ('' when no result has them)."""
    rows = [
        f"| {r['dataset']} | {o['option']} | {o['agreement_with_fp32']:.2%} ({o['disagreements']} of {o['texts']} differ) | "
        f"{o['accuracy']:.4f} | {o['component_mb']:.1f} | {o['predict_ms_p50']:.2f} |"
        for r in results
        for o in r.get("inference_options", [])
    ]
    if not rows:
        return ""
    header = [
        "| dataset | BERT inference option | top-1 agreement with fp32 | accuracy | component MB | predict ms p50 (batch 1, in-process) |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(header + rows)


def merge_stored(stored: Path, results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``results`` after the stored ones, a later run replacing the same dataset × pipeline."""
    if not stored.exists():
        return results
    new_keys = {(r["dataset"], r["pipeline"]) for r in results}
    previous = json.loads(stored.read_text(encoding="utf-8")).get("results", [])
    return [r for r in previous if (r["dataset"], r["pipeline"]) not in new_keys] + results


def out_path(name: str, extension: str, args: argparse.Namespace) -> Path:
    """--out/``name``.``extension``, ``name``-quick.``extension`` with --quick."""
    return args.out / f"{name}{'-quick' if args.quick else ''}.{extension}"


def store_results(
    name: str, results: List[Dict[str, Any]], args: argparse.Namespace
) -> Tuple[List[Dict[str, Any]], str]:
    """Write ``name``[-quick].json in --out, ``results`` merged into the stored ones (:func:`merge_stored`), with
    the command and the machine. Returns the merged results and the command."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = out_path(name, "json", args)
    results = merge_stored(path, results)
    command = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:])
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    payload = {"command": command, "machine": machine, "quick": args.quick, "results": results}
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")
    return results, command


def write_table(name: str, command: str, table: str, args: argparse.Namespace) -> None:
    """``name``[-quick].md in --out: the command, then the table; the table is printed too."""
    out_path(name, "md", args).write_text(f"`{command}`\n\n{table}\n", encoding="utf-8")
    print(table)


def write_agreement(results: List[Dict[str, Any]], args: argparse.Namespace) -> None:
    """--agreement-only: agreement[-quick].{json,md} in --out, merged with the stored ones."""
    results, command = store_results("agreement", results, args)
    write_table("agreement", command, options_table(results), args)


def write_outputs(results: List[Dict[str, Any]], args: argparse.Namespace) -> None:
    """Merge ``results`` into the stored ones (a later run replaces the same dataset × pipeline) and write all."""
    results, command = store_results("accuracy", results, args)
    lines = [
        "| dataset | pipeline | accuracy | macro-F1 | train s | archive MB | parse p50 ms | fallback acted / fixed / broke |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fb = f"{r['fallback_acted']} / {r['fallback_fixed']} / {r['fallback_broke']}" if "fallback_acted" in r else ""
        lines.append(
            f"| {r['dataset']} | {r['pipeline']}{epochs_note(r)} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['train_s']:.0f} | "
            f"{r['archive_mb']:.1f} | {r['parse_ms_p50']:.1f} | {fb} |"
        )
    table = "\n".join(lines)
    options = options_table(results)
    if options:
        table += "\n\n" + options
    fallback = [
        "| dataset | GPT-2 scorer (every test message sent to the fallback) | same fallback answer as fp32 | same final intent | accuracy | scorer MB | fallback ms p50 (in-process) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f = r.get("fallback_int8")
        if f:
            n = f["messages"]
            fallback.append(
                f"| {r['dataset']} | onnxruntime-fp32 | | | {f['accuracy_fp32']:.4f} | {f['scorer_mb']['fp32']} | {f['fallback_ms_p50']['fp32']:.1f} |"
            )
            fallback.append(
                f"| {r['dataset']} | onnxruntime-int8 (default) | {f['same_answer'] / n:.2%} ({n - f['same_answer']} of {n} differ) | "
                f"{f['same_final_intent'] / n:.2%} | {f['accuracy_int8']:.4f} | {f['scorer_mb']['int8']} | {f['fallback_ms_p50']['int8']:.1f} |"
            )
    if len(fallback) > 2:
        table += "\n\n" + "\n".join(fallback)
    entity_table = entities.table(results)
    if entity_table:
        table += "\n\n" + entity_table
    write_table("accuracy", command, table, args)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        intents = sorted((r for r in results if r["pipeline"] not in entities.ENTITY_ONLY), key=lambda r: r["dataset"])
        with_entities = [r for r in results if "entity_f1" in r]
        panels = 2 if with_entities else 1
        fig, axes = plt.subplots(
            1, panels, figsize=(panels * max(6, 1.5 * len({r["dataset"] for r in results}) + 2), 4.5)
        )
        axes = list(axes) if panels == 2 else [axes]
        note = " (--quick)" if args.quick else ""
        entities.bars(axes[0], intents, "accuracy", "test accuracy")
        axes[0].set_title("Intent accuracy by pipeline" + note)
        if with_entities:
            entities.bars(axes[1], with_entities, "entity_f1", "entity micro-F1 (exact span and type)")
            axes[1].set_title("Entity F1 by pipeline" + note)
        fig.tight_layout()
        fig.savefig(out_path("accuracy", "png", args), dpi=110)
    except Exception as e:  # noqa: BLE001 - the chart is a nicety
        print(f"(no chart: {e})")


def dataset_files(dataset: str, own: Dict[str, Tuple[Path, Path]], args: argparse.Namespace) -> Tuple[Path, Path]:
    """(train, test) Rasa NLU files of ``dataset``: the user's own, or converted from ../shared/datasets; subsampled
    with --quick."""
    train_file, test_file = own[dataset] if dataset in own else prepare_dataset(dataset, args.work / "data")
    if args.quick:
        train_file = subsample(train_file, args.work / "quick" / dataset / "train.yml", 20, None, args.seed)
        test_file = subsample(test_file, args.work / "quick" / dataset / "test.yml", None, 300, args.seed)
    if args.max_train:
        folder = args.work / f"max{args.max_train}" / dataset
        train_file = subsample(train_file, folder / "train.yml", None, args.max_train, args.seed)
    return train_file, test_file


def agreement_folder(dataset: str, args: argparse.Namespace) -> Path:
    """Where the agreement checks keep the models they train (benchmarks/int8_schemes.py reuses them); --quick
    keeps its own."""
    return args.work / ("quick/agreement" if args.quick else "agreement") / dataset


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, choices=sorted(DATASETS))
    parser.add_argument("--pipelines", nargs="+", default=["bert", "bert+gpt2", "diet", "logreg"])
    parser.add_argument("--bert-model", default="scratch")
    parser.add_argument("--gpt2-model", default="scratch")
    parser.add_argument(
        "--gpt2-epochs",
        type=int,
        default=None,
        help="most GPT-2 fine-tuning epochs for bert+gpt2 (default: the component's `fine_tune_epochs`; a time budget for large datasets)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="SMP2017 only, ≤20 train examples per intent, 300 test messages"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="train every row on the same random N examples of each training split (seeded by --seed; the test "
        "split stays whole): a time budget for DIET on large sets",
    )
    parser.add_argument(
        "--train",
        type=Path,
        default=None,
        help="your own training data (Rasa NLU YAML/JSON file or a bot's data folder); needs --test or --test-fraction",
    )
    parser.add_argument("--test", type=Path, default=None, help="your own test data (Rasa NLU YAML/JSON)")
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="with --train and no --test: hold out this share of each intent's examples as the test split "
        "(Rasa's stratified split, seeded by --seed; written to WORK/split/NAME/)",
    )
    parser.add_argument("--name", default="custom", help="the name of --train/--test data in the results")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="[NAME=]CONFIG",
        help="also benchmark the pipeline of this Rasa config file (your bot's config.yml) as the row NAME (default: "
        "the file's name without .yml); repeatable. Your own components must be importable: run from the bot's folder "
        "or set PYTHONPATH",
    )
    parser.add_argument(
        "--work", type=Path, default=WORK, help="working folder: converted datasets, trained models (git-ignored)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="results folder (accuracy.{json,md,png} there are merged with this run)",
    )
    parser.add_argument(
        "--no-agreement",
        action="store_true",
        help="skip the per-dataset checks against fp32: every BERT inference option (it trains BERT once more) and "
        "the GPT-2 fallback's int8 scorer (every test message sent to the fallback, twice)",
    )
    parser.add_argument(
        "--agreement-only",
        action="store_true",
        help="only the check of every BERT inference option against fp32 (the `bert` pipeline's classifier, trained "
        "once, in-process), no pipeline trained through Rasa; writes agreement.{json,md} in --out",
    )
    args = parser.parse_args(argv)
    if args.agreement_only and args.no_agreement:
        parser.error("--agreement-only and --no-agreement exclude each other")
    if args.test is not None and args.train is None:
        parser.error("--test needs --train (your training data)")
    if args.test_fraction is not None:
        if args.train is None or args.test is not None:
            parser.error("--test-fraction splits --train into train and test: give --train and no --test")
        if not 0.0 < args.test_fraction < 1.0:
            parser.error(f"--test-fraction must be between 0 and 1 (got {args.test_fraction}); 0.2 holds out a fifth")
    elif args.train is not None and args.test is None:
        parser.error("--train needs --test (your test data), or --test-fraction 0.2 to hold out a fifth of it")
    for path in (args.train, args.test):
        if path is not None and not path.exists():
            parser.error(f"{path} does not exist")
    configs = pipelines(args.bert_model, args.gpt2_model, args.quick, args.gpt2_epochs)
    languages = {name: "zh" for name in configs}
    extra = add_config_pipelines(parser, args.config, configs, languages)
    unknown = [p for p in args.pipelines if p not in configs]
    if unknown:
        parser.error(
            f"unknown --pipelines {' '.join(unknown)}: choose from {' '.join(configs)} (or add your own with --config)"
        )
    args.pipelines = list(dict.fromkeys(args.pipelines + extra))
    own: Dict[str, Tuple[Path, Path]] = {}
    if args.train is not None and args.test is not None:
        own[args.name] = (args.train.resolve(), args.test.resolve())
    elif args.train is not None:
        try:
            own[args.name] = split_own_data(args.train, args.test_fraction, args.work / "split" / args.name, args.seed)
        except ValueError as e:
            parser.error(str(e))
    datasets = (
        list(own)
        or args.datasets
        or (["smp2017"] if args.quick else ["smp2017", "massive", "smp2019", "cais", "telemarketing"])
    )
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nlu_bert").setLevel(
        logging.INFO
    )  # the components' epoch lines: progress inside a long `rasa train`

    from tqdm import tqdm

    results = []
    if args.agreement_only:
        for dataset in tqdm(datasets, desc="agreement", unit="dataset"):
            train_file, test_file = dataset_files(dataset, own, args)
            options = inference_agreement(configs["bert"][1], train_file, test_file, agreement_folder(dataset, args))
            results.append({"dataset": dataset, "pipeline": "bert", "inference_options": options})
        write_agreement(results, args)
        return
    jobs = [(d, p) for d in datasets for p in args.pipelines]
    bar = tqdm(jobs, desc="benchmark", unit="run")
    for dataset, name in bar:
        bar.set_postfix_str(f"{dataset}/{name}")
        train_file, test_file = dataset_files(dataset, own, args)
        out_dir = args.work / "models" / dataset
        agreement_dir = agreement_folder(dataset, args)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not entities.applies(name, train_file):
            tqdm.write(f"{dataset}/{name}: skipped (no lookup tables or regexes in the training data)")
            continue
        model, seconds = train(configs[name], train_file, out_dir, file_stem(name), languages[name])
        if name == "bert+gpt2":
            rows, fallback = evaluate_fallback(model, test_file, agreement_dir / "gpt2", compare=not args.no_agreement)
        else:
            rows, fallback = evaluate(model, test_file), {}
        result = {
            "dataset": f"{dataset}-{args.max_train}" if args.max_train else dataset,
            "pipeline": name,
            "train_s": seconds,
            "archive_mb": archive_mb(model),
            "train_examples": train_examples(train_file),
            "command": "python benchmarks/accuracy.py " + " ".join(sys.argv[1:]),
            **metrics(rows),
        }
        if fallback:
            result["fallback_int8"] = fallback
        if name == "bert+gpt2" and args.gpt2_epochs is not None:
            result["gpt2_fine_tune_epochs"] = args.gpt2_epochs
        if name == "bert" and not args.no_agreement:
            result["inference_options"] = inference_agreement(configs["bert"][1], train_file, test_file, agreement_dir)
        tqdm.write(json.dumps({k: v for k, v in result.items() if k != "per_entity"}, ensure_ascii=False))
        results.append(result)
    write_outputs(results, args)


if __name__ == "__main__":
    main()
