"""The token-tagging head of the joint model (torch): per-token tag scores from the encoder's hidden states, plus
hashed character n-grams around each token (:mod:`nlu_bert.bert.token_features`), and its loss (a CRF's negative
log-likelihood, or token cross-entropy for a softmax tagger).

``scores = tagger(dropout([hidden_t ; sum_j table[token_ngram_ids[t, j]]]))``. The same arithmetic in numpy is
:func:`nlu_bert.bert.entities.numpy_tag_scores`, which the native backend runs on the kernel's hidden states.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from nlu_bert.bert.crf import CRF
from nlu_bert.bert.decoding import Constraints

TAGGERS = ("crf", "softmax")


def ngram_embedding(buckets: int, dim: int) -> Optional[nn.Embedding]:
    """The hashed n-gram table (bucket 0 = padding, kept at zero) of the intent and entity heads; None for 0 buckets."""
    if not buckets:
        return None
    table = nn.Embedding(buckets, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=0.02)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


class EntityHead(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_tags: int,
        constraints: Constraints,
        tagger: str = "crf",
        ngram_buckets: int = 0,
        ngram_dim: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if tagger not in TAGGERS:
            raise ValueError(f"tagger must be one of {TAGGERS}, got {tagger!r}")
        self.ngram_buckets = int(ngram_buckets)
        self.ngrams = ngram_embedding(self.ngram_buckets, ngram_dim)
        self.dropout = nn.Dropout(dropout)
        self.tagger = nn.Linear(hidden_size + (ngram_dim if self.ngrams is not None else 0), num_tags)
        self.crf: Optional[CRF] = CRF(constraints) if tagger == "crf" else None

    def forward(self, hidden: torch.Tensor, token_ngram_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tag scores ``[B, T, K]`` (a CRF's emissions, or a softmax tagger's logits)."""
        features = hidden
        if self.ngrams is not None:
            if token_ngram_ids is None:
                raise ValueError("this entity head was trained with n-gram features; pass token_ngram_ids")
            features = torch.cat([hidden, self.ngrams(token_ngram_ids).sum(2).to(hidden.dtype)], dim=-1)
        return self.tagger(self.dropout(features))

    def loss(
        self, scores: torch.Tensor, positions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Loss over the real tokens: ``positions`` ``[B, N]`` index ``scores``' tokens (left-aligned, ``mask``
        marks the used ones), ``tags`` ``[B, N]`` their gold tag ids."""
        picked = gather_tokens(scores, positions).float()
        if self.crf is not None:
            return self.crf.nll(picked, tags, mask)
        if not bool(mask.any()):
            return picked.sum() * 0.0
        return nn.functional.cross_entropy(picked[mask], tags[mask])

    def decoding_scores(self, constraints: Constraints) -> Constraints:
        """What the decoder adds to the tag scores: the CRF's learned scores with the constraints, or the constraints."""
        return self.crf.scores() if self.crf is not None else constraints


def gather_tokens(scores: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``scores[b, positions[b, n]]`` ``[B, N, K]``."""
    return scores.gather(1, positions[..., None].expand(-1, -1, scores.shape[-1]))
