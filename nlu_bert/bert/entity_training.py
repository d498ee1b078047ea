"""The entity side of joint training: the bot's annotations as tags over the tokenizer's tokens, the entity head's
batches and loss targets, and its validation score. Imported only at train time (it imports torch).

:func:`prepare` is called with the training texts once the backbone's tokenizer is known; it returns None when
there is nothing to learn (no annotations, ``entity_recognition: false``), and then the model and its cost are the
intent model's alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import rasa.shared.utils.io
import torch

from nlu_bert.bert import entity_metrics
from nlu_bert.bert.entities import (
    EntityDecoder,
    EntitySpec,
    TrainingTags,
    crf_arrays,
    positions_batch,
    training_tags,
)
from nlu_bert.bert.tagging import trim_offsets
from nlu_bert.bert.token_features import CONTEXT_TEMPLATES

logger = logging.getLogger(__name__)

# width of the token n-gram table of the entity head (its buckets are `ngram_buckets`)
TOKEN_NGRAM_DIM = 64
# annotation problems named in the training warning (the count covers all)
SHOWN_PROBLEMS = 5

Offsets = List[Tuple[int, int]]


@dataclass
class EntityTraining:
    spec: EntitySpec
    data: TrainingTags
    texts: List[str]
    offsets: List[Offsets]  # per text, the tokenizer's offsets (truncated to max_length)
    gold: List[List[Dict[str, Any]]]  # per text, the annotations as learnt (for the validation score)
    weight: float

    def targets(self, idx: Sequence[int]) -> Dict[str, torch.Tensor]:
        """The loss targets of examples ``idx``: real-token positions, their gold tags, the mask."""
        positions, mask = positions_batch([self.offsets[i] for i in idx])
        tags = self.data.tags_batch(idx, positions, mask)
        return {
            "positions": torch.from_numpy(positions),
            "tags": torch.from_numpy(tags),
            "mask": torch.from_numpy(mask),
        }

    def token_ngram_ids(self, idx: Sequence[int], width: int) -> Optional[torch.Tensor]:
        ids = self.spec.token_ngram_ids([self.texts[i] for i in idx], [self.offsets[i] for i in idx], width)
        return None if ids is None else torch.from_numpy(ids)

    def trained_spec(self, model: Any) -> EntitySpec:
        """The spec with the CRF scores ``model``'s head has learnt (what goes into meta.json)."""
        weights = {f"entities.{k}": v.detach().float().cpu().numpy() for k, v in model.entities.state_dict().items()}
        return replace(self.spec, crf=crf_arrays(weights))

    def decoder(self, model: Any) -> EntityDecoder:
        return EntityDecoder(self.trained_spec(model))

    def predicted(self, model: Any, idx: Sequence[int], tag_scores: Sequence[np.ndarray]) -> List[List[Dict[str, Any]]]:
        """Entities of examples ``idx`` from their tag scores (one array per example, as the batches gave them)."""
        decoder = self.decoder(model)
        return [
            decoder.decode([self.texts[i]], [self.offsets[i]], scores[None])[0] for i, scores in zip(idx, tag_scores)
        ]

    def scores(self, idx: Sequence[int], predicted: Sequence[List[Dict[str, Any]]]) -> Dict[str, Any]:
        return entity_metrics.entity_scores([self.gold[i] for i in idx], predicted)


def prepare(
    component: str,
    tokenizer: Any,
    texts: Sequence[str],
    annotations: Sequence[Sequence[Mapping[str, Any]]],
    config: Mapping[str, Any],
    use_ngrams: bool,
) -> Optional[EntityTraining]:
    """The entity training data of ``texts``, or None when the head would have nothing to learn. Annotations that
    cannot be learnt as given are skipped (or widened to whole tokens) with one warning that names the examples."""
    if not config["entity_recognition"] or not any(annotations):
        return None
    if not getattr(tokenizer, "is_fast", False):
        rasa.shared.utils.io.raise_warning(
            f"{component}: the tokenizer of {config['model']!r} is a slow (Python) tokenizer without character "
            "offsets, so no entities are learnt. Install `tokenizers` and `sentencepiece` (a fast tokenizer is "
            "then built from it), or set `entity_recognition: false` to silence this warning."
        )
        return None
    encoded = tokenizer(list(texts), truncation=True, max_length=config["max_length"], return_offsets_mapping=True)
    offsets = [trim_offsets(text, row) for text, row in zip(texts, encoded["offset_mapping"])]
    data = training_tags(texts, annotations, offsets, bilou=bool(config["BILOU_flag"]))
    if data.problems:
        shown = "\n  ".join(data.problems[:SHOWN_PROBLEMS])
        more = len(data.problems) - SHOWN_PROBLEMS
        rasa.shared.utils.io.raise_warning(
            f"{component}: {len(data.problems)} entity annotations could not be learnt as given"
            + (f" ({more} more not shown)" if more > 0 else "")
            + f":\n  {shown}\nFix them in your NLU data (start and end are character offsets; an entity covers "
            "non-empty text and overlaps no other)."
        )
    if not data.tags.labels:
        return None
    spec = EntitySpec(
        tags=data.tags,
        tagger=config["entity_tagger"],
        ngram_buckets=config["ngram_buckets"] if use_ngrams else 0,
        ngram_dim=TOKEN_NGRAM_DIM,
        templates=CONTEXT_TEMPLATES,
    )
    gold = [
        data.tags.entities(text, row, row_offsets)  # the annotations as the tags hold them
        for text, row, row_offsets in zip(texts, data.rows, offsets)
    ]
    logger.info(
        f"{component}: {data.entities} entity annotations, {len(data.tags.labels)} entity labels, "
        f"{len(data.tags)} {'BILOU' if data.tags.bilou else 'BIO'} tags, {spec.tagger} tagger"
    )
    return EntityTraining(spec, data, list(texts), offsets, gold, float(config["entity_loss_weight"]))


def span_agreement(
    reference: Sequence[Sequence[Mapping[str, Any]]], served: Sequence[Sequence[Mapping[str, Any]]]
) -> Dict[str, Any]:
    """Spans (start, end, entity) found by both / found by either, over texts aligned by index."""
    both = either = 0
    for a, b in zip(reference, served):
        ka = {entity_metrics.span_key(e, with_role_group=True) for e in a}
        kb = {entity_metrics.span_key(e, with_role_group=True) for e in b}
        both += len(ka & kb)
        either += len(ka | kb)
    return {"spans": either, "differ": either - both, "agreement": round(both / either, 6) if either else 1.0}


def report(scores: Mapping[str, Any]) -> Dict[str, Any]:
    """The validation entity scores for the training report (rounded)."""

    def rounded(s: Mapping[str, Any]) -> Dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items() if k != "per_entity"}

    return {**rounded(scores), "per_entity": {k: rounded(v) for k, v in scores["per_entity"].items()}}
