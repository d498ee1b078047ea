"""Entity scores by exact span: an entity counts as found only with the same start, end and type (CoNLL / seqeval
style), micro-averaged over all entities and per entity type.

Character offsets, not tokens: the score does not depend on a tokenizer, so pipelines with and without Jieba are
compared on the same footing (Rasa's ``rasa test nlu`` scores tokens of the pipeline's tokenizer instead).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

Key = Tuple[Any, ...]


def span_key(entity: Mapping[str, Any], with_role_group: bool = False) -> Key:
    key: Key = (int(entity["start"]), int(entity["end"]), str(entity["entity"]))
    if with_role_group:
        key += (entity.get("role"), entity.get("group"))
    return key


def _prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(
    gold: Sequence[Iterable[Mapping[str, Any]]],
    predicted: Sequence[Iterable[Mapping[str, Any]]],
    with_role_group: bool = False,
    extractor: Optional[str] = None,
) -> Dict[str, Any]:
    """Micro precision / recall / F1 and the same per entity type, over examples aligned by index.

    ``extractor``: only predictions of that extractor count (others in the pipeline are ignored). Duplicate
    predictions of one span count once."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} examples but predicted has {len(predicted)}")
    tp: Counter = Counter()
    n_gold: Counter = Counter()
    n_pred: Counter = Counter()
    for gold_entities, predicted_entities in zip(gold, predicted):
        g = {span_key(e, with_role_group) for e in gold_entities}
        p = {
            span_key(e, with_role_group)
            for e in predicted_entities
            if extractor is None or e.get("extractor") == extractor
        }
        for key in g:
            n_gold[key[2]] += 1
        for key in p:
            n_pred[key[2]] += 1
        for key in g & p:
            tp[key[2]] += 1
    per_entity = {
        name: {**_prf(tp[name], n_pred[name], n_gold[name]), "support": n_gold[name]}
        for name in sorted(set(n_gold) | set(n_pred))
    }
    micro = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    return {**micro, "support": sum(n_gold.values()), "predicted": sum(n_pred.values()), "per_entity": per_entity}


def report_lines(scores: Mapping[str, Any], limit: int = 0) -> List[str]:
    """A small text table (per entity, most frequent first; ``limit`` rows, 0 = all)."""
    rows = sorted(scores["per_entity"].items(), key=lambda kv: (-kv[1]["support"], kv[0]))
    if limit:
        rows = rows[:limit]
    lines = [f"{'entity':<24} {'P':>6} {'R':>6} {'F1':>6} {'n':>6}"]
    for name, s in rows:
        lines.append(f"{name[:24]:<24} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} {s['support']:6d}")
    lines.append(
        f"{'micro':<24} {scores['precision']:6.3f} {scores['recall']:6.3f} {scores['f1']:6.3f} {scores['support']:6d}"
    )
    return lines
