"""An archive's intent model as ``rasa run`` serves it: texts -> logits (and entities, for a model with an entity
head), whichever backend computes them.

:func:`load` reads what :func:`nlu_bert.bert.export.write_model` wrote for a backend; the onnxruntime and native
backends import neither torch nor transformers (the tokenizer runs from ``tokenizer.json`` with the ``tokenizers``
library, the n-gram hashing is numpy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from rasa.shared.exceptions import RasaException

from nlu_bert import archive, extras
from nlu_bert.bert import ngrams
from nlu_bert.bert.entities import EntityDecoder, EntitySpec
from nlu_bert.bert.predictors import Predictor, load_predictor
from nlu_bert.bert.tagging import trim_offsets
from nlu_bert.tokenizer_files import TextEncoder

Encoder = Callable[[List[str]], Tuple[np.ndarray, np.ndarray]]


class ServedModel:
    """``logits(texts)``: float64 ``[len(texts), len(labels)]``, columns in the order of ``labels``;
    ``predict(texts)``: the logits and, for a model with an entity head, each text's Rasa entity dicts."""

    def __init__(
        self, predictor: Predictor, encoder: Encoder, meta: Dict[str, Any], batch_size: int, extractor: str = ""
    ) -> None:
        self.predictor = predictor
        self.encoder = encoder  # texts -> (input_ids, attention_mask)
        self.meta = meta
        self.labels: List[str] = list(meta["labels"])
        self.batch_size = int(batch_size)
        self.entities: Optional[EntityDecoder] = None
        self.extractor = extractor
        if meta.get("entities"):
            if not isinstance(encoder, TextEncoder):
                raise ValueError("a model with an entity head needs its tokenizer saved as tokenizer.json")
            self.entities = EntityDecoder(EntitySpec.from_meta(meta["entities"]))

    def logits(self, texts: List[str]) -> np.ndarray:
        """Batched by length (similar lengths pad little); non-empty texts only."""
        return self.predict(texts)[0]

    def predict(self, texts: List[str]) -> Tuple[np.ndarray, Optional[List[List[Dict[str, Any]]]]]:
        """(logits, entities per text or None without an entity head): one forward pass per batch for both."""
        # cheap guard against huge inputs: the tokenizer never needs more than this many characters
        texts = [t[: self.meta["max_length"] * 8] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        found: List[List[Dict[str, Any]]] = [[] for _ in texts]
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            chunk = [texts[i] for i in idx]
            ngram_ids = ngrams.ids_for(chunk, self.meta) if self.meta["ngram_buckets"] else None
            if self.entities is None:
                input_ids, attention_mask = self.encoder(chunk)
                out[idx] = np.asarray(self.predictor(input_ids, attention_mask, ngram_ids), dtype=np.float64)
                continue
            input_ids, attention_mask, offsets = self.encoder.encode(chunk)  # type: ignore[attr-defined]
            offsets = [trim_offsets(text, row) for text, row in zip(chunk, offsets)]
            token_ngram_ids = self.entities.spec.token_ngram_ids(chunk, offsets, input_ids.shape[1])
            logits, tag_scores = self.predictor.predict(input_ids, attention_mask, ngram_ids, token_ngram_ids)
            out[idx] = np.asarray(logits, dtype=np.float64)
            for i, row in zip(idx, self.entities.decode(chunk, offsets, tag_scores, self.extractor)):
                found[i] = row
        return out, (found if self.entities is not None else None)


def load(
    folder: Path,
    meta: Dict[str, Any],
    backend: str,
    precision: str,
    inference: Dict[str, Any],
    device: Callable[[], Any],
    batch_size: int,
    extractor: str = "",
) -> ServedModel:
    """The served model of an archive folder whose files :func:`nlu_bert.archive.bert_files` were checked.
    ``inference`` is the component's block (threads, spinning); ``device`` is called for torch only. Damaged files
    are a :class:`~nlu_bert.archive.ModelArchiveError`."""
    labels = list(meta.get("labels") or [])
    threads, spinning = inference["threads"], inference["spinning"]
    try:
        if backend == "onnxruntime":
            predictor = load_predictor(folder, backend, precision, threads, allow_spinning=spinning)
            outputs = predictor.session.get_outputs()[0].shape[-1]  # type: ignore[attr-defined]
        elif backend == "native":  # CPU only: resolving `device` would import torch
            predictor = load_predictor(folder, backend, precision, threads, allow_spinning=spinning)
            outputs = predictor.num_labels
        else:
            extras.require_train(archive.BERT, "serving with `inference.backend: torch`")
            from nlu_bert.bert.model import load_intent_model

            model = load_intent_model(folder, meta)
            outputs = model.classifier.out_features
            predictor = load_predictor(folder, backend, precision, threads, model=model, device=device())
        encoder = text_encoder(folder / archive.TOKENIZER_DIR, int(meta["max_length"]))
    except RasaException:  # ModelArchiveError, or a device that is not there: their own messages
        raise
    except Exception as e:  # noqa: BLE001 - any damage to these files gets the same message
        raise archive.damaged(archive.BERT, folder, f"{type(e).__name__}: {e}") from None
    if outputs != len(labels):
        problem = f"the weights have {outputs} outputs but {archive.META_FILE} lists {len(labels)} intents"
        raise archive.damaged(archive.BERT, folder, problem)
    if bool(meta.get("entities")) != predictor.has_entities:
        problem = f"{archive.META_FILE} and the model disagree on whether it has an entity head"
        raise archive.damaged(archive.BERT, folder, problem)
    try:
        return ServedModel(predictor, encoder, meta, batch_size, extractor)
    except (KeyError, ValueError) as e:
        raise archive.damaged(archive.BERT, folder, f"the entity head: {type(e).__name__}: {e}") from None


def text_encoder(folder: Path, max_length: int) -> Encoder:
    """:class:`~nlu_bert.tokenizer_files.TextEncoder` (the ``tokenizers`` library only) when the tokenizer was saved
    as tokenizer.json; a transformers tokenizer otherwise (slow tokenizers)."""
    if (folder / "tokenizer.json").is_file():
        return TextEncoder(folder, max_length=max_length)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    def encode(texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

    return encode
