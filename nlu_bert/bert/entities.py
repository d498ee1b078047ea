"""From tag scores to Rasa entity dicts, the same for every backend (numpy only, no torch).

The archive's ``meta.json`` holds an ``entities`` block (:meth:`EntitySpec.to_meta`): the tag set, the tagger
(``crf`` or ``softmax``), a CRF's learned transition / start / end scores and the token n-gram settings: what
decoding needs, the same for every backend (the weights of the head itself go with the backend's model file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nlu_bert.bert import decoding
from nlu_bert.bert.tagging import Problem, Span, TagSet, usable_spans
from nlu_bert.bert.token_features import DEFAULT_TEMPLATES, Template, batch_token_ngram_ids

Offsets = Sequence[Tuple[int, int]]
CRF_SCORES = ("transitions", "start", "end")


@dataclass
class EntitySpec:
    """What the entity head of a trained model is (everything but its weights)."""

    tags: TagSet
    tagger: str = "crf"
    ngram_buckets: int = 0
    ngram_dim: int = 64
    templates: Tuple[Template, ...] = field(default=DEFAULT_TEMPLATES)
    crf: Optional[Dict[str, np.ndarray]] = None  # a trained CRF's "transitions", "start", "end" scores

    def to_meta(self) -> Dict[str, Any]:
        meta = {
            **self.tags.to_dict(),
            "tagger": self.tagger,
            "ngram_buckets": self.ngram_buckets,
            "ngram_dim": self.ngram_dim,
            "templates": [list(t) for t in self.templates],
        }
        if self.crf is not None:
            meta["crf"] = {k: np.asarray(v, dtype=np.float32).tolist() for k, v in self.crf.items()}
        return meta

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "EntitySpec":
        crf = meta.get("crf")
        return cls(
            tags=TagSet.from_dict(meta),
            tagger=str(meta["tagger"]),
            ngram_buckets=int(meta["ngram_buckets"]),
            ngram_dim=int(meta["ngram_dim"]),
            templates=tuple(tuple(int(x) for x in t) for t in meta["templates"]),
            crf={k: np.asarray(crf[k], dtype=np.float32) for k in CRF_SCORES} if crf else None,
        )

    def token_ngram_ids(self, texts: Sequence[str], offsets: Sequence[Offsets], width: int) -> Optional[np.ndarray]:
        """``[batch, width, templates]`` ids for the head's n-gram table, or None when it has none."""
        if not self.ngram_buckets:
            return None
        return batch_token_ngram_ids(texts, offsets, width, self.ngram_buckets, self.templates)


@dataclass
class TrainingTags:
    """The entity annotations of the training examples as tag ids over their tokens."""

    tags: TagSet
    rows: List[List[int]]  # per example, one tag id per token of its offsets
    problems: List[str]  # one line per annotation that could not be learnt as given, naming the example
    entities: int  # annotations learnt

    def tags_batch(self, idx: Sequence[int], positions: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Gold tag ids ``[B, N]`` of examples ``idx`` at ``positions`` (0 where ``mask`` is false)."""
        out = np.zeros(positions.shape, dtype=np.int64)
        for b, i in enumerate(idx):
            row = self.rows[i]
            for n in np.flatnonzero(mask[b]):
                out[b, n] = row[positions[b, n]]
        return out


def training_tags(
    texts: Sequence[str], annotations: Sequence[Sequence[Mapping[str, Any]]], offsets: Sequence[Offsets], bilou: bool
) -> TrainingTags:
    """Tags for every example; bad, overlapping, misaligned or cut-off annotations are reported (and skipped, or
    widened to whole tokens), never an error."""
    spans: List[List[Span]] = []
    problems: List[str] = []
    for text, entities in zip(texts, annotations):
        kept, bad = usable_spans(text, entities)
        spans.append(kept)
        problems.extend(p.describe() for p in bad)
    tags = TagSet.from_spans([s for row in spans for s in row], bilou=bilou)
    rows: List[List[int]] = []
    learnt = 0
    for text, row_spans, row_offsets in zip(texts, spans, offsets):
        ids, unfit = tags.encode(row_spans, row_offsets)
        rows.append(ids)
        learnt += len(row_spans) - sum(1 for _, why in unfit if "left out" in why)
        problems.extend(
            Problem(
                text, {"entity": s.label.entity, "start": s.start, "end": s.end, "value": text[s.start : s.end]}, why
            ).describe()
            for s, why in unfit
        )
    return TrainingTags(tags, rows, problems, learnt)


def real_positions(offsets: Offsets) -> List[int]:
    """Indices of the tokens that cover text (special tokens and padding have empty offsets)."""
    return [i for i, (s, e) in enumerate(offsets) if e > s]


def positions_batch(offsets: Sequence[Offsets]) -> Tuple[np.ndarray, np.ndarray]:
    """Left-aligned indices of each row's real tokens ``[B, N]`` and their mask."""
    rows = [real_positions(o) for o in offsets]
    width = max([1] + [len(r) for r in rows])
    positions = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for b, r in enumerate(rows):
        positions[b, : len(r)] = r
        mask[b, : len(r)] = True
    return positions, mask


class EntityDecoder:
    """Tag scores ``[B, T, K]`` -> entity dicts per text, decoded under the BIO / BILOU constraints (with a CRF's
    learned scores where the head has one)."""

    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec
        self.tags = spec.tags
        constraints = decoding.allowed(spec.tags)
        if spec.tagger == "crf":
            crf = spec.crf
            if crf is None:
                raise ValueError("a CRF entity head needs its transition, start and end scores")
            k = len(spec.tags)
            if crf["transitions"].shape != (k, k) or crf["start"].shape != (k,) or crf["end"].shape != (k,):
                raise ValueError(f"the CRF scores do not fit {k} tags")
            constraints = decoding.combine(constraints, crf["transitions"], crf["start"], crf["end"])
        self.model = constraints
        self.rows = decoding.RowDecoder(constraints)

    def decode(
        self, texts: Sequence[str], offsets: Sequence[Offsets], tag_scores: np.ndarray, extractor: Optional[str] = None
    ) -> List[List[Dict[str, Any]]]:
        """Row by row (:class:`~nlu_bert.bert.decoding.RowDecoder`, the same paths as :func:`decoding.viterbi`):
        a request's single message pays for no padding, and one with no possible entity for no decoding."""
        tag_scores = np.asarray(tag_scores, dtype=np.float32)
        # tokens beyond what the model saw (its inputs were trimmed to the longest row) have no score
        width = tag_scores.shape[1]
        crf = self.spec.tagger != "softmax"
        out: List[List[Dict[str, Any]]] = []
        for b, text in enumerate(texts):
            row_offsets = list(offsets[b])[:width]
            keep = real_positions(row_offsets)
            if not keep:
                out.append([])
                continue
            scores = tag_scores[b, keep]
            if not crf:  # a token's confidence is its softmax probability of the tag on the best valid path
                scores = decoding.log_softmax(scores)
            path, confidences = self.rows.decode(scores, crf=crf)
            if confidences is None:  # all O
                out.append([])
                continue
            kept_offsets = [row_offsets[i] for i in keep]
            out.append(self.tags.entities(text, path.tolist(), kept_offsets, confidences.tolist(), extractor))
        return out


def numpy_tag_scores(
    hidden: np.ndarray,
    weights: Mapping[str, np.ndarray],
    token_ngram_ids: Optional[np.ndarray] = None,
    prefix: str = "entities.",
) -> np.ndarray:
    """:meth:`nlu_bert.bert.entity_head.EntityHead.forward` (eval mode) in numpy: ``hidden`` ``[B, T, H]`` and the head's tensors (``tagger.weight``,
    ``tagger.bias``, ``ngrams.weight`` under ``prefix``) -> ``[B, T, K]`` float32."""
    features = np.asarray(hidden, dtype=np.float32)
    table = weights.get(prefix + "ngrams.weight")
    if table is not None:
        if token_ngram_ids is None:
            raise ValueError("this entity head was trained with n-gram features; pass token_ngram_ids")
        bag = table[token_ngram_ids].astype(np.float32).sum(2)  # rows converted where the table is fp16
        features = np.concatenate([features, bag], axis=-1)
    w = np.asarray(weights[prefix + "tagger.weight"], dtype=np.float32)
    b = np.asarray(weights[prefix + "tagger.bias"], dtype=np.float32)
    # einsum, not `@`: numpy's BLAS threads would compete with the native kernel's (see nlu_bert.bert.native)
    return (np.einsum("bth,kh->btk", features, w) + b).astype(np.float32)


def crf_arrays(weights: Mapping[str, np.ndarray], prefix: str = "entities.") -> Optional[Dict[str, np.ndarray]]:
    """The CRF's learned transition / start / end scores among ``weights`` (None for a softmax tagger)."""
    names = {"transitions": prefix + "crf.transitions", "start": prefix + "crf.start", "end": prefix + "crf.end"}
    if names["transitions"] not in weights:
        return None
    return {k: np.asarray(weights[v], dtype=np.float32) for k, v in names.items()}
