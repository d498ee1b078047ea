"""The intent model: a BERT encoder, masked mean pooling, optional character n-gram features, a linear head.

Imported only when a component trains or loads (it imports torch).

The n-gram branch is a fastText-style bag of hashed character 1..3-grams. It gives a model
trained from ``scratch`` (no pre-training) the sparse lexical signal that Rasa's DIET gets from
``CountVectorsFeaturizer``; with a pre-trained backbone it costs little and is optional.
The n-gram ids come from :mod:`nlu_bert.bert.ngrams` (torch-free, shared with the onnxruntime path).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class IntentModel(nn.Module):
    """``logits = head(dropout([mean_pool(encoder(tokens)) ; mean(ngram_embeddings)]))``."""

    def __init__(
        self, encoder: nn.Module, num_labels: int, ngram_buckets: int = 0, ngram_dim: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.ngram_buckets = int(ngram_buckets)
        self.ngrams: Optional[nn.Embedding] = (
            nn.Embedding(self.ngram_buckets, ngram_dim, padding_idx=0) if self.ngram_buckets else None
        )
        if self.ngrams is not None:
            nn.init.normal_(self.ngrams.weight, std=0.02)
            with torch.no_grad():
                self.ngrams.weight[0].zero_()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden + (ngram_dim if self.ngrams is not None else 0), num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        ngram_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        features = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.ngrams is not None:
            if ngram_ids is None:
                raise ValueError("this model was trained with n-gram features; pass ngram_ids")
            emb = self.ngrams(ngram_ids)
            present = (ngram_ids > 0).unsqueeze(-1).to(emb.dtype)
            bag = (emb * present).sum(1) / present.sum(1).clamp(min=1.0)
            features = torch.cat([features, bag.to(features.dtype)], dim=-1)
        return self.classifier(self.dropout(features))


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
