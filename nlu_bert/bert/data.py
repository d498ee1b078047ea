"""What BERT's training data looks like: a summary for the log and the training report, the rows to keep, and
the warnings a bot author should see. Pure Python (no torch)."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import rasa.shared.utils.io

logger = logging.getLogger(__name__)


@dataclass
class DataSummary:
    intents: int
    examples: int
    examples_per_intent: Dict[str, int]
    duplicates: int
    conflicting_texts: Dict[str, List[str]]
    truncated: int
    max_length: int
    longest_tokens: int
    singleton_intents: List[str] = field(default_factory=list)

    def lines(self) -> List[str]:
        counts = sorted(self.examples_per_intent.values())
        out = [
            f"{self.intents} intents, {self.examples} examples "
            f"(per intent: min {counts[0]}, median {counts[len(counts) // 2]}, max {counts[-1]})",
            f"{self.duplicates} duplicate examples (same text, same intent) were dropped",
            f"{len(self.conflicting_texts)} texts appear under more than one intent",
            f"{self.truncated} texts are longer than max_length={self.max_length} tokens and will be truncated "
            f"(longest: {self.longest_tokens} tokens)",
        ]
        return out

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def summarize(
    texts: Sequence[str], labels: Sequence[str], token_lengths: Sequence[int], max_length: int
) -> Tuple[DataSummary, List[int]]:
    """Summary of the data and the indices to keep (exact duplicates dropped, first one kept)."""
    seen: Dict[Tuple[str, str], int] = {}
    by_text: Dict[str, set] = defaultdict(set)
    keep: List[int] = []
    for i, (t, y) in enumerate(zip(texts, labels)):
        key = (t.strip(), y)
        by_text[t.strip()].add(y)
        if key in seen:
            continue
        seen[key] = i
        keep.append(i)
    counts = Counter(labels[i] for i in keep)
    conflicts = {t: sorted(ys) for t, ys in by_text.items() if len(ys) > 1}
    summary = DataSummary(
        intents=len(counts),
        examples=len(keep),
        examples_per_intent=dict(sorted(counts.items())),
        duplicates=len(texts) - len(keep),
        conflicting_texts=conflicts,
        truncated=sum(1 for n in token_lengths if n > max_length),
        max_length=max_length,
        longest_tokens=max(token_lengths) if token_lengths else 0,
        singleton_intents=sorted(y for y, n in counts.items() if n == 1),
    )
    return summary, keep


def warn_about_data(summary: DataSummary, component: str) -> None:
    """Log the summary; warn (with the fix) about conflicting labels, truncation, odd intent names, singletons."""
    for line in summary.lines():
        logger.info(f"{component}: data: {line}")
    if summary.conflicting_texts:
        shown = "; ".join(f"'{t}' → {', '.join(ys)}" for t, ys in list(summary.conflicting_texts.items())[:5])
        rasa.shared.utils.io.raise_warning(
            f"{component}: {len(summary.conflicting_texts)} texts appear under more than one intent "
            f"(e.g. {shown}). The model cannot tell these apart; keep each text under one intent."
        )
    if summary.truncated:
        rasa.shared.utils.io.raise_warning(
            f"{component}: {summary.truncated} training texts are longer than `max_length` "
            f"({summary.max_length} tokens; longest {summary.longest_tokens}) and were truncated. "
            "Raise `max_length` if the end of long texts matters."
        )
    odd = [label for label in summary.examples_per_intent if any(c.isspace() or c in "/{}[]()" for c in label)]
    if odd:
        rasa.shared.utils.io.raise_warning(
            f"{component}: intent names with spaces, slashes or brackets ({', '.join(repr(o) for o in odd[:5])}) "
            "work for classification but break Rasa's `/intent` message syntax and story files. "
            "Rename them, e.g. 'check order' → 'check_order'."
        )
    if summary.singleton_intents:
        rasa.shared.utils.io.raise_warning(
            f"{component}: {len(summary.singleton_intents)} intents have a single example "
            f"({', '.join(summary.singleton_intents[:5])}); they cannot be validated and will be "
            "recognised poorly. Add a few more examples to each."
        )
