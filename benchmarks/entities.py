"""Entity scores of the accuracy benchmark (benchmarks/accuracy.py): exact-span micro-F1 (start, end and type must
match, character offsets, whatever tokenizer the pipeline has) and per-entity F1, beside intent accuracy; a table
and a chart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from nlu_bert.bert.entity_metrics import entity_scores

# pipelines of the benchmark that extract entities but classify no intent
ENTITY_ONLY = ("crf", "regex")


def pipelines() -> Dict[str, List[Dict[str, Any]]]:
    """Rasa's entity extractors for Chinese: CRFEntityExtractor after Jieba (it needs a featurizer in the pipeline:
    without one it skips every example and finds nothing), RegexEntityExtractor on the data's lookup tables and
    regexes (Chinese has no word boundaries to require)."""
    return {
        "crf": [{"name": "JiebaTokenizer"}, {"name": "LexicalSyntacticFeaturizer"}, {"name": "CRFEntityExtractor"}],
        "regex": [{"name": "RegexEntityExtractor", "use_word_boundaries": False}],
    }


def applies(name: str, train_file: Path) -> bool:
    """RegexEntityExtractor applies only where the training data has lookup tables or regexes."""
    if name != "regex":
        return True
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(train_file))
    return bool(data.lookup_tables or data.regex_features)


def metrics(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Entity scores of parsed test rows (``gold_entities``, ``entities``); {} when the test data has none."""
    gold = [r.get("gold_entities") or [] for r in rows]
    if not any(gold):
        return {}
    scores = entity_scores(gold, [r.get("entities") or [] for r in rows])
    return {
        "entity_f1": scores["f1"],
        "entity_precision": scores["precision"],
        "entity_recall": scores["recall"],
        "entity_support": scores["support"],
        "per_entity": {k: {"f1": v["f1"], "support": v["support"]} for k, v in scores["per_entity"].items()},
    }


def _intent(r: Dict[str, Any]) -> str:
    return "" if r["pipeline"] in ENTITY_ONLY else f"{r['accuracy']:.4f}"


def table(results: List[Dict[str, Any]], per_entity: int = 6) -> str:
    """Markdown: entity micro-F1 / P / R beside intent accuracy, then the F1 of each dataset's most frequent
    entities per pipeline ('' when no result has entity scores)."""
    rows = [r for r in results if "entity_f1" in r]
    if not rows:
        return ""
    lines = [
        "| dataset | pipeline | entity micro-F1 | precision | recall | test entities | intent accuracy | train examples |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['pipeline']} | {r['entity_f1']:.4f} | {r['entity_precision']:.4f} | "
            f"{r['entity_recall']:.4f} | {r['entity_support']} | {_intent(r)} | {r.get('train_examples', '')} |"
        )
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        these = [r for r in rows if r["dataset"] == dataset]
        support: Dict[str, int] = {}
        for r in these:
            for name, s in r["per_entity"].items():
                support[name] = max(support.get(name, 0), s["support"])
        top = sorted(support, key=lambda n: (-support[n], n))[:per_entity]
        lines += ["", f"| {dataset}: entity F1 | " + " | ".join(f"{n} ({support[n]})" for n in top) + " |"]
        lines.append("|---|" + "---|" * len(top))
        for r in these:
            cells = [f"{r['per_entity'].get(n, {}).get('f1', 0.0):.3f}" for n in top]
            lines.append(f"| {r['pipeline']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: one colour per pipeline in every panel (others take matplotlib's cycle)
COLORS = {
    "bert": "tab:blue",
    "bert+gpt2": "tab:purple",
    "diet": "tab:red",
    "logreg": "tab:orange",
    "crf": "tab:green",
    "regex": "tab:gray",
}


def bars(ax: Any, results: List[Dict[str, Any]], key: str, label: str) -> None:
    """Grouped bars of ``key`` by dataset and pipeline on the matplotlib axes ``ax``."""
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    names = list(dict.fromkeys(r["pipeline"] for r in results))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [next((r[key] for r in results if r["dataset"] == d and r["pipeline"] == name), 0) for d in datasets]
        ax.bar([x + i * width for x in range(len(datasets))], values, width, label=name, color=COLORS.get(name))
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(datasets))], datasets, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel(label)
    ax.legend(loc="lower right", fontsize="small")
