"""A linear-chain CRF over tag scores, with the BIO / BILOU constraints built in (torch; train time and the torch
backend). Decoding is :func:`nlu_bert.bert.decoding.viterbi` in numpy with :meth:`CRF.scores`, so every backend
decodes the same way."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

from nlu_bert.bert.decoding import Constraints


class CRF(nn.Module):
    """Learned transition / start / end scores; the constraints (0 or blocked) are a fixed buffer added to them."""

    def __init__(self, constraints: Constraints) -> None:
        super().__init__()
        k = int(constraints.transitions.shape[0])
        self.transitions = nn.Parameter(torch.zeros(k, k))
        self.start = nn.Parameter(torch.zeros(k))
        self.end = nn.Parameter(torch.zeros(k))
        self.register_buffer(
            "fixed_transitions", torch.from_numpy(np.asarray(constraints.transitions, np.float32)), persistent=False
        )
        self.register_buffer(
            "fixed_start", torch.from_numpy(np.asarray(constraints.start, np.float32)), persistent=False
        )
        self.register_buffer("fixed_end", torch.from_numpy(np.asarray(constraints.end, np.float32)), persistent=False)

    def _all(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.start + self.fixed_start, self.transitions + self.fixed_transitions, self.end + self.fixed_end

    def scores(self) -> Constraints:
        """The learned scores plus the constraints, as numpy (for :func:`~nlu_bert.bert.decoding.viterbi`)."""
        start, trans, end = (t.detach().float().cpu().numpy() for t in self._all())
        return Constraints(start, trans, end)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of ``tags`` ``[B, T]`` given ``emissions`` ``[B, T, K]``; ``mask`` ``[B, T]``
        marks the scored tokens, which must be a prefix of each row (rows with none are skipped)."""
        emissions = emissions.float()
        mask = mask.bool()
        keep = mask[:, 0]
        if not bool(keep.any()):
            return emissions.sum() * 0.0
        emissions, tags, mask = emissions[keep], tags[keep], mask[keep]
        start, trans, end = self._all()
        batch, steps, _ = emissions.shape
        rows = torch.arange(batch, device=emissions.device)
        # score of the gold path
        gold = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, steps):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            gold = gold + step * mask[:, t]
        last = mask.long().sum(1) - 1
        gold = gold + end[tags[rows, last]]
        # partition function
        alpha = start[None, :] + emissions[:, 0]
        for t in range(1, steps):
            step = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], step, alpha)
        log_z = torch.logsumexp(alpha + end[None], dim=1)
        return (log_z - gold).mean()
