"""Confidence benchmark: do BertIntentClassifier's confidences send out-of-scope messages and its own errors to a
fallback, and leave its right answers alone?

For each public set it trains the classifier with the defaults (`scratch` backbone; the serving backend of `rasa
run`), then compares the plain softmax ("before") with what the component serves ("after": the temperature and the
out-of-scope factor fitted at train time, the no-content rule) on the test split and on out-of-scope messages
(benchmarks/oos_sets.py):

- ECE on the test split (10 equal-width bins) and a reliability plot;
- out-of-scope messages whose top confidence ends below FallbackClassifier's default threshold 0.3;
- BERT's test errors and right answers that a fallback acts on (top below the threshold, or the top two closer
  than 0.1): at 0.3 (FallbackClassifier) and at the GPT-2 fallback's default threshold;
- the same shares at GPT-2 fallback thresholds from 0.3 to 0.8 (the sweep the default threshold is chosen from).

    nice -n 10 .venv/bin/python -m benchmarks.confidence --datasets smp2017 smp2019
    nice -n 10 .venv/bin/python -m benchmarks.confidence --datasets smp2017:10x15 cais:8x15   # small bots
    nice -n 10 .venv/bin/python -m benchmarks.confidence --datasets smp2017:10x15:1 --baselines   # cut seed 1

`--baselines` also trains Rasa's DIETClassifier and LogisticRegressionClassifier (the pipelines of
benchmarks/accuracy.py) on the same split and adds their test accuracy to the row.

Writes benchmarks/results/confidence.{json,md} and docs/calibration.png (reliability diagrams).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.special import softmax

from benchmarks._common import RESULTS, ROOT, WORK, log, markdown_table, quiet_environment, write_results
from benchmarks.datasets import prepare_dataset
from benchmarks.oos_sets import KEYBOARD_MASH, NO_CONTENT, SPEC, out_of_scope_sets

FALLBACK_THRESHOLD = 0.3
SWEEP = [round(x, 2) for x in np.arange(0.3, 0.801, 0.05)]


def examples(path: Path) -> List[Any]:
    from rasa.shared.nlu.training_data.loading import load_data

    return [m for m in load_data(str(path)).intent_examples if (m.get("text") or "").strip() and m.get("intent")]


def train(train_examples: List[Any], config: Dict[str, Any], folder: Path) -> Any:
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from nlu_bert.classifiers.bert_intent_classifier import BertIntentClassifier

    storage, context = LocalModelStorage(folder), ExecutionContext(GraphSchema({}), "confidence-benchmark")
    component = BertIntentClassifier.create(config, storage, Resource("bert_intent"), context)
    component.train(TrainingData(training_examples=train_examples))
    return component


def consulted(scaled: np.ndarray, threshold: float) -> np.ndarray:
    from nlu_bert.confidence.fitting import consulted as rule

    return rule(scaled, threshold)


def ece(probabilities: np.ndarray, labels: np.ndarray) -> float:
    from nlu_bert.confidence.calibration import expected_calibration_error

    return expected_calibration_error(probabilities.max(-1), probabilities.argmax(-1) == labels)


def measure(component: Any, test: Sequence[Any], oos: Dict[str, List[str]], gpt2_threshold: float) -> Dict[str, Any]:
    from nlu_bert.confidence.calibration import expected_calibration_error, reliability_bins
    from nlu_bert.confidence.fitting import consulted_shares

    unknown = sum(m.get("intent") not in component.labels for m in test)  # SMP2019: 3 test texts of 3 intents
    test = [m for m in test if m.get("intent") in component.labels]
    texts = [m.get("text").strip() for m in test]
    labels = np.array([component.labels.index(m.get("intent")) for m in test])
    logits = component.served.logits(texts)
    plain = softmax(logits, axis=-1)
    served = component.confidence(logits, texts)
    right = served.probabilities.argmax(-1) == labels  # the served intent (a factor of 0 keeps the order)
    result: Dict[str, Any] = {
        "test_examples": len(texts),
        "test_examples_of_intents_not_trained": unknown,
        "accuracy": round(float(right.mean()), 4),
        "accuracy_before": round(float((plain.argmax(-1) == labels).mean()), 4),
        "temperature": round(component.confidence.temperature, 3),
        "ece_before": round(ece(plain, labels), 4),
        "ece_after_temperature": round(ece(served.probabilities, labels), 4),
        "ece_after": round(ece(served.scaled, labels), 4),
        "reliability_before": reliability_bins(plain.max(-1), plain.argmax(-1) == labels),
        "reliability_after": reliability_bins(served.scaled.max(-1), right),
    }
    for name, confidences in (("before", plain), ("after", served.scaled)):
        for where, threshold in (("fallback_classifier", FALLBACK_THRESHOLD), ("gpt2", gpt2_threshold)):
            hit = consulted(confidences, threshold)
            result[f"{where}_{name}"] = {
                "threshold": threshold,
                "errors": int((~right).sum()),
                **consulted_shares(hit, right),
            }
    result["gpt2_sweep_after"] = {
        f"{threshold:.2f}": consulted_shares(consulted(served.scaled, threshold), right) for threshold in SWEEP
    }
    oos_texts = [t for ts in oos.values() for t in ts]
    plain_oos, served_oos = softmax(component.served.logits(oos_texts), axis=-1), component.predict_proba(oos_texts)
    wrong = np.zeros(len(oos_texts), dtype=bool)
    result["ece_with_oos_before"] = round(
        expected_calibration_error(np.r_[plain.max(-1), plain_oos.max(-1)], np.r_[plain.argmax(-1) == labels, wrong]), 4
    )
    result["ece_with_oos_after"] = round(
        expected_calibration_error(np.r_[served.scaled.max(-1), served_oos.max(-1)], np.r_[right, wrong]), 4
    )
    sets = {**oos, "no_content": NO_CONTENT, "keyboard_mash": KEYBOARD_MASH}
    for name, probs_of in (("before", lambda ts: softmax(component.served.logits(ts), axis=-1)),
                           ("after", component.predict_proba)):  # fmt: skip
        result[f"oos_below_0.3_{name}"] = {
            source: round(float((probs_of(ts).max(-1) < FALLBACK_THRESHOLD).mean()), 4) for source, ts in sets.items()
        }
        below = np.concatenate([probs_of(ts).max(-1) < FALLBACK_THRESHOLD for ts in oos.values()])
        result[f"oos_below_0.3_{name}"]["all_out_of_scope"] = round(float(below.mean()), 4)
    return result


def reliability_plot(results: Dict[str, Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
        for key, label, color in (
            ("reliability_before", "softmax", "tab:red"),
            ("reliability_after", "served", "tab:blue"),
        ):
            bins = [b for b in r[key] if b["count"]]
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color=color,
                    label=f"{label} (ECE {r['ece_before' if key == 'reliability_before' else 'ece_after']:.3f})")  # fmt: skip
        ax.set_title(f"{name} test split (T = {r['temperature']})")
        ax.set_xlabel("confidence (bin mean)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: Dict[str, Dict[str, Any]], gpt2_threshold: float) -> str:
    """One row per set and confidences; the GPT-2 column of the served ones at ``gpt2_threshold`` (from the sweep)."""

    def pct(x: Optional[float]) -> str:
        return "–" if x is None else f"{100 * x:.0f}%"

    rows = []
    for name, r in results.items():
        for when in ("before", "after"):
            fc, g = r[f"fallback_classifier_{when}"], r[f"gpt2_{when}"]
            if when == "after" and f"{gpt2_threshold:.2f}" in r.get("gpt2_sweep_after", {}):
                g = {"threshold": gpt2_threshold, **r["gpt2_sweep_after"][f"{gpt2_threshold:.2f}"]}
            oos = r[f"oos_below_0.3_{when}"]
            rows.append(
                [
                    name,
                    when,
                    r["accuracy"] if when == "after" else r["accuracy_before"],
                    r["ece_before"] if when == "before" else r["ece_after"],
                    r[f"ece_with_oos_{when}"],
                    pct(oos["all_out_of_scope"]),
                    pct(oos["no_content"]),
                    pct(oos["keyboard_mash"]),
                    f"{pct(fc['errors_consulted'])} / {pct(fc['correct_consulted'])}",
                    f"{pct(g['errors_consulted'])} / {pct(g['correct_consulted'])} (at {g['threshold']})",
                ]
            )
    header = ["dataset", "confidences", "accuracy", "ECE in-scope", "ECE with OOS", "OOS < 0.3", "emoji/punct < 0.3", "mash < 0.3",
              "FallbackClassifier 0.3: errors / right consulted", "GPT-2 fallback: errors / right consulted"]  # fmt: skip
    return markdown_table(header, rows)


def sweep_table(results: Dict[str, Dict[str, Any]]) -> str:
    """Errors / right answers the GPT-2 fallback acts on, by its threshold, for the rows that have the sweep."""
    rows = [[name] + [f"{100 * (s['errors_consulted'] or 0):.0f}% / {100 * (s['correct_consulted'] or 0):.0f}%"
                      for s in r["gpt2_sweep_after"].values()]
            for name, r in results.items() if "gpt2_sweep_after" in r]  # fmt: skip
    if not rows:
        return ""
    header = ["dataset"] + [f"threshold {t:.2f}" for t in SWEEP]
    return (
        "\n## GPT-2 fallback: errors / right answers consulted, by threshold\n\n" + markdown_table(header, rows) + "\n"
    )


def baselines_table(results: Dict[str, Dict[str, Any]]) -> str:
    """Intent accuracy of the served BERT and of the baselines on the same split, for the rows that have them."""
    rows = [[name, r["accuracy"], r["baselines"]["diet"]["accuracy"], r["baselines"]["logreg"]["accuracy"]]
            for name, r in results.items() if "baselines" in r]  # fmt: skip
    if not rows:
        return ""
    header = ["dataset", "BertIntentClassifier (served)", "DIETClassifier", "LogisticRegressionClassifier"]
    return "\n## Intent accuracy on the same split\n\n" + markdown_table(header, rows) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["smp2017", "smp2019"],
        help=f"any of {', '.join(sorted(SPEC))}; NAME:IxK = a small bot: I random intents with K examples each "
        "(the test texts of the other intents join its out-of-scope set); NAME:IxK:S cuts it with seed S (default 0)",
    )
    parser.add_argument("--baselines", action="store_true", help="also train DIET and logreg on the same split")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--config", default="{}", help="JSON merged into the component's config")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (earlier rows of other sets kept)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "calibration.png")
    parser.add_argument(
        "--render", action="store_true", help="train nothing: write the markdown and plot again from the stored JSON"
    )
    args = parser.parse_args(argv)
    if args.render:
        return write(args.out, {}, args.plot)
    quiet_environment()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nlu_bert").setLevel(logging.INFO)
    from nlu_bert.confidence.fitting import GPT2_THRESHOLD

    config = {"model": "scratch", "num_threads": args.threads, **json.loads(args.config)}
    results: Dict[str, Dict[str, Any]] = {}
    for spec in args.datasets:
        name, _, size = spec.partition(":")
        size, _, seed = size.partition(":")
        if name not in SPEC:
            parser.error(f"unknown dataset {name!r} (choose from {', '.join(sorted(SPEC))})")
        train_file, test_file = prepare_dataset(name, WORK)
        oos = out_of_scope_sets(name, lambda source: prepare_dataset(source, WORK)[1])
        train_examples, test = examples(train_file), examples(test_file)
        if size:
            intents, per_intent = (int(x) for x in size.split("x"))
            cut = small_bot(train_examples, test, intents, per_intent, int(seed or 0))
            train_examples, test, oos["other_intents"] = cut
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="nlu-bert-confidence-") as folder:
            component = train(train_examples, config, Path(folder))
            report = component_report(component)
            r = measure(component, test, oos, GPT2_THRESHOLD)
            del component
            if args.baselines:
                r["baselines"] = baselines(train_examples, test, Path(folder))
        r.update(
            train_examples=len(train_examples),
            train_seconds=round(time.perf_counter() - started, 1),
            train_report=report,
            oos_sizes={k: len(v) for k, v in oos.items()},
            command=f"nice -n 10 .venv/bin/python -m benchmarks.confidence --datasets {spec}"
            + (f" --config '{args.config}'" if args.config != "{}" else "")
            + (" --baselines" if args.baselines else ""),
        )
        results[spec] = r
        log(f"{spec}: " + json.dumps({k: v for k, v in r.items() if not k.startswith(("reliability", "train_report"))}, ensure_ascii=False))  # fmt: skip
    write(args.out, results, args.plot)


def write(out: Path, results: Dict[str, Dict[str, Any]], plot: Path) -> None:
    """The new ``results`` merged into the stored rows (their GPT-2 column at today's default threshold), written as
    JSON, markdown and the reliability plot of the full sets."""
    from nlu_bert.confidence.fitting import GPT2_THRESHOLD

    stored = out / "confidence.json"  # read at the end: a run of other sets may have written it meanwhile
    earlier = json.loads(stored.read_text())["datasets"] if stored.exists() else {}
    for spec, r in results.items():  # the baselines of an earlier run on the same split stay with the row
        if "baselines" not in r and "baselines" in earlier.get(spec, {}):
            r["baselines"] = earlier[spec]["baselines"]
    results = {**earlier, **results}
    results = dict(sorted(results.items(), key=lambda kv: (":" in kv[0], kv[0])))
    commands = "\n".join(f"- `{r['command']}`" for r in results.values())
    markdown = f"# Confidence benchmark\n\n{commands}\n\n{table(results, GPT2_THRESHOLD)}\n{sweep_table(results)}{baselines_table(results)}"
    json_path, md_path = write_results("confidence", {"datasets": results}, markdown, out)
    full_sets = {k: v for k, v in results.items() if ":" not in k}
    if full_sets:
        reliability_plot(full_sets, plot)
    print(markdown)
    log(f"wrote {json_path}, {md_path}, {plot}")


def small_bot(
    train: List[Any], test: List[Any], intents: int, per_intent: int, seed: int = 0
) -> Tuple[List[Any], List[Any], List[str]]:
    """A small bot cut from a public set: ``intents`` random intents, ``per_intent`` random examples of each; the
    test texts of the other intents are out of scope for it (``seed``: the same cut each run)."""
    rng = random.Random(seed)
    labels = sorted({m.get("intent") for m in train})
    rng.shuffle(labels)
    keep = set(labels[:intents])
    by_intent: Dict[str, List[Any]] = {}
    for m in train:
        if m.get("intent") in keep:
            by_intent.setdefault(m.get("intent"), []).append(m)
    small = []
    for intent in sorted(by_intent):
        rng.shuffle(by_intent[intent])
        small += by_intent[intent][:per_intent]
    others = [m.get("text").strip() for m in test if m.get("intent") not in keep]
    return small, [m for m in test if m.get("intent") in keep], others


def baselines(train_examples: List[Any], test: List[Any], folder: Path) -> Dict[str, Any]:
    """Test accuracy of Rasa's DIETClassifier and LogisticRegressionClassifier trained on the same split (the
    pipelines of benchmarks/accuracy.py)."""
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from benchmarks import accuracy

    train_file, test_file = folder / "baseline-train.yml", folder / "baseline-test.yml"
    TrainingData(training_examples=train_examples).persist_nlu(str(train_file))
    TrainingData(training_examples=test).persist_nlu(str(test_file))
    pipelines = accuracy.pipelines("scratch", "scratch", quick=False)
    result = {}
    for name in ("diet", "logreg"):
        model, seconds = accuracy.train(pipelines[name], train_file, folder, name)
        rows = accuracy.evaluate(model, test_file)
        right = sum(r["gold"] == r["pred"] for r in rows)
        result[name] = {"accuracy": round(right / len(rows), 4), "train_seconds": round(seconds, 1)}
    return result


def component_report(component: Any) -> Dict[str, Any]:
    from nlu_bert import archive

    with component._model_storage.read_from(component._resource) as folder:
        report = archive.read_report(Path(folder)).get("confidence", {})
    return {k: v for k, v in report.items() if not k.startswith("reliability")}


if __name__ == "__main__":
    main()
