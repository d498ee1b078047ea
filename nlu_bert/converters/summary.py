"""The summary printed after a conversion, and the same facts as a JSON report."""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

from nlu_bert.converters.base import SPLITS, Dataset

SHOWN = 10  # examples listed per section; the JSON report (--report) has all of them


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]


def _counts(title: str, counts: Counter) -> List[str]:
    if not sum(counts.values()):
        return [f"{title}: none"]
    return [f"{title}: {sum(counts.values())}"] + [f"  {n:>7}  {why}" for why, n in counts.most_common() if n]


def per_intent(dataset: Dataset) -> Dict[str, Dict[str, int]]:
    table: Dict[str, Dict[str, int]] = {}
    for split, examples in dataset.splits.items():
        for example in examples:
            table.setdefault(example.intent, {s: 0 for s in dataset.splits})[split] += 1
    return dict(sorted(table.items(), key=lambda item: (-sum(item[1].values()), item[0])))


def format_summary(dataset: Dataset, show_intents: int = 30) -> str:
    report = dataset.report
    splits = [s for s in SPLITS if s in dataset.splits]
    total = sum(len(found) for found in dataset.splits.values())
    lines = [f"nlu-bert convert {report.format}: {report.rows_read} rows read, {total} examples written", ""]
    rows = [["split", "examples", "intents", "entities", "synonym entities"]]
    for split in splits:
        found = dataset.splits[split]
        entities = [(e, x) for e in found for x in e.entities]
        rows.append(
            [
                split,
                str(len(found)),
                str(len({e.intent for e in found})),
                str(len(entities)),
                str(sum(1 for e, x in entities if e.text[x.start : x.end] != x.value)),
            ]
        )
    lines += _table(rows) + [""]
    intents = per_intent(dataset)
    rows = [["intent"] + splits] + [
        [name] + [str(counts[s]) for s in splits] for name, counts in list(intents.items())[:show_intents]
    ]
    lines += [f"examples per intent ({len(intents)} intents):"] + _table(rows)
    if len(intents) > show_intents:
        more = len(intents) - show_intents
        lines.append(f"  … {more} more intent{'s' if more > 1 else ''} (all in --report)")
    lines += [""] + _counts("dropped rows", report.dropped) + _counts("dropped entities", report.dropped_entities)
    for kind, renamed in (("intents", report.renamed_intents), ("entities", report.renamed_entities)):
        if renamed:
            shown = ", ".join(f"{raw!r} → {new!r}" for raw, new in list(renamed.items())[:SHOWN])
            lines.append(
                f"renamed {kind} ({len(renamed)}, Rasa-safe names): {shown}" + (" …" if len(renamed) > SHOWN else "")
            )
    if report.conflicts:
        lines.append(
            f"texts under more than one intent: {len(report.conflicts)}"
            + (
                " (dropped: --drop-conflicts)"
                if report.dropped.get("text under more than one intent (--drop-conflicts)")
                else ""
            )
        )
        lines += [f"  {text!r}: {', '.join(found)}" for text, found in list(report.conflicts.items())[:SHOWN]]
    else:
        lines.append("texts under more than one intent: none")
    if "test" in dataset.splits and "train" in dataset.splits:
        lines.append(f"test texts also in train: {report.train_test_overlap}")
    if dataset.lookups:
        lines.append("lookup tables: " + ", ".join(f"{n} ({len(v)})" for n, v in sorted(dataset.lookups.items())))
    if dataset.synonyms:
        lines.append(
            f"synonyms: {len(dataset.synonyms)} surface forms → {len(set(dataset.synonyms.values()))} canonical values"
        )
    lines += [f"note: {note}" for note in report.notes]
    if report.files:
        lines += ["", "files written:"] + [
            f"  {path}  ({split}, {len(dataset.splits.get(split, []))} examples)"
            if split in dataset.splits
            else f"  {path}  ({split})"
            for split, path in report.files.items()
        ]
    if report.verified:
        lines.append("checked with Rasa's loader: example counts, texts, intents and entity spans match")
    return "\n".join(lines)


def report_dict(dataset: Dataset) -> Dict[str, Any]:
    report = dataset.report
    return {
        "format": report.format,
        "inputs": report.inputs,
        "rows_read": report.rows_read,
        "splits": {s: len(found) for s, found in dataset.splits.items()},
        "entities": {s: sum(len(e.entities) for e in found) for s, found in dataset.splits.items()},
        "per_intent": per_intent(dataset),
        "dropped": dict(report.dropped),
        "dropped_entities": dict(report.dropped_entities),
        "renamed_intents": report.renamed_intents,
        "renamed_entities": report.renamed_entities,
        "conflicts": report.conflicts,
        "train_test_overlap": report.train_test_overlap,
        "lookups": {name: len(entries) for name, entries in dataset.lookups.items()},
        "synonyms": dataset.synonyms,
        "notes": report.notes,
        "files": report.files,
        "verified": report.verified,
    }
