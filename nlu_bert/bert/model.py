"""The intent model: a BERT encoder, masked mean pooling, optional character n-gram features, a linear intent head,
and, when the bot's data annotates entities, a token-tagging head over the same encoder
(:class:`~nlu_bert.bert.entity_head.EntityHead`).

Imported only when a component trains or loads torch weights (it imports torch).

The n-gram branch is a fastText-style bag of hashed character 1..3-grams. It gives a model
trained from ``scratch`` (no pre-training) the sparse lexical signal that Rasa's DIET gets from
``CountVectorsFeaturizer``; with a pre-trained backbone it costs little and is optional.
The n-gram ids come from :mod:`nlu_bert.bert.ngrams` (torch-free, shared with the other backends).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from nlu_bert import archive, backbones, vocab
from nlu_bert.bert.entity_head import EntityHead, ngram_embedding


class IntentModel(nn.Module):
    """``logits = head(dropout([mean_pool(encoder(tokens)) ; mean(ngram_embeddings)]))``; with an entity head it returns
    ``(logits, tag_scores)``, the tag scores ``[batch, tokens, tags]`` from the same encoder pass."""

    def __init__(
        self,
        encoder: nn.Module,
        num_labels: int,
        ngram_buckets: int = 0,
        ngram_dim: int = 128,
        dropout: float = 0.1,
        entities: Optional[EntityHead] = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.entities = entities
        hidden = int(encoder.config.hidden_size)
        self.ngram_buckets = int(ngram_buckets)
        self.ngrams = ngram_embedding(self.ngram_buckets, ngram_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden + (ngram_dim if self.ngrams is not None else 0), num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        ngram_ids: Optional[torch.Tensor] = None,
        token_ngram_ids: Optional[torch.Tensor] = None,
    ) -> Any:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.classifier(self.dropout(self.features(hidden, attention_mask, ngram_ids)))
        if self.entities is None:
            return logits
        return logits, self.entities(hidden, token_ngram_ids)

    def features(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, ngram_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """What the intent head reads: the masked mean of ``hidden`` and, with n-grams, the mean n-gram embedding."""
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        features = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.ngrams is not None:
            if ngram_ids is None:
                raise ValueError("this model was trained with n-gram features; pass ngram_ids")
            emb = self.ngrams(ngram_ids)
            present = (ngram_ids > 0).unsqueeze(-1).to(emb.dtype)
            bag = (emb * present).sum(1) / present.sum(1).clamp(min=1.0)
            features = torch.cat([features, bag.to(features.dtype)], dim=-1)
        return features


def scratch_bert_config(
    vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, max_length: int
) -> "object":
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=hidden_size * 4,
        max_position_embeddings=max(max_length, 64),
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        type_vocab_size=2,
    )


@dataclass
class Backbone:
    tokenizer: Any
    encoder: Any
    mlm_model: Optional[Any] = None  # BertForMaskedLM around ``encoder`` (scratch with MLM pre-training)


def build_backbone(component: str, config: Mapping[str, Any], texts: List[str]) -> Backbone:
    """The tokenizer and encoder ``config["model"]`` names: ``scratch`` (a character vocabulary of ``texts``, random
    weights), a local folder or a hub id. Hub and folder failures raise ``ModelUnavailableError``."""
    from transformers import AutoModel, AutoTokenizer, BertForMaskedLM

    if backbones.is_scratch(config["model"]):
        with tempfile.TemporaryDirectory(prefix="nlu_bert_vocab_") as folder:
            tokenizer = vocab.make_tokenizer(vocab.build_char_vocab(texts, fold=True), Path(folder), char_level=True)
        bert_config = scratch_bert_config(
            vocab_size=len(tokenizer),
            hidden_size=config["scratch_hidden_size"],
            num_layers=config["scratch_num_layers"],
            num_heads=config["scratch_num_heads"],
            max_length=config["max_length"],
        )
        mlm = BertForMaskedLM(bert_config) if config["scratch_mlm_epochs"] > 0 else None
        encoder = mlm.bert if mlm is not None else AutoModel.from_config(bert_config, add_pooling_layer=False)
        return Backbone(tokenizer, encoder, mlm)
    hub = {"revision": config["revision"], "cache_dir": config["cache_dir"]}
    tokenizer = backbones.load_pretrained(component, config["model"], AutoTokenizer.from_pretrained, **hub)
    encoder = backbones.load_pretrained(component, config["model"], AutoModel.from_pretrained, **hub)
    drop_pooler(encoder)
    return Backbone(tokenizer, encoder)


def drop_pooler(encoder: Any) -> None:
    """The intent model mean-pools the last hidden states; BERT's pooler would be dead weight."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def load_intent_model(folder: Path, meta: Dict[str, Any]) -> IntentModel:
    """The fp32 model from an archive written for the torch backend (weights + encoder config)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    labels = list(meta.get("labels") or [])
    try:
        encoder_config = AutoConfig.from_pretrained(
            str(folder / archive.BERT_ENCODER_CONFIG_FILE), local_files_only=True
        )
        state = load_file(str(folder / archive.BERT_WEIGHTS_FILE))
    except Exception as e:  # noqa: BLE001 - any damage to these files gets the same message
        raise archive.damaged(archive.BERT, folder, f"{type(e).__name__}: {e}") from None
    head = state.get("classifier.weight")
    if head is None or head.shape[0] != len(labels):
        outputs = None if head is None else head.shape[0]
        problem = f"the weights have {outputs} outputs but {archive.META_FILE} lists {len(labels)} intents"
        raise archive.damaged(archive.BERT, folder, problem)
    encoder = AutoModel.from_config(encoder_config)
    drop_pooler(encoder)
    entities = None
    if meta.get("entities"):
        from nlu_bert.bert.entities import EntitySpec

        spec = EntitySpec.from_meta(meta["entities"])
        entities = entity_head(spec, int(encoder_config.hidden_size))
    model = IntentModel(
        encoder,
        num_labels=len(labels),
        ngram_buckets=meta["ngram_buckets"],
        ngram_dim=meta["ngram_dim"],
        entities=entities,
    )
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise archive.damaged(archive.BERT, folder, f"the weights do not fit the model: {e}") from None
    return model.eval()


def entity_head(spec: Any, hidden_size: int) -> EntityHead:
    """The entity head an :class:`~nlu_bert.bert.entities.EntitySpec` describes (random weights)."""
    from nlu_bert.bert.decoding import allowed

    return EntityHead(
        hidden_size,
        len(spec.tags),
        allowed(spec.tags),
        tagger=spec.tagger,
        ngram_buckets=spec.ngram_buckets,
        ngram_dim=spec.ngram_dim,
    )
